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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/crowdpass/crowdpass/api"
	"github.com/crowdpass/crowdpass/auth"
	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/gate"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/worker"
)

// built lists the roles that exist so far; serve runs all of them.
var built = []string{"api", "worker"}

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
	roles := map[string]bool{}
	if role == "serve" {
		for _, r := range built {
			roles[r] = true
		}
	} else {
		roles[role] = true
	}
	for r := range roles {
		if r == "relay" || r == "notifier" {
			return usagef("role %q is not built yet", r)
		}
	}
	log := cfg.logger(stderr)
	topo := broker.Topology{Namespace: cfg.Namespace}
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Pools are created without waiting for PostgreSQL: every role rides out
	// a database that is down at start as it rides out one that goes down later.
	pool, err := postgres.NewPool(cfg.DatabaseURL, 16)
	if err != nil {
		return usagef("DATABASE_URL: %v", err)
	}
	defer pool.Close()
	store := postgres.NewStore(pool, nil)

	g, ctx := errgroup.WithContext(ctx)
	var checks []api.Check
	if roles["worker"] {
		w := worker.New(worker.Config{
			AMQPURL:  cfg.AMQPURL,
			Topology: topo,
			Rate:     cfg.WorkerRate,
			Prefetch: cfg.WorkerPrefetch,
			Batch:    cfg.WorkerBatch,
			Logger:   log,
		}, store)
		checks = append(checks, api.Check{Name: "worker", Critical: true, OK: func(context.Context) bool { return w.Ready() }})
		g.Go(func() error { return w.Run(ctx) })
	}

	var handler http.Handler
	// The publisher outlives the HTTP server, so in-flight orders get their
	// confirms during a graceful shutdown; it stops once the server has.
	pubCtx, stopPublisher := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPublisher()
	if roles["api"] {
		secret := jwtSecret(cfg.JWTSecret, stderr)
		authority, err := auth.New([]byte(secret), nil)
		if err != nil {
			return err
		}
		redisOpts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return usagef("REDIS_URL: %v", err)
		}
		// Fail fast: a slow Redis sends orders down the slow path instead of
		// holding them up.
		redisOpts.DialTimeout, redisOpts.ReadTimeout, redisOpts.WriteTimeout = time.Second, 500*time.Millisecond, 500*time.Millisecond
		redisOpts.MaxRetries = 0
		redisOpts.PoolSize = 256
		rdb := redis.NewClient(redisOpts)
		defer rdb.Close()
		publisher := broker.NewPublisher(broker.PublisherConfig{
			URL: cfg.AMQPURL, Name: "crowdpass-api", Declare: topo.Declare, Logger: log,
		})
		g.Go(func() error { return publisher.Run(pubCtx) })
		readPool, err := postgres.NewPool(cfg.DatabaseURL, 8)
		if err != nil {
			return usagef("DATABASE_URL: %v", err)
		}
		defer readPool.Close()
		server := api.New(api.Config{
			PublishTimeout: cfg.PublishTimeout,
			Logger:         log,
			Registry:       registry,
			Checks:         checks,
		}, gate.New(rdb, gate.Config{Namespace: cfg.Namespace, AnswerTTL: cfg.IdempotencyTTL}),
			broker.OrderQueue{Publisher: publisher, Topology: topo},
			postgres.NewStore(readPool, nil), authority)
		g.Go(func() error { return server.Run(ctx) })
		handler = server.Handler()
		cfg.HTTPAddrSet = true
	} else {
		checks = append(checks, api.Check{Name: "postgres", OK: func(ctx context.Context) bool { return store.Ping(ctx) == nil }})
		handler = opsHandler(checks)
	}

	if cfg.HTTPAddrSet {
		g.Go(func() error {
			defer stopPublisher()
			return serveHTTP(ctx, cfg.HTTPAddr, handler, log)
		})
	} else {
		log.Info("no HTTP server; set HTTP_ADDR for /healthz and /readyz", "role", role)
	}
	log.Info("crowdpass started", "role", role, "namespace", cfg.Namespace, "http_addr", cfg.HTTPAddr)
	err = g.Wait()
	log.Info("crowdpass stopped", "role", role)
	return err
}

// opsHandler serves /healthz and /readyz for roles without the API.
func opsHandler(checks []api.Check) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status, code := "ok", http.StatusOK
		states := make(map[string]string, len(checks))
		for _, c := range checks {
			if c.OK(ctx) {
				states[c.Name] = "ok"
				continue
			}
			states[c.Name] = "down"
			if c.Critical {
				status, code = "down", http.StatusServiceUnavailable
			} else if status == "ok" {
				status = "degraded"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{"status": status, "checks": states})
	})
	return mux
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
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
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
