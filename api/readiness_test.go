package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/crowdpass/crowdpass/api"
)

func TestACheckThatHangsDoesNotFailTheOthers(t *testing.T) {
	t.Parallel()
	// Long enough for every check to start on a loaded machine: the
	// hanging one takes all of it.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	hangs := func(ctx context.Context) bool { <-ctx.Done(); return false }
	answers := func(ctx context.Context) bool { return ctx.Err() == nil }
	status, code, states := api.Readiness(ctx, []api.Check{
		{Name: "redis", OK: hangs},
		{Name: "postgres", OK: answers},
		{Name: "broker", Critical: true, OK: answers},
	})
	if status != "degraded" || code != http.StatusOK {
		t.Errorf("status %q %d, want degraded 200", status, code)
	}
	if states["redis"] != "down" || states["postgres"] != "ok" || states["broker"] != "ok" {
		t.Errorf("states %v, want only redis down", states)
	}
}
