package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/api"
	"github.com/crowdpass/crowdpass/auth"
	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/gate"
	"github.com/crowdpass/crowdpass/notifier"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/problem"
	"github.com/crowdpass/crowdpass/relay"
	"github.com/crowdpass/crowdpass/web"
	"github.com/crowdpass/crowdpass/worker"
)

// runRoles runs one role, or every role for "serve", until ctx is done.
// Each role stays its own component with its own Run; serve shares one
// process, one HTTP server (with /ws on the API's router) and one registry.
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
	roles := map[string]bool{role: true}
	if role == "serve" {
		roles = map[string]bool{"api": true, "worker": true, "relay": true, "notifier": true}
	}
	log := cfg.logger(stderr)
	// The Redis client's own lines (a dial failing, again and again) go into
	// the structured log, at debug: the gate says what they mean.
	redis.SetLogger(redisLog{log.With("component", "redis-client")})
	topo := broker.Topology{Namespace: cfg.Namespace}
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Pools connect lazily: every role rides out a database that is down at
	// start as it rides out one that goes down later.
	pool, err := postgres.NewPool(cfg.DatabaseURL, 16)
	if err != nil {
		return usagef("DATABASE_URL: %v", err)
	}
	defer pool.Close()
	store := postgres.NewStore(pool, nil)
	// The broker is dialled again and again until it answers: a URL that
	// can never work is said at once instead.
	if _, err := amqp.ParseURI(cfg.AMQPURL); err != nil {
		return usagef("AMQP_URL: %v", err)
	}

	var (
		authority *auth.Authority
		rdb       *redis.Client
		readStore *postgres.Store
	)
	if roles["api"] || roles["notifier"] {
		// GET /orders/{id} and subscribe read on connections of their own,
		// so that a busy worker never makes a buyer wait for one.
		readPool, err := postgres.NewPool(cfg.DatabaseURL, 8)
		if err != nil {
			return usagef("DATABASE_URL: %v", err)
		}
		defer readPool.Close()
		readStore = postgres.NewStore(readPool, nil)
		if authority, err = auth.New([]byte(jwtSecret(cfg.JWTSecret, stderr)), nil); err != nil {
			return err
		}
		redisOpts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return usagef("REDIS_URL: %v", err)
		}
		// Fail fast: a slow Redis sends orders down the slow path instead
		// of holding them up.
		redisOpts.DialTimeout, redisOpts.ReadTimeout, redisOpts.WriteTimeout = time.Second, 500*time.Millisecond, 500*time.Millisecond
		redisOpts.MaxRetries = 0
		redisOpts.PoolSize = 256
		rdb = redis.NewClient(redisOpts)
		defer rdb.Close()
	}
	var redisGate *gate.Redis
	if rdb != nil {
		// A key stays in flight for the longest publish and then some, so
		// that a retry never overtakes a publish that may yet be confirmed.
		redisGate = gate.New(rdb, gate.Config{
			Namespace: cfg.Namespace, AnswerTTL: cfg.IdempotencyTTL,
			InFlightTTL: max(10*time.Second, 2*cfg.PublishTimeout+2*time.Second),
		})
		defer redisGate.Close()
	}

	g, ctx := errgroup.WithContext(ctx)
	// Publishers outlive the HTTP server, so in-flight orders get their
	// confirms during a graceful shutdown; they stop once the server has.
	pubCtx, stopPublishers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPublishers()
	newPublisher := func(name string) *broker.Publisher {
		p := broker.NewPublisher(broker.PublisherConfig{URL: cfg.AMQPURL, Name: name, Declare: topo.Declare, Logger: log})
		g.Go(func() error { return p.Run(pubCtx) })
		return p
	}

	var checks []api.Check
	if roles["worker"] {
		w := worker.New(worker.Config{
			AMQPURL: cfg.AMQPURL, Topology: topo, Logger: log, Registry: registry,
			Rate: cfg.WorkerRate, Prefetch: cfg.WorkerPrefetch, Batch: cfg.WorkerBatch,
		}, store)
		checks = append(checks, api.Check{Name: "worker", Critical: true, OK: func(context.Context) bool { return w.Ready() }})
		g.Go(func() error { return w.Run(ctx) })
	}
	// The orders this process accepts lately, for reads of pending orders
	// that Redis does not hold (it was down, or lost them), and those any
	// process decided lately (from a notifier's outcomes), for keys whose
	// record Redis lost. Its notifier recalls as many outcomes from the
	// outbox when it starts, so that a restart does not forget them.
	const remembered = 1 << 16
	recent := api.NewRecent(remembered)
	var (
		ws    http.Handler
		local func([]crowdpass.OutboxMessage) // the notifier, for a relay in the same process
	)
	if roles["notifier"] {
		pending := recent.Pending(nil)
		if redisGate != nil {
			pending = recent.Pending(redisGate)
		}
		// The outcomes it sees also answer subscribes while PostgreSQL
		// cannot (a lone notifier included), rather than the gate's 202.
		n := notifier.New(notifier.Config{
			AMQPURL: cfg.AMQPURL, Topology: topo, AllowedOrigins: cfg.AllowedOrigins, Logger: log, Registry: registry,
			Decided: recent.Decided, Outbox: readStore, Recall: remembered,
		}, readStore, pending, authority)
		checks = append(checks, api.Check{Name: "notifier", Critical: true, OK: func(context.Context) bool { return n.Ready() }})
		g.Go(func() error { return n.Run(ctx) })
		ws, local = n, n.Deliver
	} else if roles["api"] {
		// A lone API still learns every decided order, for keys whose record
		// Redis loses: a notifier that serves no socket, only its outcomes.
		n := notifier.New(notifier.Config{
			AMQPURL: cfg.AMQPURL, Topology: topo, Name: "crowdpass-api-outcomes", Logger: log, Registry: registry,
			Decided: recent.Decided, Outbox: readStore, Recall: remembered,
		}, readStore, nil, authority)
		g.Go(func() error { return n.Run(ctx) })
	}
	if roles["relay"] {
		r := relay.New(relay.Config{
			Exchange: topo.Outcomes(), Retention: cfg.OutboxRetention, Logger: log, Registry: registry,
			Local: local,
		}, store, newPublisher("crowdpass-relay"))
		checks = append(checks, api.Check{Name: "relay", Critical: true, OK: func(context.Context) bool { return r.Ready() }})
		g.Go(func() error { return r.Run(ctx) })
	}

	var handler http.Handler
	if roles["api"] {
		publisher := newPublisher("crowdpass-api")
		server := api.New(api.Config{
			PublishTimeout: cfg.PublishTimeout, Logger: log, Registry: registry, Checks: checks, Recent: recent,
		}, redisGate, broker.OrderQueue{Publisher: publisher, Topology: topo}, readStore, authority)
		g.Go(func() error { return server.Run(ctx) })
		if ws != nil {
			server.Router().Get("/ws", ws.ServeHTTP)
		}
		if cfg.Demo {
			log.Warn("demo mode: POST /demo/token hands anyone a token; never run it in production")
		}
		web.Mount(server.Router(), web.Config{
			Demo: cfg.Demo, Issuer: authority, Events: server, Logger: log,
			Stats: saleStats(registry, server.Events, func(ctx context.Context) (int, error) {
				return publisher.QueueDepth(ctx, topo.Orders())
			}),
		})
		handler = server.Handler()
		cfg.HTTPAddrSet = true
	} else {
		// A worker or a relay cannot work without PostgreSQL, idle or not:
		// its own check only notices once a batch or a poll fails. A
		// notifier still pushes what the broker delivers, but can neither
		// answer a subscribe nor catch up: degraded.
		checks = append(checks, api.Check{Name: "postgres", Critical: roles["worker"] || roles["relay"], OK: func(ctx context.Context) bool { return store.Ping(ctx) == nil }})
		if roles["notifier"] {
			cfg.HTTPAddrSet = true
		}
		handler = opsHandler(checks, registry, ws)
	}

	if cfg.HTTPAddrSet {
		g.Go(func() error {
			defer stopPublishers()
			return serveHTTP(ctx, cfg.HTTPAddr, handler, verifies(authority), log)
		})
	} else {
		log.Info("no HTTP server; set HTTP_ADDR for /healthz, /readyz and /metrics", "role", role)
		// With no HTTP server to outlive, the publishers stop with the rest.
		g.Go(func() error {
			<-ctx.Done()
			stopPublishers()
			return nil
		})
	}
	if cfg.PprofAddr != "" {
		g.Go(func() error { return serveHTTP(ctx, cfg.PprofAddr, pprofHandler(), nil, log) })
	}
	log.Info("crowdpass started", "role", role, "namespace", cfg.Namespace, "http_addr", cfg.HTTPAddr)
	err = g.Wait()
	log.Info("crowdpass stopped", "role", role)
	return err
}

