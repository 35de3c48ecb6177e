package api_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/api"
	"github.com/crowdpass/crowdpass/auth"
	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/gate"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/testkit"
	"github.com/crowdpass/crowdpass/worker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "api-test-secret"

type options struct {
	workers    int
	proxyAMQP  bool
	proxyRedis bool
	// reconcile is the catalog's refresh interval (default 50ms).
	reconcile time.Duration
	// now is the API's clock (default time.Now).
	now func() time.Time
	// readTimeout is the API's ReadTimeout (default 2s).
	readTimeout time.Duration
	// canary is the API's CanaryInterval (default 100ms). A day keeps it
	// from writing its answers back after Redis lost them, for what another
	// process does before it has.
	canary time.Duration
	// publishTimeout is the API's PUBLISH_TIMEOUT (default 2s).
	publishTimeout time.Duration
	// inProgressWait is how long a double click waits for its first (default 1s).
	inProgressWait time.Duration
	// gateTimeout bounds each Redis gate call (default 1s).
	gateTimeout time.Duration
	// missTimeout bounds a catalog miss's read (default 10s).
	missTimeout time.Duration
	// inFlightTTL is the gate's InFlightTTL (default 3s).
	inFlightTTL time.Duration
	// deaf keeps the API from hearing of events created elsewhere: its
	// catalog learns them by a refresh or a miss's lookup only.
	deaf bool
}

type harness struct {
	t          testing.TB
	db         *testkit.DB
	store      *postgres.Store
	topo       broker.Topology
	gate       *gate.Redis
	deadGate   *gate.Redis
	publisher  *broker.Publisher
	server     *api.Server
	url        string
	client     *http.Client
	authority  *auth.Authority
	recent     *api.Recent
	amqpProxy  *testkit.Proxy
	redisProxy *testkit.Proxy
	workers    int // started so far (startWorker)
	// writesBack is set where the API writes its answers back after Redis
	// lost them (options.canary).
	writesBack bool
}

func setup(t testing.TB, opts options) *harness {
	t.Helper()
	h := &harness{t: t, db: testkit.NewDB(t), writesBack: opts.canary < time.Hour}
	h.store = postgres.NewStore(h.db.Pool, nil)
	ns := testkit.Namespace(t)
	h.topo = broker.Topology{Namespace: ns}
	h.authority, _ = auth.New([]byte(secret), nil)
	log := testkit.Logger(t)

	amqpURL := testkit.AMQPURL()
	if opts.proxyAMQP {
		h.amqpProxy, amqpURL = testkit.NewURLProxy(t, amqpURL)
	}
	redisURL := testkit.RedisURL()
	if opts.proxyRedis {
		h.redisProxy, redisURL = testkit.NewURLProxy(t, redisURL)
	}
	redisOpts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	redisOpts.MaxRetries = 0
	redisOpts.ReadTimeout, redisOpts.WriteTimeout = 500*time.Millisecond, 500*time.Millisecond
	rdb := redis.NewClient(redisOpts)
	t.Cleanup(func() { rdb.Close() })
	// The gate's epoch (gate/epoch.lua) recovered long ago, as in a
	// deployment that has run a while: a namespace without one recovers
	// for its first second, as after a loss (loseRedisKeys).
	if err := rdb.Set(testkit.Context(t), ns+"gate:epoch", "0", 0).Err(); err != nil {
		t.Fatal(err)
	}
	h.gate = gate.New(rdb, gate.Config{Namespace: ns, InFlightTTL: cmp.Or(opts.inFlightTTL, 3*time.Second)})
	t.Cleanup(h.gate.Close)
	// Another process's gate, whose live mark lasts 100 ms (acceptedByDead).
	h.deadGate = gate.New(rdb, gate.Config{Namespace: ns, InFlightTTL: time.Hour, LiveTTL: 100 * time.Millisecond})
	t.Cleanup(h.deadGate.Close)

	h.publisher = broker.NewPublisher(broker.PublisherConfig{
		URL: amqpURL, Name: "api-test", Declare: h.topo.Declare, Logger: log,
		Channels: 4, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	})
	h.recent = api.NewRecent(0)
	var store api.Store = h.store
	if opts.deaf {
		store = deafStore{store}
	}
	h.server = api.New(api.Config{
		Recent:            h.recent,
		PublishTimeout:    cmp.Or(opts.publishTimeout, 2*time.Second),
		InProgressWait:    opts.inProgressWait,
		GateTimeout:       opts.gateTimeout,
		WriteTimeout:      3 * time.Second,
		ReconcileInterval: cmp.Or(opts.reconcile, 50*time.Millisecond),
		CanaryInterval:    opts.canary,
		ReadTimeout:       opts.readTimeout,
		Now:               opts.now,
		MissTimeout:       cmp.Or(opts.missTimeout, 10*time.Second), // a loaded CI machine's first read may be slow
		Logger:            log,
	}, h.gate, broker.OrderQueue{Publisher: h.publisher, Topology: h.topo}, store, h.authority)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	running := 2
	go func() { h.publisher.Run(ctx); done <- struct{}{} }()
	go func() { h.server.Run(ctx); done <- struct{}{} }()
	srv := httptest.NewServer(h.server.Handler())
	h.url = srv.URL
	h.client = &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128},
	}
	t.Cleanup(func() {
		srv.Close()
		h.client.CloseIdleConnections()
		cancel()
		for range running {
			<-done
		}
	})
	testkit.Eventually(t, 20*time.Second, h.publisher.Ready, "publisher connected")
	for range opts.workers {
		h.startWorker()
	}
	return h
}

