// Package api is the HTTP front door: POST /orders answers at once, after
// the order is durably queued, touching only Redis and RabbitMQ on its way.
package api

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/auth"
	"github.com/crowdpass/crowdpass/problem"
)

// Gate is the fast path in Redis: idempotency and the stock pre-check.
type Gate interface {
	Admit(ctx context.Context, a crowdpass.Admission, owner string) (crowdpass.AdmissionResult, error)
	Refuse(ctx context.Context, a crowdpass.Admission, owner string) (crowdpass.AdmissionResult, error)
	Complete(ctx context.Context, a crowdpass.Admission, answer crowdpass.Answer) error
	// Remember stores rec, the 202 this process gave the key, where Redis
	// lost it, and answers the key from the record Redis then holds.
	Remember(ctx context.Context, a crowdpass.Admission, rec crowdpass.KeyRecord) (res crowdpass.AdmissionResult, stored bool, err error)
	Abort(ctx context.Context, a crowdpass.Admission, owner string, admitted crowdpass.AdmissionResult) error
	Lookup(ctx context.Context, order uuid.UUID) (crowdpass.KeyRecord, error)
	Stock(ctx context.Context, category uuid.UUID) (n int, known bool, err error)
	SetStock(ctx context.Context, category uuid.UUID, saw int, known bool, n int) (bool, error)
	Ping(ctx context.Context) error
	// Lost reports whether Redis lost the keys since the last call for
	// process (whose canary key is gone), and sets the canary again.
	Lost(ctx context.Context, process string) (bool, error)
	// KeepAlive renews this process's live mark: while it lasts, its keys
	// in flight are not taken over before their deadline.
	KeepAlive(ctx context.Context, process string) error
	// Restore writes answers back where Redis lost them, as Remember does.
	Restore(ctx context.Context, answers []crowdpass.KeyAnswer) (stored int, err error)
	// Recovering reports until when Redis recovers from losing its keys
	// (zero if it does not; see crowdpass.AdmissionResult.Recovering).
	Recovering(ctx context.Context) (time.Time, error)
	// ShareQueued adds orders this process queued in a category, undecided,
	// to the set a rebuild of its lost stock reads (SharedQueued).
	ShareQueued(ctx context.Context, category uuid.UUID, ids []uuid.UUID, quantities []int32) error
	SharedQueued(ctx context.Context, category uuid.UUID) (ids []uuid.UUID, quantities []int32, err error)
	// GiveBack returns tickets to a category's stock where it exists.
	GiveBack(ctx context.Context, category uuid.UUID, tickets int) (bool, error)
	// SaveCatalog stores a copy of the catalog (where there is none, if
	// !replace); LoadCatalog returns it (crowdpass.ErrNotFound if none).
	SaveCatalog(ctx context.Context, data []byte, replace bool) error
	LoadCatalog(ctx context.Context) ([]byte, error)
}

// OrderQueue queues order requests durably.
type OrderQueue interface {
	Enqueue(ctx context.Context, r crowdpass.OrderRequest) error
	Ready() bool
	Drained(ctx context.Context) (bool, error)
}

// Store is what the API reads and writes in PostgreSQL, never on the hot path.
type Store interface {
	Events(ctx context.Context) ([]crowdpass.Event, error)
	CreateEvent(ctx context.Context, spec crowdpass.EventSpec) (crowdpass.Event, error)
	Event(ctx context.Context, id uuid.UUID) (crowdpass.Event, error)
	// ListenEventsCreated calls created with each event id committed from
	// the moment it calls listening on, until ctx is done or it fails.
	ListenEventsCreated(ctx context.Context, listening func(), created func(uuid.UUID)) error
	Order(ctx context.Context, id uuid.UUID) (crowdpass.Order, error)
	// OrderIDs lists up to limit order ids above after, in id order;
	// OrderCountEstimate guesses how many there are.
	OrderIDs(ctx context.Context, after uuid.UUID, limit int) ([]uuid.UUID, error)
	OrderCountEstimate(ctx context.Context) (int64, error)
	// OutboxLastID is the outbox's highest id; OutboxOrdersAfter lists the
	// orders announced by up to max rows after after, with the rows' ids.
	OutboxLastID(ctx context.Context) (int64, error)
	OutboxOrdersAfter(ctx context.Context, after int64, max int) ([]int64, []uuid.UUID, error)
	// Unsold is remaining less the given orders' tickets not decided yet,
	// in one snapshot: read only to rebuild a gate stock Redis lost.
	Unsold(ctx context.Context, category uuid.UUID, orders []uuid.UUID, quantities []int32) (int, error)
	Ping(ctx context.Context) error
}

// Verifier checks bearer tokens.
type Verifier interface {
	Verify(token string) (auth.Principal, error)
}