// pprofHandler serves net/http/pprof: profiles are for operators on the
// host, never on the public listener.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// opsHandler serves /healthz, /readyz and /metrics for roles without the
// API, and /ws for a notifier on its own.
func opsHandler(checks []api.Check, registry *prometheus.Registry, ws http.Handler) http.Handler {
	r := chi.NewRouter()
	api.Fallbacks(r)
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		problem.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status, code, states := api.Readiness(ctx, checks)
		problem.WriteJSON(w, code, map[string]any{"status": status, "checks": states})
	})
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	if ws != nil {
		r.Get("/ws", ws.ServeHTTP)
	}
	return r
}

// serveHTTP serves until ctx is done, then shuts down gracefully: it stops
// accepting and lets in-flight requests finish for up to 15 seconds.
func serveHTTP(ctx context.Context, addr string, h http.Handler, authorized func(token string) bool, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext:       notifier.ConnContext,
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serving http on %s: %w", addr, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(problem.Listener(ln, authorized)) }()
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

// verifies tells whether authority takes a token; nil, where the process
// has none (it serves no route that needs one).
func verifies(authority *auth.Authority) func(token string) bool {
	if authority == nil {
		return nil
	}
	return func(token string) bool {
		_, err := authority.Verify(token)
		return err == nil
	}
}

// redisLog passes go-redis's log lines to a structured logger.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
}