// startWorker starts a worker on h's queue and database, until the test ends.
func (h *harness) startWorker() {
	h.t.Helper()
	h.workers++
	w := worker.New(worker.Config{
		AMQPURL: testkit.AMQPURL(), Topology: h.topo, Batch: 50, Logger: testkit.Logger(h.t),
		Name: fmt.Sprintf("api-test-worker-%d", h.workers), RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	}, h.store)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	h.t.Cleanup(func() { cancel(); <-done })
	testkit.Eventually(h.t, 20*time.Second, w.Ready, "worker consuming")
}

// event creates an event and waits until the API's catalog has it.
func (h *harness) event(maxPerCustomer int, capacities ...int) crowdpass.Event {
	h.t.Helper()
	e := testkit.CreateEvent(h.t, h.store, maxPerCustomer, capacities...)
	h.waitCatalog(e.ID)
	for _, c := range e.Categories {
		h.waitGate(c.ID, c.Capacity)
	}
	return e
}

func (h *harness) waitCatalog(id fmt.Stringer) {
	h.t.Helper()
	testkit.Eventually(h.t, 10*time.Second, func() bool {
		r := h.do(http.MethodGet, "/events/"+id.String(), nil, nil)
		return r.status == http.StatusOK
	}, "event in the catalog")
}

// lock holds tables in ACCESS EXCLUSIVE mode in a transaction the caller
// rolls back to let go (or the test's end does).
func (h *harness) lock(tables string) pgx.Tx {
	h.t.Helper()
	ctx := testkit.Context(h.t)
	tx, err := h.db.Pool.Begin(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	// Held as long as the test wants, on a slow machine too.
	if _, err := tx.Exec(ctx, "SET LOCAL idle_in_transaction_session_timeout = 0"); err != nil {
		h.t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+tables+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		h.t.Fatal(err)
	}
	return tx
}

// orders sends n requests of one key at once, as a crowd of clicks would.
func (h *harness) orders(n int, customer, key string, body []byte) []reply {
	replies := make([]reply, n)
	var wg sync.WaitGroup
	for i := range replies {
		wg.Go(func() { replies[i] = h.order(customer, key, body) })
	}
	wg.Wait()
	return replies
}

// acceptedElsewhere does what another API process does with a purchase of
// one ticket of event's first category: it admits the key at the gate
// (taking the ticket) and queues the order, accepted a minute ago, and
// stores no answer here. The admission is returned.
func (h *harness) acceptedElsewhere(event crowdpass.Event, customer, key string) crowdpass.Admission {
	h.t.Helper()
	return h.acceptedBy(h.gate, "elsewhere", event, customer, key)
}

// acceptedByDead is acceptedElsewhere by a process that then died: its
// live mark expires 100 ms after the admission, and its key stays in flight
// for an hour.
func (h *harness) acceptedByDead(event crowdpass.Event, customer, key string) crowdpass.Admission {
	h.t.Helper()
	return h.acceptedBy(h.deadGate, "dead.1", event, customer, key)
}

func (h *harness) acceptedBy(g *gate.Redis, owner string, event crowdpass.Event, customer, key string) crowdpass.Admission {
	h.t.Helper()
	t, cat := h.t, event.Categories[0]
	adm := admissionElsewhere(event, customer, key)
	adm.AcceptedAt = crowdpass.NewTime(time.Now().Add(-time.Minute))
	if r, err := g.Admit(testkit.Context(t), adm, owner); err != nil || r.Verdict != crowdpass.Admitted {
		t.Fatalf("admission %+v, %v", r, err)
	}
	queue := broker.OrderQueue{Publisher: h.publisher, Topology: h.topo}
	if err := queue.Enqueue(testkit.Context(t), crowdpass.OrderRequest{
		OrderID: adm.OrderID, CustomerID: customer, IdempotencyKey: key, EventID: event.ID, CategoryID: cat.ID,
		Quantity: 1, AcceptedAt: adm.AcceptedAt,
	}); err != nil {
		t.Fatal(err)
	}
	return adm
}

// admissionElsewhere is the admission another API process makes of the
// customer's key, for one ticket of the event's first category.
func admissionElsewhere(event crowdpass.Event, customer, key string) crowdpass.Admission {
	cat := event.Categories[0]
	payload := crowdpass.OrderPayload{EventID: event.ID, CategoryID: cat.ID, Quantity: 1}
	return crowdpass.Admission{
		OrderID: crowdpass.OrderID(customer, key), CustomerID: customer, Fingerprint: payload.Fingerprint(),
		CategoryID: cat.ID, Quantity: 1, SoldOut: crowdpass.Answer{Status: http.StatusConflict, Body: []byte("{}\n")},
		AcceptedAt: crowdpass.NewTime(time.Now()),
	}
}

// refusedElsewhere stores a sold_out answer for the customer's key, as
// another API process refusing it at the edge would, and returns it.
func (h *harness) refusedElsewhere(event crowdpass.Event, customer, key string) crowdpass.Answer {
	h.t.Helper()
	cat := event.Categories[0]
	payload := crowdpass.OrderPayload{EventID: event.ID, CategoryID: cat.ID, Quantity: 1}
	answer := crowdpass.Answer{Status: http.StatusConflict, Body: []byte(`{"code":"sold_out","elsewhere":true}` + "\n")}
	adm := crowdpass.Admission{
		OrderID: crowdpass.OrderID(customer, key), CustomerID: customer, Fingerprint: payload.Fingerprint(),
		CategoryID: cat.ID, Quantity: 1, SoldOut: answer,
	}
	if r, err := h.gate.Refuse(testkit.Context(h.t), adm, "elsewhere"); err != nil || r.Verdict != crowdpass.SoldOut {
		h.t.Fatalf("refusal %+v, %v", r, err)
	}
	return answer
}

// outcome is the decided order's outcome as its outbox row holds it: what
// the notifier of a process passes to Recent.Decided.
func (h *harness) outcome(order uuid.UUID) crowdpass.Outcome {
	h.t.Helper()
	var payload []byte
	if err := h.db.Pool.QueryRow(testkit.Context(h.t), "SELECT payload FROM outbox WHERE aggregate_id = $1", order).Scan(&payload); err != nil {
		h.t.Fatal(err)
	}
	var out crowdpass.Outcome
	if err := json.Unmarshal(payload, &out); err != nil {
		h.t.Fatal(err)
	}
	return out
}

func (h *harness) token(customer string) string {
	tok, err := h.authority.Issue(customer, false, time.Hour)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) problem(t testing.TB) map[string]any {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("body is not JSON: %q", r.body)
	}
	return p
}

