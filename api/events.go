package api

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/problem"
)

func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) {
	id, err := crowdpass.ParseID(chi.URLParam(r, "id"))
	if err != nil {
		problem.WriteError(w, crowdpass.Errorf(crowdpass.ENotFound, "no such event"))
		return
	}
	if !s.catalog.isLoaded() {
		problem.WriteError(w, crowdpass.Errorf(crowdpass.EUnavailable, "the event catalog is not loaded yet"))
		return
	}
	event, err := s.findEvent(r.Context(), id)
	if err != nil {
		problem.WriteError(w, err)
		return
	}
	problem.WriteJSON(w, http.StatusOK, event)
}

// eventBody is the wire shape of POST /events; times are strings so that a
// bad one is a field error (422) rather than a malformed body.
type eventBody struct {
	Name           string  `json:"name"`
	OpensAt        *string `json:"opens_at"`
	ClosesAt       *string `json:"closes_at"`
	MaxPerCustomer *int    `json:"max_per_customer"`
	Categories     []struct {
		Name       string `json:"name"`
		Capacity   int    `json:"capacity"`
		PriceCents int64  `json:"price_cents"`
	} `json:"categories"`
}

func (b eventBody) spec() (crowdpass.EventSpec, error) {
	spec := crowdpass.EventSpec{Name: b.Name, MaxPerCustomer: b.MaxPerCustomer}
	var fields []crowdpass.FieldError
	parse := func(name string, v *string) *crowdpass.Time {
		if v == nil {
			return nil
		}
		t, err := crowdpass.ParseTime(*v)
		if err != nil {
			fields = append(fields, crowdpass.FieldError{Field: name, Message: "must be an RFC 3339 time"})
			return nil
		}
		return &t
	}
	spec.OpensAt, spec.ClosesAt = parse("opens_at", b.OpensAt), parse("closes_at", b.ClosesAt)
	for _, c := range b.Categories {
		spec.Categories = append(spec.Categories, crowdpass.CategorySpec{Name: c.Name, Capacity: c.Capacity, PriceCents: c.PriceCents})
	}
	if err := spec.Validate(); err != nil {
		if e, ok := err.(*crowdpass.Error); ok {
			e.Message, e.Fields = errEventFields, append(fields, e.Fields...)
		}
		return spec, err
	}
	if len(fields) > 0 {
		return spec, &crowdpass.Error{Code: crowdpass.EValidation, Message: errEventFields, Fields: fields}
	}
	return spec, nil
}

// errEventFields is the detail of every validation_failed of POST /events.
const errEventFields = "the event has invalid fields"

func (s *Server) postEvent(w http.ResponseWriter, r *http.Request) {
	if !principal(r).Admin {
		problem.WriteError(w, crowdpass.Errorf(crowdpass.EForbidden, "creating events takes an operator's token"))
		return
	}
	raw, err := readJSONBody(w, r)
	if err != nil {
		problem.WriteError(w, err)
		return
	}
	var body eventBody
	if err := decodeStrict(raw, &body); err != nil {
		problem.WriteError(w, err)
		return
	}
	spec, err := body.spec()
	if err != nil {
		problem.WriteError(w, err)
		return
	}
	// A stalled database must not hold the request, its connection and
	// its goroutine for as long as the client waits.
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.WriteTimeout)
	event, err := s.store.CreateEvent(ctx, spec)
	cancel()
	if err != nil {
		s.log.Warn("event not created", "err", err)
		if crowdpass.Code(err) == crowdpass.EInternal {
			err = crowdpass.Errorf(crowdpass.EUnavailable, "the event could not be created right now")
		}
		problem.WriteError(w, err)
		return
	}
	s.catalog.add(event)
	w.Header().Set("Location", "/events/"+event.ID.String())
	problem.WriteJSON(w, http.StatusCreated, event)
}
