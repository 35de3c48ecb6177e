package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The ops server of a role without the API answers as the API does: HEAD as
// GET, and an unknown route or method with a problem.
func TestARolesOpsServerAnswersProblems(t *testing.T) {
	h := opsHandler(nil, prometheus.NewRegistry(), nil)
	for _, c := range []struct {
		method, path string
		status       int
		contentType  string
	}{
		{http.MethodGet, "/healthz", http.StatusOK, "application/json"},
		{http.MethodHead, "/healthz", http.StatusOK, "application/json"},
		{http.MethodGet, "/nope", http.StatusNotFound, "application/problem+json"},
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed, "application/problem+json"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.status || rec.Header().Get("Content-Type") != c.contentType {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, rec.Code, rec.Header().Get("Content-Type"), c.status, c.contentType)
		}
		if allow := strings.Join(rec.Header().Values("Allow"), ", "); c.status == http.StatusMethodNotAllowed && allow != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q, want the route's GET, HEAD", c.method, c.path, allow)
		}
	}
}
