package api

import "github.com/google/uuid"

// CatalogHas reports whether the catalog holds the event, without the
// lookup a request's miss would make.
func (s *Server) CatalogHas(id uuid.UUID) bool {
	_, ok := s.catalog.event(id)
	return ok
}