// Check is one line of /readyz. A failing critical check makes the process
// unready (503); any other makes it degraded.
type Check struct {
	Name     string
	Critical bool
	OK       func(ctx context.Context) bool
}

// Config configures the API. Zero values take the defaults.
type Config struct {
	// PublishTimeout bounds the wait for the broker's confirm (default 5s).
	PublishTimeout time.Duration
	// ReconcileInterval is how often the catalog is reloaded and the gate
	// stock checked against it (default 1s).
	ReconcileInterval time.Duration
	// CanaryInterval is how often the process checks that Redis still holds
	// its keys, to write its answers back if not (default 100ms).
	CanaryInterval time.Duration
	// ReadTimeout bounds PostgreSQL reads of GET /orders/{id} (default 2s).
	ReadTimeout time.Duration
	// WriteTimeout bounds the PostgreSQL transaction of POST /events
	// (default 10s).
	WriteTimeout time.Duration
	// MissTimeout bounds the PostgreSQL read of an event the catalog does
	// not hold yet (default 250ms).
	MissTimeout time.Duration
	// InProgressWait bounds how long a request waits for another request
	// of its key in this process (a double click's first click, or another
	// payload the gate has not decided yet) before it is answered
	// request_in_progress (default 1s).
	InProgressWait time.Duration
	// GateTimeout bounds each call to the Redis gate (default 1s).
	GateTimeout time.Duration
	// RestockTimeout bounds the PostgreSQL read that rebuilds a gate stock
	// Redis lost (default 300ms); past it the catalog's remaining is used.
	RestockTimeout time.Duration
	// ExistingOrders sizes the filter of the orders in PostgreSQL (default
	// 4,000,000: 7 MB); past it the filter tells less, and more keys Redis
	// forgot are looked up for nothing (see Recent.mayExist).
	ExistingOrders int
	Logger         *slog.Logger
	Now            func() time.Time
	Registry       *prometheus.Registry
	// Checks are added to /readyz, for the other roles of the process.
	Checks []Check
	// Recent remembers the orders accepted here (default: its own); share
	// it with the process's notifier through Recent.Pending.
	Recent *Recent
}

// Server is the API role.
type Server struct {
	cfg      Config
	log      *slog.Logger
	gate     Gate
	queue    OrderQueue
	store    Store
	verifier Verifier
	catalog  catalog
	// catalogSaved is when the catalog was last copied to Redis (Run's own).
	catalogSaved time.Time
	// catalogRead is when the catalog was last read from PostgreSQL (Unix
	// ns; 0: never).
	catalogRead atomic.Int64
	edge        edgeStock
	// missLookups paces the PostgreSQL reads of events the catalog missed
	// (findEvent).
	missLookups *rate.Limiter
	metrics     *metrics
	router      chi.Router

	redisDown atomic.Bool
	keys      keyHolds // keys whose requests this process is handling (see postOrder)
	// inFlight counts this process's orders from before their admission
	// until they are queued or given back.
	inFlight atomic.Int64
	// unconfirmedUntil (unix ns) holds the reconcile off, like inFlight, for
	// a while after an order left for the broker without a confirm: it may
	// still be on its way into the queue, in neither its depth nor remaining.
	unconfirmedUntil atomic.Int64
	// admissions counts the admissions ever started here: the reconcile
	// corrects nothing if one started while it looked.
	admissions atomic.Uint64
	restocking restocks
	givebacks  chan givenBack // giveBackLoop's
	// existingCount is how many orders the filter of orders that exist
	// holds (loadExisting).
	existingCount  atomic.Int64
	existingWalked atomic.Bool // the walk at start is done
	// readyBeforeWalk is set once the process was ready without the walk
	// (knowsExisting).
	readyBeforeWalk atomic.Bool
	// process names this process's canary in Redis (watchCanary).
	process string
}