func (h *harness) do(method, path string, header http.Header, body []byte) reply {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

func orderJSON(e crowdpass.Event, category, quantity int) []byte {
	return fmt.Appendf(nil, `{"event_id":%q,"category_id":%q,"quantity":%d}`, e.ID, e.Categories[category].ID, quantity)
}

// metric returns the value of a series of the API's /metrics, "" if absent.
func (h *harness) metric(name string) string {
	h.t.Helper()
	for _, line := range bytes.Split(h.do(http.MethodGet, "/metrics", nil, nil).body, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte(name+" ")); ok {
			return string(v)
		}
	}
	return ""
}

// order posts an order as customer under key.
func (h *harness) order(customer, key string, body []byte) reply {
	h.t.Helper()
	return h.do(http.MethodPost, "/orders", http.Header{
		"Authorization":   {"Bearer " + h.token(customer)},
		"Idempotency-Key": {key},
		"Content-Type":    {"application/json"},
	}, body)
}

func (h *harness) countOrders(where string, args ...any) int {
	h.t.Helper()
	var n int
	if err := h.db.Pool.QueryRow(testkit.Context(h.t), "SELECT count(*) FROM orders WHERE "+where, args...).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// eventWindow creates a one-category event with a sale window.
func (h *harness) eventWindow(opens, closes *time.Time) crowdpass.Event {
	h.t.Helper()
	spec := crowdpass.EventSpec{Name: "Window", Categories: []crowdpass.CategorySpec{{Name: "A", Capacity: 10}}}
	if opens != nil {
		o := crowdpass.NewTime(*opens)
		spec.OpensAt = &o
	}
	if closes != nil {
		o := crowdpass.NewTime(closes.Add(-time.Hour))
		c := crowdpass.NewTime(*closes)
		spec.OpensAt, spec.ClosesAt = &o, &c
	}
	e, err := h.store.CreateEvent(testkit.Context(h.t), spec)
	if err != nil {
		h.t.Fatal(err)
	}
	h.waitCatalog(e.ID)
	return e
}

// waitGate waits until the gate holds n tickets of a category.
func (h *harness) waitGate(category uuid.UUID, n int) {
	h.t.Helper()
	t := h.t
	testkit.Eventually(t, 10*time.Second, func() bool {
		got, known, err := h.gate.Stock(testkit.Context(t), category)
		return err == nil && known && got == n
	}, "gate stock %d", n)
}

// deafStore hears of no event created (options.deaf).
type deafStore struct{ api.Store }

func (deafStore) ListenEventsCreated(ctx context.Context, _ func(), _ func(uuid.UUID)) error {
	<-ctx.Done()
	return ctx.Err()
}
