// Package web serves the browser side of CrowdPass: the buy page at /, the
// live sale dashboard at /dashboard with its server-sent event stream, and,
// in demo mode only, tokens for fresh demo customers.
package web

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/problem"
)

//go:embed static
var static embed.FS

// Issuer signs tokens for demo customers.
type Issuer interface {
	Issue(customer string, admin bool, ttl time.Duration) (string, error)
}

// Events lists the events on sale, as the API's catalog holds them.
type Events interface {
	Events() []crowdpass.Event
}

// Stats is a snapshot of the sale for the dashboard.
type Stats struct {
	At          time.Time             `json:"at"`
	Categories  []crowdpass.Category  `json:"categories"`
	Events      []crowdpass.Event     `json:"events"`
	Accepted    float64               `json:"accepted_total"`
	Decided     float64               `json:"decided_total"`
	QueueDepth  int                   `json:"queue_depth"`
	Backlog     float64               `json:"outbox_backlog"`
	NotifyP50Ms float64               `json:"notification_p50_ms"`
	NotifyP99Ms float64               `json:"notification_p99_ms"`
	SoldOutAt   map[string]*time.Time `json:"sold_out_at"`
	Unavailable []string              `json:"unavailable,omitempty"`
}

// StatsSource takes a snapshot of the sale.
type StatsSource func(ctx context.Context) Stats

// Config configures the web side.
type Config struct {
	// Demo turns on POST /demo/token, which hands anyone a token for a
	// fresh customer. Never in production.
	Demo   bool
	Issuer Issuer
	Events Events
	Stats  StatsSource
	// StreamInterval is how often the dashboard is pushed a snapshot (default 500ms).
	StreamInterval time.Duration
	Logger         *slog.Logger
}

// Mount adds the pages and their endpoints to r.
func Mount(r chi.Router, cfg Config) {
	cfg.StreamInterval = cmp.Or(cfg.StreamInterval, 500*time.Millisecond)
	files, _ := fs.Sub(static, "static")
	fileServer := http.FileServer(http.FS(files))
	page := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, files, name)
		}
	}
	r.Get("/", page("index.html"))
	r.Get("/dashboard", page("dashboard.html"))
	r.Handle("/static/*", http.StripPrefix("/static/", fileServer))
	r.Get("/events", func(w http.ResponseWriter, r *http.Request) {
		problem.WriteJSON(w, http.StatusOK, map[string]any{"events": cfg.Events.Events()})
	})
	r.Post("/demo/token", func(w http.ResponseWriter, r *http.Request) {
		if !cfg.Demo {
			problem.WriteError(w, crowdpass.Errorf(crowdpass.ENotFound, "demo mode is off"))
			return
		}
		customer := "demo-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
		token, err := cfg.Issuer.Issue(customer, false, 24*time.Hour)
		if err != nil {
			problem.WriteError(w, err)
			return
		}
		problem.WriteJSON(w, http.StatusOK, map[string]string{"customer": customer, "token": token})
	})
	r.Get("/dashboard/stream", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		tick := time.NewTicker(cfg.StreamInterval)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			snap := cfg.Stats(ctx)
			cancel()
			data, _ := json.Marshal(snap)
			_ = rc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	})
}