// New returns the API; Handler serves it and Run keeps its caches fresh.
func New(cfg Config, gate Gate, queue OrderQueue, store Store, verifier Verifier) *Server {
	cfg.PublishTimeout = cmp.Or(cfg.PublishTimeout, 5*time.Second)
	cfg.ReconcileInterval = cmp.Or(cfg.ReconcileInterval, time.Second)
	cfg.CanaryInterval = cmp.Or(cfg.CanaryInterval, 100*time.Millisecond)
	cfg.ReadTimeout = cmp.Or(cfg.ReadTimeout, 2*time.Second)
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, 10*time.Second)
	cfg.MissTimeout = cmp.Or(cfg.MissTimeout, 250*time.Millisecond)
	cfg.InProgressWait = cmp.Or(cfg.InProgressWait, time.Second)
	cfg.GateTimeout = cmp.Or(cfg.GateTimeout, time.Second)
	cfg.RestockTimeout = cmp.Or(cfg.RestockTimeout, 300*time.Millisecond)
	cfg.ExistingOrders = cmp.Or(cfg.ExistingOrders, 4_000_000)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Recent == nil {
		cfg.Recent = NewRecent(0)
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger.With("role", "api"),
		gate: gate, queue: queue, store: store, verifier: verifier,
		metrics:     newMetrics(cfg.Registry),
		missLookups: rate.NewLimiter(missRate, missBurst),
		process:     uuid.NewString(),
		givebacks:   make(chan givenBack, 1024),
	}
	s.cfg.Recent.onLimitExceeded(s.giveBack)
	s.metrics.registerExisting(cfg.Registry, func() float64 {
		if !s.cfg.Recent.existingLoaded.Load() {
			return -1
		}
		return float64(s.existingCount.Load())
	})
	s.metrics.registerCatalogAge(cfg.Registry, func() float64 {
		if s.catalogRead.Load() == 0 {
			return -1
		}
		return s.catalogAge().Seconds()
	})
	s.keys.waiting = s.metrics.waiting
	s.router = s.routes()
	return s
}

// Handler is the API's HTTP handler.
func (s *Server) Handler() http.Handler { return s.router }

// Events returns the events of the catalog, as GET /events/{id} shows them.
func (s *Server) Events() []crowdpass.Event { return s.catalog.all() }

// Fallbacks makes r answer HEAD as GET, and unknown routes and methods
// with problems, as every error is: for the API and the roles' ops servers.
func Fallbacks(r chi.Router) {
	r.Use(middleware.GetHead)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		problem.WriteError(w, crowdpass.Errorf(crowdpass.ENotFound, "no such route"))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		// The Allow header a 405 must carry (RFC 9110, 15.5.6): chi hands
		// its list of allowed methods to its own handler only.
		if rctx := chi.RouteContext(r.Context()); rctx != nil && rctx.Routes != nil {
			for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
				if rctx.Routes.Match(chi.NewRouteContext(), m, r.URL.Path) {
					w.Header().Add("Allow", m)
					if m == http.MethodGet {
						w.Header().Add("Allow", http.MethodHead)
					}
				}
			}
		}
		problem.WriteError(w, crowdpass.Errorf(crowdpass.EMethodNotAllowed, "method %s is not allowed here", r.Method))
	})
}

// Router lets other roles of the process mount their routes (the notifier's /ws).
func (s *Server) Router() chi.Router { return s.router }

func (s *Server) routes() chi.Router {
	r := chi.NewRouter()
	r.Use(s.recoverer, s.instrument)
	Fallbacks(r)
	r.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		problem.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", s.readyz)
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	r.Get("/events/{id}", s.getEvent)
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate)
		r.Post("/orders", s.postOrder)
		r.Get("/orders/{id}", s.getOrder)
		r.Post("/events", s.postEvent)
	})
	return r
}

type principalKey struct{}

func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, err := auth.BearerToken(r, false)
		var p auth.Principal
		if err == nil {
			p, err = s.verifier.Verify(token)
		}
		if err != nil {
			problem.WriteError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

func principal(r *http.Request) auth.Principal {
	p, _ := r.Context().Value(principalKey{}).(auth.Principal)
	return p
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panicked", "route", routeOf(r), "panic", v)
				problem.WriteError(w, crowdpass.Errorf(crowdpass.EInternal, "the server failed to handle the request"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController and the WebSocket upgrade reach the
// underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.metrics.inFlight.Inc()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			s.metrics.inFlight.Dec()
			route := routeOf(r)
			s.metrics.requests.WithLabelValues(route, strconv.Itoa(cmp.Or(sw.status, http.StatusOK))).Inc()
			s.metrics.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(sw, r)
	})
}

// routeOf is the route pattern, so that metrics never get a label per id.
func routeOf(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil {
		if p := rc.RoutePattern(); p != "" {
			return p
		}
	}
	return "unmatched"
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := append([]Check{
		{"broker", true, func(context.Context) bool { return s.queue.Ready() }},
		{"catalog", true, func(context.Context) bool { return s.catalog.isLoaded() }},
		{"orders", true, func(context.Context) bool { return s.knowsExisting() }},
		{"redis", false, func(ctx context.Context) bool { return s.gate.Ping(ctx) == nil }},
		{"postgres", false, func(ctx context.Context) bool { return s.store.Ping(ctx) == nil }},
	}, s.cfg.Checks...)
	status, code, states := Readiness(ctx, checks)
	problem.WriteJSON(w, code, map[string]any{"status": status, "checks": states})
}

// Readiness runs the checks: "ok" and 200 if all pass, "degraded" and 200
// if only non-critical ones fail, "down" and 503 if a critical one fails.
// They run at once, so that one dependency that hangs until ctx's deadline
// does not leave the others no time and read as down too.
func Readiness(ctx context.Context, checks []Check) (status string, code int, states map[string]string) {
	ok := make([]bool, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() { ok[i] = c.OK(ctx) })
	}
	wg.Wait()
	status, code = "ok", http.StatusOK
	states = make(map[string]string, len(checks))
	for i, c := range checks {
		if ok[i] {
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
	return status, code, states
}

// Run keeps the catalog and the gate fresh until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.watchCanary(ctx) })
	wg.Go(func() { s.giveBackLoop(ctx) })
	wg.Go(func() { s.loadExisting(ctx) })
	wg.Go(func() { s.keepAlive(ctx) })
	wg.Go(func() { s.learnNewEvents(ctx) })
	s.refreshCatalog(ctx)
	reconcileTick := time.NewTicker(s.cfg.ReconcileInterval)
	defer reconcileTick.Stop()
	redisTick := time.NewTicker(250 * time.Millisecond)
	defer redisTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconcileTick.C:
			// The gate is reconciled against the catalog just read, so that a
			// reset never lags the database by more than this read.
			s.refreshCatalog(ctx)
			s.reconcile(ctx)
		case <-redisTick.C:
			if s.redisDown.Load() {
				pingCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				if s.gate.Ping(pingCtx) == nil && s.redisDown.CompareAndSwap(true, false) {
					s.edge.forgetAll()
					s.log.Info("redis reachable again; the gate is back on")
				}
				cancel()
			}
		}
	}
}

