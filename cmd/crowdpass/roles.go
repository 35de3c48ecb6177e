package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/worker"
)

// check is one readiness check of /readyz; critical ones make the process
// unready (503) when they fail, the others only degraded.
type check struct {
	name     string
	critical bool
	ok       func(ctx context.Context) bool
}

// runRoles runs one role, or every role for "serve", until ctx is done.
func runRoles(ctx context.Context, role string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	fs := newFlagSet(role)
	cfg.roleFlags(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) { cfg.HTTPAddrSet = cfg.HTTPAddrSet || f.Name == "http-addr" })
	if err := cfg.validateRole(); err != nil {
		return err
	}
	log := cfg.logger(stderr)
	topo := broker.Topology{Namespace: cfg.Namespace}
	roles := map[string]bool{role: true}
	if role == "serve" {
		// serve always answers on HTTP_ADDR, as the api in it will.
		roles = map[string]bool{"worker": true}
		cfg.HTTPAddrSet = true
	}
	for r := range roles {
		if r != "worker" {
			return usagef("role %q is not built yet", r)
		}
	}

	pool, err := postgres.Open(ctx, cfg.DatabaseURL, 20)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := postgres.NewStore(pool, nil)

	g, ctx := errgroup.WithContext(ctx)
	var checks []check
	if roles["worker"] {
		w := worker.New(worker.Config{
			AMQPURL:  cfg.AMQPURL,
			Topology: topo,
			Rate:     cfg.WorkerRate,
			Prefetch: cfg.WorkerPrefetch,
			Batch:    cfg.WorkerBatch,
			Logger:   log,
		}, store)
		checks = append(checks, check{"worker", true, func(context.Context) bool { return w.Ready() }})
		g.Go(func() error { return w.Run(ctx) })
	}
	checks = append(checks, check{"postgres", true, func(ctx context.Context) bool { return store.Ping(ctx) == nil }})

	if !roles["api"] && !roles["notifier"] && !cfg.HTTPAddrSet {
		log.Info("crowdpass started without an HTTP server; set HTTP_ADDR for /healthz and /readyz", "role", role)
		err := g.Wait()
		log.Info("crowdpass stopped", "role", role)
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	mux.Handle("GET /readyz", readyz(checks))
	g.Go(func() error { return serveHTTP(ctx, cfg.HTTPAddr, mux, log) })

	log.Info("crowdpass started", "role", role, "namespace", cfg.Namespace, "http_addr", cfg.HTTPAddr)
	err = g.Wait()
	log.Info("crowdpass stopped", "role", role)
	return err
}

func readyz(checks []check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status, code := "ok", http.StatusOK
		states := make(map[string]string, len(checks))
		for _, c := range checks {
			if c.ok(ctx) {
				states[c.name] = "ok"
				continue
			}
			states[c.name] = "down"
			if c.critical {
				status, code = "down", http.StatusServiceUnavailable
			} else if status == "ok" {
				status = "degraded"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{"status": status, "checks": states})
	})
}

// serveHTTP serves until ctx is done, then shuts down gracefully: it stops
// accepting and lets in-flight requests finish for up to 15 seconds.
func serveHTTP(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving http on %s: %w", addr, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down http: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