// The filter of orders that exist (Recent.mayExist) is walked from orders
// a page at a time, then follows the outbox's tail, which every decided
// order enters in its transaction: each read starts existingWindow ids
// below the highest seen, as ids commit out of order.
const (
	existingPage   = 10_000
	existingWindow = 2_000
)

// loadExisting makes the filter of orders that exist, sized for twice the
// orders PostgreSQL estimates (at least ExistingOrders), walks their ids
// into it, and then adds the orders of new outbox rows every
// ReconcileInterval until ctx ends; every read that fails is tried again.
// Outcomes add their orders too (Recent.Decided), sooner. Until the walk
// is done no key is looked up, and past twice its size the filter is set
// aside: it would send too many new keys to PostgreSQL.
func (s *Server) loadExisting(ctx context.Context) {
	var estimate int64
	var mark int64
	s.untilRead(ctx, "orders that exist not counted", func(ctx context.Context) (err error) {
		if estimate, err = s.store.OrderCountEstimate(ctx); err != nil {
			return err
		}
		mark, err = s.store.OutboxLastID(ctx)
		return err
	})
	size := max(s.cfg.ExistingOrders, 2*int(estimate))
	filter := s.cfg.Recent.expectExisting(size)
	start, after := time.Now(), uuid.Nil
	for ctx.Err() == nil {
		var ids []uuid.UUID
		s.untilRead(ctx, "orders that exist not listed", func(ctx context.Context) (err error) {
			ids, err = s.store.OrderIDs(ctx, after, existingPage)
			return err
		})
		for _, id := range ids {
			filter.Add(id)
		}
		s.existingCount.Add(int64(len(ids)))
		if len(ids) < existingPage {
			break
		}
		after = ids[len(ids)-1]
	}
	if ctx.Err() != nil {
		return
	}
	s.cfg.Recent.existingLoaded.Store(true)
	s.existingWalked.Store(true)
	s.log.Info("orders that exist listed", "orders", s.existingCount.Load(), "sized_for", size, "took", time.Since(start))
	tick := time.NewTicker(s.cfg.ReconcileInterval)
	defer tick.Stop()
	for {
		for {
			readCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			ids, orders, err := s.store.OutboxOrdersAfter(readCtx, max(mark-existingWindow, 0), existingPage)
			cancel()
			if err != nil {
				break // the next tick reads again
			}
			for i, id := range orders {
				filter.Add(id)
				if ids[i] > mark {
					s.existingCount.Add(1)
				}
			}
			if len(ids) > 0 {
				mark = max(mark, ids[len(ids)-1])
			}
			if len(ids) < existingPage {
				break
			}
		}
		if s.existingCount.Load() > 2*int64(size) && s.cfg.Recent.existingLoaded.CompareAndSwap(true, false) {
			s.log.Warn("more orders than twice the filter of orders that exist was sized for: keys Redis forgot are no longer looked up; restart the process to size it again",
				"orders", s.existingCount.Load(), "sized_for", size)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// knowsExisting is the readiness check of the orders that exist. Until
// they are listed, a key Redis forgot is decided as new; while PostgreSQL
// can be read, that is soon over, and not worth an answer that stays
// wrong. A process without PostgreSQL (its catalog older than
// existingStale) takes orders all the same, and once it has, the walk
// never makes it unready again: every process started during an outage
// would go down together when the database came back.
func (s *Server) knowsExisting() bool {
	if s.existingWalked.Load() || s.readyBeforeWalk.Load() {
		return true
	}
	if s.catalog.isLoaded() && s.catalogAge() > max(2*s.cfg.ReconcileInterval, existingStale) {
		s.readyBeforeWalk.Store(true)
		return true
	}
	return false
}

// existingStale is how old the catalog is, at least, when the database
// is taken for unreadable by the readiness check of the orders that exist.
const existingStale = 5 * time.Second

// untilRead runs read, bounded by 10 s, until it succeeds or ctx ends,
// waiting longer and longer between tries.
func (s *Server) untilRead(ctx context.Context, what string, read func(context.Context) error) {
	backoff := 100 * time.Millisecond
	for {
		readCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := read(readCtx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return
		}
		s.log.Debug(what+"; trying again", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// givenBack is tickets an order took from the gate that no order holds:
// a worker rejected it limit_exceeded.
type givenBack struct {
	category uuid.UUID
	tickets  int
}

// giveBackLoop returns to the gate the tickets of orders this process
// admitted that a worker rejected limit_exceeded (Recent.Decided): they are
// unsold, and until the queue drains for a drift correction the gate
// would answer sold_out while they are left. Orders rejected sold_out give
// nothing back: the gate admitted too many, and giving back would keep it
// admitting. A stock rebuilt after the order was decided does not hold
// its tickets, so giving them back then admits that many too many, which
// the workers reject; a stock Redis lost gets nothing (GiveBack).
func (s *Server) giveBackLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case g := <-s.givebacks:
			gctx, cancel := context.WithTimeout(ctx, s.cfg.GateTimeout)
			given, err := s.gate.GiveBack(gctx, g.category, g.tickets)
			cancel()
			if err != nil {
				s.log.Debug("tickets of a rejected order not given back to the gate; the drift correction will", "category", g.category, "err", err)
				continue
			}
			if given {
				s.edge.forget(g.category)
				s.metrics.reconcile.WithLabelValues("given_back").Inc()
			}
		}
	}
}

// giveBack queues a give-back without waiting (it runs on the notifier's
// goroutine); past the buffer it is dropped, for the drift correction.
func (s *Server) giveBack(category uuid.UUID, tickets int) {
	select {
	case s.givebacks <- givenBack{category, tickets}:
	default:
	}
}

// keepAlive renews this process's live mark every CanaryInterval, on its
// own: neither a write-back nor Redis taken for down holds it up, since a
// live process taken for dead has its keys in flight taken over.
func (s *Server) keepAlive(ctx context.Context) {
	tick := time.NewTicker(s.cfg.CanaryInterval)
	defer tick.Stop()
	for {
		aliveCtx, cancel := context.WithTimeout(ctx, s.cfg.GateTimeout)
		if err := s.gate.KeepAlive(aliveCtx, s.process); err != nil && ctx.Err() == nil {
			s.log.Debug("live mark not renewed", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// restoreTimeout bounds one write-back of the answers a process remembers.
const restoreTimeout = 30 * time.Second

// watchCanary notices, by a key of this process's that it checks every
// CanaryInterval, that Redis lost its keys (a flush, a restart without its
// data), and writes back the answers this process remembers. Another
// process knows nothing of them: it would queue a retried key's order
// anew, with another accepted_at, or answer it sold_out while its order
// waits in the queue, and admit a key refused here. Until the write-back,
// such a retry is answered right only by this process. A write-back that
// fails is tried again, ten intervals later and then less and less often,
// until one succeeds: the canary is set again already, and would not tell.
func (s *Server) watchCanary(ctx context.Context) {
	tick := time.NewTicker(s.cfg.CanaryInterval)
	defer tick.Stop()
	var retryAt time.Time // zero: no write-back owed
	retryDelay := 10 * s.cfg.CanaryInterval
	// The first tick's check finds no canary, as a loss would: it sets it.
	// What this process answered before it, Redis got at the time. If that
	// check fails (Redis unreachable from the start), the first that works
	// is taken for a loss: the answers given meanwhile were not stored.
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		atStart := first
		first = false
		// Checked while Redis is taken for down too: the recovery a loss
		// begins (epoch.lua) starts with the first call that reaches Redis
		// again, and the write-back must fit in it.
		checkCtx, cancel := context.WithTimeout(ctx, s.cfg.GateTimeout)
		lost, err := s.gate.Lost(checkCtx, s.process)
		cancel()
		if err != nil {
			s.log.Debug("redis canary not checked", "err", err)
			continue
		}
		if atStart {
			continue
		}
		if lost || (!retryAt.IsZero() && !time.Now().Before(retryAt)) {
			retryAt = time.Time{}
			if s.restore(ctx) {
				retryDelay = 10 * s.cfg.CanaryInterval
			} else {
				// Doubling up to a minute: a failure that repeats (Redis out
				// of memory) is not met with the whole memory every second.
				retryAt = time.Now().Add(retryDelay)
				retryDelay = min(2*retryDelay, time.Minute)
			}
		}
	}
}

// restore writes the answers this process remembers back into Redis, and
// reports whether it wrote them all.
func (s *Server) restore(ctx context.Context) bool {
	answers := s.cfg.Recent.answers()
	if len(answers) == 0 {
		return true // a process's first check, or nothing answered yet
	}
	ctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	defer cancel()
	// First the orders queued here and undecided, which a rebuild of a lost
	// stock at another process must not sell again (restock).
	for _, c := range s.catalog.categories() {
		ids, quantities := s.cfg.Recent.queuedIn(c.ID, time.Time{})
		if err := s.gate.ShareQueued(ctx, c.ID, ids, quantities); err != nil {
			s.log.Warn("redis lost its keys; the orders queued here were not shared, a rebuilt stock elsewhere may admit too many", "category", c.ID, "err", err)
		}
	}
	stored, err := s.gate.Restore(ctx, answers)
	s.metrics.restored.Add(float64(stored))
	if err != nil {
		s.log.Warn("redis lost its keys; the answers remembered here were not all written back, trying again", "answers", len(answers), "stored", stored, "err", err)
		return false
	}
	s.log.Info("redis lost its keys; wrote back the answers remembered here", "answers", len(answers), "stored", stored)
	return true
}

// catalogSaveInterval is how often the catalog is copied to Redis.
const catalogSaveInterval = 5 * time.Second

// refreshCatalog reads the catalog from PostgreSQL and copies it to Redis
// every catalogSaveInterval. A process that starts while PostgreSQL cannot
// be read takes the copy in Redis, so that it answers orders at once; its
// remaining counts can only be too high (tickets are never given back),
// which only matters where a lost gate stock is rebuilt from them, and
// too many admissions are rejected by the workers.
func (s *Server) refreshCatalog(ctx context.Context) {
	read := func(timeout time.Duration) ([]crowdpass.Event, error) {
		readCtx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return s.store.Events(readCtx)
	}
	loadSaved := func() bool {
		redisCtx, cancel := context.WithTimeout(ctx, s.cfg.GateTimeout)
		defer cancel()
		return s.loadSavedCatalog(redisCtx)
	}
	save := func(events []crowdpass.Event, replace bool) {
		redisCtx, cancel := context.WithTimeout(ctx, s.cfg.GateTimeout)
		defer cancel()
		s.saveCatalog(redisCtx, events, replace)
	}
	var events []crowdpass.Event
	var err error
	if s.catalog.isLoaded() {
		events, err = read(catalogReadTimeout)
	} else {
		// Nothing to answer with yet: a database that does not answer at
		// once is not waited for while a copy in Redis can answer.
		if events, err = read(catalogFirstReadTimeout); err != nil {
			if loadSaved() {
				s.log.Warn("catalog loaded from its copy in Redis: PostgreSQL cannot be read", "err", err)
				return
			}
			events, err = read(catalogReadTimeout)
		}
	}
	if err != nil {
		switch {
		case s.catalog.isLoaded():
			s.log.Debug("catalog refresh failed; serving the last copy", "err", err)
			// Redis may have lost the copy too (a flush during the
			// outage): this one is put back, where none is, for a process
			// that starts meanwhile.
			if s.catalogSaveDue() {
				save(s.catalog.all(), false)
			}
		case loadSaved():
			s.log.Warn("catalog loaded from its copy in Redis: PostgreSQL cannot be read", "err", err)
		default:
			s.log.Warn("catalog not loaded yet", "err", err)
		}
		return
	}
	s.catalog.replace(events)
	s.catalogRead.Store(s.cfg.Now().UnixNano())
	if s.catalogSaveDue() {
		save(events, true)
	}
}

// A catalog read is bounded by catalogReadTimeout, the first one of a
// process by catalogFirstReadTimeout while Redis holds a copy.
const (
	catalogReadTimeout      = 3 * time.Second
	catalogFirstReadTimeout = 500 * time.Millisecond
)

// catalogSaveDue reports whether catalogSaveInterval has passed since the
// catalog was last copied to Redis.
func (s *Server) catalogSaveDue() bool {
	return s.cfg.Now().Sub(s.catalogSaved) >= catalogSaveInterval
}

// saveCatalog copies events to Redis.
func (s *Server) saveCatalog(ctx context.Context, events []crowdpass.Event, replace bool) {
	now := s.cfg.Now()
	data, err := json.Marshal(events)
	if err == nil {
		err = s.gate.SaveCatalog(ctx, data, replace)
	}
	if err != nil {
		s.log.Debug("catalog not copied to Redis", "err", err)
		return
	}
	s.catalogSaved = now
}

// catalogAge is how long ago the catalog was last read from PostgreSQL
// (a very long time if never).
func (s *Server) catalogAge() time.Duration {
	read := s.catalogRead.Load()
	if read == 0 {
		return time.Duration(math.MaxInt64)
	}
	return s.cfg.Now().Sub(time.Unix(0, read))
}

// loadSavedCatalog loads the catalog's copy in Redis, if there is one.
func (s *Server) loadSavedCatalog(ctx context.Context) bool {
	events, ok := s.savedCatalog(ctx)
	if ok {
		s.catalog.replace(events)
	}
	return ok
}

// savedCatalog reads the catalog's copy in Redis, if there is one.
func (s *Server) savedCatalog(ctx context.Context) ([]crowdpass.Event, bool) {
	data, err := s.gate.LoadCatalog(ctx)
	if err != nil {
		return nil, false
	}
	var events []crowdpass.Event
	if err := json.Unmarshal(data, &events); err != nil {
		s.log.Warn("the catalog's copy in Redis is unreadable", "err", err)
		return nil, false
	}
	return events, true
}

// heldWindow is how long after it was queued an order counts as one a
// worker may have taken and not decided yet, for the drift correction.
// Past it the order is most likely one that never reaches PostgreSQL
// (dead-lettered, or invalid), and counting it would keep its tickets
// from being sold.
const heldWindow = 30 * time.Second

// reconcile rebuilds the gate from PostgreSQL's remaining. A missing stock
// key is rebuilt at once (restock). A known one is corrected only when the
// queue is drained and no order of this process is between its admission
// and the queue; the compare-and-set leaves it alone if an order took stock
// meanwhile. A drained queue still leaves the orders the workers have
// taken and not decided, in neither its depth nor remaining: the stock is
// set to remaining less those of them this process queued in the last
// heldWindow, read in one snapshot as restock does. (Other processes'
// orders in those gaps are not seen: their stock can come back to the
// gate, and the workers reject what it over-admits.)
func (s *Server) reconcile(ctx context.Context) {
	if s.redisDown.Load() || !s.catalog.isLoaded() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReconcileInterval)
	defer cancel()
	// Taken before any stock is read: an admission in flight now, or one
	// started from now on, may be in a stock read below and in neither the
	// queue's depth nor remaining.
	started, idle := s.admissions.Load(), s.inFlight.Load() == 0 && time.Now().UnixNano() > s.unconfirmedUntil.Load()
	// A drift is corrected only against a remaining just read: with
	// PostgreSQL down, the catalog's cannot fall, and resetting the gate to
	// it would undo every admission since (other processes' too), over and
	// over.
	fresh := s.catalogAge() <= 2*s.cfg.ReconcileInterval
	var drained, checked bool
	for _, c := range s.catalog.categories() {
		n, known, err := s.gate.Stock(ctx, c.ID)
		if err != nil {
			return
		}
		if !known {
			// Not during a recovery: the processes are sharing their queued
			// orders, which the rebuild must count; the next pass, or an
			// admission after it, rebuilds.
			if until, err := s.gate.Recovering(ctx); err == nil && until.IsZero() {
				s.restock(ctx, c, time.Time{})
			}
			continue
		}
		if n == c.Remaining || !fresh {
			continue
		}
		if !checked {
			checked = true
			d, err := s.queue.Drained(ctx)
			drained = err == nil && d && idle
		}
		if !drained || s.admissions.Load() != started {
			continue
		}
		target := c.Remaining
		if ids, quantities := s.cfg.Recent.queuedIn(c.ID, s.cfg.Now().Add(-heldWindow)); len(ids) > 0 {
			unsold, err := s.store.Unsold(ctx, c.ID, ids, quantities)
			if err != nil {
				return
			}
			target = max(unsold, 0)
		}
		if n == target || s.admissions.Load() != started {
			continue
		}
		set, err := s.gate.SetStock(ctx, c.ID, n, true, target)
		if err != nil {
			return
		}
		if set {
			s.edge.forget(c.ID)
			s.metrics.reconcile.WithLabelValues("drift").Inc()
			s.log.Debug("gate stock reconciled", "category", c.ID, "was", n, "now", target)
		}
	}
}

// restocks are the gate stock rebuilds under way, by category: the
// requests that find a stock missing meanwhile wait for the one rebuild.
type restocks struct {
	mu    sync.Mutex
	calls map[uuid.UUID]chan struct{} // closed when the rebuild ends
}

// wait returns once no rebuild of category is under way, or ctx is done.
func (r *restocks) wait(ctx context.Context, category uuid.UUID) {
	r.mu.Lock()
	done, busy := r.calls[category]
	r.mu.Unlock()
	if busy {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}

// maxRecoveries bounds how many recoveries in a row a rebuild waits out.
const maxRecoveries = 3

// restock rebuilds a category's gate stock that Redis lost (a flush, a
// restart), once for every request that finds it missing meanwhile. It is
// what is really left to sell: PostgreSQL's remaining less the tickets of
// the orders this process queued that no worker has decided yet, both read
// in one snapshot (remaining does not count the queue, and a gate rebuilt
// from it alone sold the queue a second time: 1.4 orders per ticket after a
// flush with the workers behind). Other processes' queued orders count
// too where they shared them (ShareQueued, when their canary told them of
// the loss): a rebuild during a recovery (recovering, see
// crowdpass.AdmissionResult.Recovering) waits for its end first, as every
// process shares within it. Those not shared (a process that died, or one
// whose sharing came late) may be admitted again, and the workers reject
// them. The read is bounded by RestockTimeout; past it (PostgreSQL slow
// or down) the catalog's remaining, at most a second old, is used. The
// stock is set only where it is still missing: another process's rebuild
// stands. A request that finds the rebuild under way waits for it, past
// ctx during a recovery (the rebuild's waits are bounded): its second
// admission would otherwise start the stock from the catalog's remaining.
func (s *Server) restock(ctx context.Context, c crowdpass.Category, recovering time.Time) {
	r := &s.restocking
	r.mu.Lock()
	done, busy := r.calls[c.ID]
	if !busy {
		done = make(chan struct{})
		if r.calls == nil {
			r.calls = map[uuid.UUID]chan struct{}{}
		}
		r.calls[c.ID] = done
	}
	r.mu.Unlock()
	if busy {
		if recovering.IsZero() {
			select {
			case <-done:
			case <-ctx.Done():
			}
			return
		}
		<-done // bounded: the rebuild's waits and reads all are
		return
	}
	defer func() {
		r.mu.Lock()
		delete(r.calls, c.ID)
		r.mu.Unlock()
		close(done)
	}()
	n, from := c.Remaining, "missing_catalog"
	// Until the recovery is over, and one begun meanwhile (Redis lost its
	// keys again, and the orders shared with them), up to maxRecoveries.
	for i := 0; !recovering.IsZero() && i < maxRecoveries; i++ {
		time.Sleep(time.Until(recovering))
		lookCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.GateTimeout)
		until, err := s.gate.Recovering(lookCtx)
		cancel()
		if err != nil {
			break
		}
		recovering = until
	}
	ids, quantities := s.queuedEverywhere(ctx, c.ID)
	readCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RestockTimeout)
	unsold, err := s.store.Unsold(readCtx, c.ID, ids, quantities)
	cancel()
	if err == nil {
		n, from = unsold, "missing"
	} else {
		s.log.Warn("gate stock rebuilt from the catalog: the database did not say what is unsold", "category", c.ID, "queued_here", len(ids), "err", err)
	}
	setCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.GateTimeout)
	defer cancel()
	set, err := s.gate.SetStock(setCtx, c.ID, 0, false, max(n, 0))
	if err != nil || !set {
		return
	}
	s.edge.forget(c.ID)
	s.metrics.reconcile.WithLabelValues(from).Inc()
	s.log.Info("gate stock rebuilt", "category", c.ID, "stock", max(n, 0), "why", from)
}

// queuedEverywhere lists the orders of a category queued here and
// undecided, and those other processes shared (ShareQueued), each once.
func (s *Server) queuedEverywhere(ctx context.Context, category uuid.UUID) ([]uuid.UUID, []int32) {
	ids, quantities := s.cfg.Recent.queuedIn(category, time.Time{})
	readCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.GateTimeout)
	defer cancel()
	shared, sharedQuantities, err := s.gate.SharedQueued(readCtx, category)
	if err != nil {
		s.log.Warn("gate stock rebuilt without the orders other processes queued", "category", category, "err", err)
		return ids, quantities
	}
	seen := make(map[uuid.UUID]bool, len(ids))
	for _, id := range ids {
		seen[id] = true
	}
	for i, id := range shared {
		if !seen[id] {
			ids, quantities = append(ids, id), append(quantities, sharedQuantities[i])
		}
	}
	return ids, quantities
}

func newOwner() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
