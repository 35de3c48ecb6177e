package notifier_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/api"
	"github.com/crowdpass/crowdpass/auth"
	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/gate"
	"github.com/crowdpass/crowdpass/notifier"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/problem"
	"github.com/crowdpass/crowdpass/relay"
	"github.com/crowdpass/crowdpass/testkit"
	"github.com/crowdpass/crowdpass/worker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type bundle struct {
	t         *testing.T
	db        *testkit.DB
	store     *postgres.Store
	topo      broker.Topology
	pub       *testkit.Publisher
	authority *auth.Authority
	ctx       context.Context
	wg        *sync.WaitGroup
}

func setup(t *testing.T) *bundle {
	t.Helper()
	db := testkit.NewDB(t)
	topo := broker.Topology{Namespace: testkit.Namespace(t)}
	authority, _ := auth.New([]byte("notifier-test"), nil)
	ctx, cancel := context.WithCancel(context.Background())
	b := &bundle{t: t, db: db, store: postgres.NewStore(db.Pool, nil), topo: topo, pub: testkit.NewPublisher(t, topo),
		authority: authority, ctx: ctx, wg: &sync.WaitGroup{}}
	t.Cleanup(func() { cancel(); b.wg.Wait() })
	return b
}

// pipeline starts a worker and a relay: published orders become outcomes.
func (b *bundle) pipeline() { b.pipelineWith(nil) }

// pipelineWith starts a worker and a relay that hands what it claims to
// local, as a relay does in the notifier's own process.
func (b *bundle) pipelineWith(local func([]crowdpass.OutboxMessage)) {
	log := testkit.Logger(b.t)
	w := worker.New(worker.Config{AMQPURL: testkit.AMQPURL(), Topology: b.topo, Logger: log}, b.store)
	pub := broker.NewPublisher(broker.PublisherConfig{URL: testkit.AMQPURL(), Name: "notifier-test-relay", Declare: b.topo.Declare, Logger: log})
	r := relay.New(relay.Config{Exchange: b.topo.Outcomes(), Poll: 200 * time.Millisecond, Logger: log, Local: local}, b.store, pub)
	b.wg.Go(func() { w.Run(b.ctx) })
	b.wg.Go(func() { pub.Run(b.ctx) })
	b.wg.Go(func() { r.Run(b.ctx) })
}

// notifier starts a notifier behind its own HTTP server and returns its /ws URL.
func (b *bundle) notifier(cfg notifier.Config, listener func(net.Listener) net.Listener) (*notifier.Notifier, string) {
	return b.notifierOver(cfg, listener, b.store, nil)
}

// notifierOver starts a notifier that reads orders from orders and pending.
func (b *bundle) notifierOver(cfg notifier.Config, listener func(net.Listener) net.Listener, orders notifier.Orders, pending notifier.Pending) (*notifier.Notifier, string) {
	cfg.AMQPURL, cfg.Topology, cfg.Logger = cmp.Or(cfg.AMQPURL, testkit.AMQPURL()), b.topo, testkit.Logger(b.t)
	n := notifier.New(cfg, orders, pending, b.authority)
	b.wg.Go(func() { n.Run(b.ctx) })
	srv := httptest.NewUnstartedServer(n)
	srv.Config.ConnContext = notifier.ConnContext // as crowdpass serves it
	if listener != nil {
		srv.Listener = listener(srv.Listener)
	}
	srv.Start()
	b.t.Cleanup(srv.Close)
	testkit.Eventually(b.t, 20*time.Second, n.Ready, "notifier consuming")
	return n, "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

func (b *bundle) dial(url, customer string) *websocket.Conn {
	b.t.Helper()
	return b.dialWith(url, customer, nil)
}

func (b *bundle) dialWith(url, customer string, opts *websocket.DialOptions) *websocket.Conn {
	b.t.Helper()
	tok, _ := b.authority.Issue(customer, false, time.Hour)
	c, _, err := websocket.Dial(testkit.Context(b.t), url+"?access_token="+tok, opts)
	if err != nil {
		b.t.Fatalf("dialing as %s: %v", customer, err)
	}
	b.t.Cleanup(func() { c.CloseNow() })
	return c
}

type frameMsg struct {
	Type        string             `json:"type"`
	OrderID     string             `json:"order_id"`
	Status      string             `json:"status"`
	Reason      string             `json:"reason"`
	Code        string             `json:"code"`
	Quantity    int                `json:"quantity"`
	Tickets     []crowdpass.Ticket `json:"tickets"`
	ProcessedAt string             `json:"processed_at"`
	CustomerID  *string            `json:"customer_id"`
}

func read(t *testing.T, c *websocket.Conn) frameMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	var f frameMsg
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("frame %q: %v", data, err)
	}
	if f.CustomerID != nil {
		t.Errorf("frame leaks the customer id: %s", data)
	}
	return f
}

func TestOutcomeReachesEverySocketOfItsCustomerAndNoOther(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.pipeline()
	_, url := b.notifier(notifier.Config{}, nil)
	event := testkit.CreateEvent(t, b.store, 4, 10)
	alice1, alice2, bob := b.dial(url, "alice"), b.dial(url, "alice"), b.dial(url, "bob")

	order := testkit.OrderRequest("alice", "k", event, 0, 2)
	b.pub.Orders(order)
	for _, c := range []*websocket.Conn{alice1, alice2} {
		f := read(t, c)
		if f.Type != crowdpass.EventOrderConfirmed || f.OrderID != order.OrderID.String() || len(f.Tickets) != 2 || f.ProcessedAt == "" {
			t.Errorf("alice got %+v", f)
		}
	}
	// Bob's first frame is his own order: alice's never reached him.
	bobs := testkit.OrderRequest("bob", "k", event, 0, 1)
	b.pub.Orders(bobs)
	if f := read(t, bob); f.OrderID != bobs.OrderID.String() {
		t.Errorf("bob got %+v first", f)
	}
}

// A notifier cut from the broker has its queue dropped with the connection;
// the outcomes published meanwhile reach the sockets that stayed open from
// the outbox once it is back, and only those, even if PostgreSQL could not
// be read when it came back, or when the notifier started: the outbox is
// read once it can.
func TestAnOutcomePublishedWhileTheNotifierWasCutReachesTheSocket(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name                         string
		outboxDownAtStart, downAfter bool
	}{
		{"outbox up", false, false},
		{"outbox down when the broker is back", false, true},
		{"outbox down at start", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			proxy, amqpURL := testkit.NewURLProxy(t, testkit.AMQPURL())
			outbox := &flakyOutbox{Outbox: b.store}
			outbox.down.Store(c.outboxDownAtStart)
			n, url := b.notifier(notifier.Config{AMQPURL: amqpURL, Outbox: outbox, RetryMin: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond}, nil)
			if c.outboxDownAtStart {
				testkit.Eventually(t, 10*time.Second, func() bool { return outbox.refused.Load() > 1 }, "the outbox's end asked for again")
				outbox.down.Store(false)
			}
			event := testkit.CreateEvent(t, b.store, 4, 10)
			alice := b.dial(url, "alice")
			b.pipeline()
			before := testkit.OrderRequest("alice", "before", event, 0, 1)
			b.pub.Orders(before)
			if f := read(t, alice); f.OrderID != before.OrderID.String() {
				t.Fatalf("alice got %+v, want the outcome of %s", f, before.OrderID)
			}

			proxy.Refuse()
			testkit.Eventually(t, 10*time.Second, func() bool { return !n.Ready() }, "notifier still on the broker")
			order := testkit.OrderRequest("alice", "k", event, 0, 1)
			b.pub.Orders(order)
			b.waitPublished(order.OrderID)
			outbox.down.Store(c.downAfter)
			refused := outbox.refused.Load()
			proxy.Allow()
			if c.downAfter {
				testkit.Eventually(t, 10*time.Second, func() bool { return n.Ready() && outbox.refused.Load() > refused+1 },
					"the catch-up tried again after the outbox refused it")
				outbox.down.Store(false)
			}

			// Only what was missed: the outcome alice had is not pushed again.
			if f := read(t, alice); f.Type != crowdpass.EventOrderConfirmed || f.OrderID != order.OrderID.String() {
				t.Errorf("alice got %+v, want the outcome of %s", f, order.OrderID)
			}
		})
	}
}

// waitPublished waits until the relay published an order's outcome.
func (b *bundle) waitPublished(order uuid.UUID) {
	b.t.Helper()
	testkit.Eventually(b.t, 30*time.Second, func() bool {
		var published bool
		err := b.db.Pool.QueryRow(testkit.Context(b.t), "SELECT published_at IS NOT NULL FROM outbox WHERE aggregate_id = $1", order).Scan(&published)
		return err == nil && published
	}, "the outcome of %s published", order)
}

// flakyOutbox refuses every read while down is set, counting them.
type flakyOutbox struct {
	notifier.Outbox
	down    atomic.Bool
	refused atomic.Int64
}

func (o *flakyOutbox) OutboxAfter(ctx context.Context, after int64, max int) ([]crowdpass.OutboxMessage, error) {
	if o.down.Load() {
		o.refused.Add(1)
		return nil, errors.New("outbox down")
	}
	return o.Outbox.OutboxAfter(ctx, after, max)
}

func (o *flakyOutbox) OutboxLastID(ctx context.Context) (int64, error) {
	if o.down.Load() {
		o.refused.Add(1)
		return 0, errors.New("outbox down")
	}
	return o.Outbox.OutboxLastID(ctx)
}

// A notifier started with Recall gives its process the latest outcomes
// decided before it started, as many as asked and the latest ones.
func TestANotifierRecallsTheLatestOutcomesWhenItStarts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.pipeline()
	event := testkit.CreateEvent(t, b.store, 4, 10)
	var orders []crowdpass.OrderRequest
	for _, customer := range []string{"alice", "bob", "carol"} {
		order := testkit.OrderRequest(customer, "k", event, 0, 1)
		b.pub.Orders(order)
		orders = append(orders, order)
		b.waitPublished(order.OrderID)
	}
	var recalled decidedOrders
	b.notifier(notifier.Config{Outbox: b.store, Decided: recalled.add, Recall: 2}, nil)
	// The window is two ids back from the last: carol's row and, unless a
	// rolled-back insert left a gap, bob's; never alice's.
	testkit.Eventually(t, 20*time.Second, func() bool { return recalled.has(orders[2].OrderID) }, "carol's outcome recalled")
	if recalled.has(orders[0].OrderID) || recalled.len() > 2 {
		t.Errorf("recalled %d outcomes, alice's among them: %v; want at most bob's and carol's", recalled.len(), recalled.has(orders[0].OrderID))
	}
}

func TestWorkerRejectionArrivesWithItsReason(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.pipeline()
	_, url := b.notifier(notifier.Config{}, nil)
	event := testkit.CreateEvent(t, b.store, 1, 10)
	alice := b.dial(url, "alice")
	order := testkit.OrderRequest("alice", "k", event, 0, 2) // over max_per_customer
	b.pub.Orders(order)
	if f := read(t, alice); f.Type != crowdpass.EventOrderRejected || f.Status != "rejected" || f.Reason != "limit_exceeded" || f.ProcessedAt == "" {
		t.Errorf("got %+v", f)
	}
}

func TestARelayInTheSameProcessHandsOutcomesOverOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reg := prometheus.NewRegistry()
	var decided1, decided2 decidedOrders
	local, url1 := b.notifier(notifier.Config{Name: "n1", Registry: reg, Decided: decided1.add}, nil)
	_, url2 := b.notifier(notifier.Config{Name: "n2", Decided: decided2.add}, nil)
	b.pipelineWith(local.Deliver)
	alice := b.aliceAndBob(url1, url2)
	// Both notifiers tell their API of both decided orders: one as the
	// relay hands them over, the other from the broker.
	testkit.Eventually(t, 20*time.Second, func() bool { return decided1.len() == 2 && decided2.len() == 2 },
		"both orders passed to Decided by both notifiers")
	// Both outcomes reached the local notifier twice: from its relay and
	// from the broker.
	testkit.Eventually(t, 20*time.Second, func() bool {
		return lagCount(t, reg, "local") >= 2 && lagCount(t, reg, "broker") >= 2
	}, "both outcomes handed over and their broker copies in")
	// The broker's copy of alice's outcome was dropped: the next frame she
	// gets is the answer to this subscribe.
	if err := alice.Write(testkit.Context(t), websocket.MessageText, []byte(`{"type":"subscribe","order_id":"not-an-id"}`)); err != nil {
		t.Fatal(err)
	}
	if f := read(t, alice); f.Type != "error" {
		t.Errorf("alice got %+v again before her subscribe's answer", f)
	}
}

// lagCount is how many outcomes reached a notifier by path.
func lagCount(t *testing.T, reg *prometheus.Registry, path string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "crowdpass_notifier_outcome_lag_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "path" && l.GetValue() == path {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

func TestSubscribeAnswersAtOnceWithTheCurrentState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, url := b.notifier(notifier.Config{}, nil)
	event := testkit.CreateEvent(t, b.store, 4, 10)
	order := testkit.OrderRequest("alice", "k", event, 0, 1)
	if _, err := b.store.DecideOrders(testkit.Context(t), []crowdpass.OrderRequest{order}); err != nil {
		t.Fatal(err)
	}
	alice := b.dial(url, "alice")
	mallory := b.dial(url, "mallory")
	send := func(c *websocket.Conn, id string) {
		if err := c.Write(testkit.Context(t), websocket.MessageText, fmt.Appendf(nil, `{"type":"subscribe","order_id":%q}`, id)); err != nil {
			t.Fatal(err)
		}
	}
	send(alice, order.OrderID.String())
	if f := read(t, alice); f.Type != "order.confirmed" || f.Status != "confirmed" || len(f.Tickets) != 1 || f.Quantity != 1 {
		t.Errorf("subscribe answered %+v", f)
	}
	send(mallory, order.OrderID.String())
	if f := read(t, mallory); f.Type != "error" || f.Code != "not_found" || f.OrderID != order.OrderID.String() {
		t.Errorf("foreign order answered %+v", f)
	}
	send(alice, "not-an-id")
	if f := read(t, alice); f.Type != "error" || f.Code != "not_found" {
		t.Errorf("unknown order answered %+v", f)
	}
}

// A stalled database keeps no buyer from learning that an order is
// pending: once the read's time is up, subscribe answers from the 202 the
// gate stored, in a lookup timed on its own.
func TestSubscribeAnswersPendingWhileTheDatabaseStalls(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 10)
	order := testkit.OrderRequest("alice", "k", event, 0, 1)
	opts, err := redis.ParseURL(testkit.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	g := gate.New(rdb, gate.Config{Namespace: b.topo.Namespace})
	t.Cleanup(g.Close)
	accepted, _ := json.Marshal(map[string]any{"order_id": order.OrderID, "status": "pending", "event_id": order.EventID,
		"category_id": order.CategoryID, "quantity": order.Quantity, "accepted_at": order.AcceptedAt})
	adm := crowdpass.Admission{OrderID: order.OrderID, CustomerID: "alice", Fingerprint: "f"}
	if err := g.Complete(testkit.Context(t), adm, crowdpass.Answer{Status: http.StatusAccepted, Body: accepted}); err != nil {
		t.Fatal(err)
	}
	_, url := b.notifierOver(notifier.Config{LookupTimeout: time.Second}, nil, b.stalledStore(), api.NewRecent(0).Pending(g))
	alice := b.dial(url, "alice")
	if err := alice.Write(testkit.Context(t), websocket.MessageText, fmt.Appendf(nil, `{"type":"subscribe","order_id":%q}`, order.OrderID)); err != nil {
		t.Fatal(err)
	}
	if f := read(t, alice); f.Type != "order.pending" || f.Status != "pending" || f.OrderID != order.OrderID.String() || f.Quantity != 1 {
		t.Errorf("subscribe while the database stalls answered %+v, want order.pending", f)
	}
}

// Subscribes that wait for a stalled database do not stop the socket's
// reader: the client's pongs are still read, and it is not taken for one
// that stopped reading.
func TestSlowSubscribesDoNotStopPongs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, url := b.notifierOver(notifier.Config{LookupTimeout: time.Second, PingInterval: 50 * time.Millisecond, WriteTimeout: 300 * time.Millisecond},
		nil, b.stalledStore(), nil)
	alice := b.dial(url, "alice")
	const n = 3
	for range n {
		if err := alice.Write(testkit.Context(t), websocket.MessageText, fmt.Appendf(nil, `{"type":"subscribe","order_id":%q}`, uuid.NewString())); err != nil {
			t.Fatal(err)
		}
	}
	for range n { // each lookup takes its whole second, several pings' time
		if f := read(t, alice); f.Type != "error" || f.Code != string(crowdpass.EUnavailable) {
			t.Errorf("subscribe while the database stalls answered %+v, want unavailable", f)
		}
	}
}

// stalledStore is the test's database behind a proxy that holds every byte.
func (b *bundle) stalledStore() *postgres.Store {
	b.t.Helper()
	proxy, dbURL := testkit.NewURLProxy(b.t, b.db.URL)
	pool, err := postgres.NewPool(dbURL, 2)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(pool.Close)
	// Connected first: a read then waits for its deadline, as on a locked
	// table, rather than for the pool's connect timeout.
	if err := pool.Ping(testkit.Context(b.t)); err != nil {
		b.t.Fatal(err)
	}
	proxy.Stall()
	b.t.Cleanup(proxy.Resume) // first: lets the pool's connection attempt end
	return postgres.NewStore(pool, nil)
}

// An order decided before the database stalled is answered as decided, from
// the outcome the process saw (api.Recent), not as pending.
func TestSubscribeAnswersADecidedOrderWhileTheDatabaseStalls(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 10)
	order := testkit.OrderRequest("alice", "k", event, 0, 2)
	if _, err := b.store.DecideOrders(testkit.Context(t), []crowdpass.OrderRequest{order}); err != nil {
		t.Fatal(err)
	}
	var payload []byte
	if err := b.db.Pool.QueryRow(testkit.Context(t), "SELECT payload FROM outbox WHERE aggregate_id = $1", order.OrderID).Scan(&payload); err != nil {
		t.Fatal(err)
	}
	var out crowdpass.Outcome
	if err := json.Unmarshal(payload, &out); err != nil {
		t.Fatal(err)
	}
	recent := api.NewRecent(0)
	recent.Decided(out)
	// The stalled read would outlast the test: the outcome is answered from memory.
	_, url := b.notifierOver(notifier.Config{LookupTimeout: time.Hour}, nil, b.stalledStore(), recent.Pending(nil))
	alice := b.dial(url, "alice")
	if err := alice.Write(testkit.Context(t), websocket.MessageText, fmt.Appendf(nil, `{"type":"subscribe","order_id":%q}`, order.OrderID)); err != nil {
		t.Fatal(err)
	}
	if f := read(t, alice); f.Type != "order.confirmed" || f.Status != "confirmed" || len(f.Tickets) != 2 || f.ProcessedAt == "" {
		t.Errorf("subscribe to a decided order while the database stalls answered %+v, want order.confirmed", f)
	}
}

func TestABuyerOnEitherNotifierGetsTheOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.pipeline()
	_, url1 := b.notifier(notifier.Config{Name: "n1"}, nil)
	_, url2 := b.notifier(notifier.Config{Name: "n2"}, nil)
	b.aliceAndBob(url1, url2)
}

// aliceAndBob connects alice to the notifier at url1 and bob to the one at
// url2, orders one ticket for each, checks that each gets their own outcome,
// and returns alice's socket.
// decidedOrders records what a notifier passes to Config.Decided.
type decidedOrders struct {
	mu     sync.Mutex
	orders map[uuid.UUID]bool
}

func (d *decidedOrders) add(out crowdpass.Outcome) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.orders == nil {
		d.orders = map[uuid.UUID]bool{}
	}
	d.orders[out.ID] = true
}

func (d *decidedOrders) has(id uuid.UUID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.orders[id]
}

func (d *decidedOrders) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.orders)
}

func (b *bundle) aliceAndBob(url1, url2 string) *websocket.Conn {
	b.t.Helper()
	event := testkit.CreateEvent(b.t, b.store, 4, 10)
	alice, bob := b.dial(url1, "alice"), b.dial(url2, "bob")
	a, c := testkit.OrderRequest("alice", "k", event, 0, 1), testkit.OrderRequest("bob", "k", event, 0, 1)
	b.pub.Orders(a, c)
	if f := read(b.t, alice); f.OrderID != a.OrderID.String() {
		b.t.Errorf("alice on notifier 1 got %+v", f)
	}
	if f := read(b.t, bob); f.OrderID != c.OrderID.String() {
		b.t.Errorf("bob on notifier 2 got %+v", f)
	}
	return alice
}

func TestAuthenticationAndOriginAreCheckedBeforeTheUpgrade(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, url := b.notifier(notifier.Config{}, nil)
	httpURL := "http" + strings.TrimPrefix(url, "ws")
	resp, err := http.Get(httpURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("no token: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	tok, _ := b.authority.Issue("alice", false, time.Hour)
	// Authenticated, but no handshake: a problem too, not the WebSocket
	// library's text/plain.
	resp, err = http.Get(httpURL + "?access_token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Content-Type") != "application/problem+json" || resp.Header.Get("Upgrade") != "websocket" {
		t.Errorf("no handshake: %d %v", resp.StatusCode, resp.Header)
	}
	for _, c := range []struct {
		name, method, key string
		status            int
	}{
		{"a key that is not a 16-byte nonce", http.MethodGet, "abc", http.StatusUpgradeRequired},
		{"HEAD", http.MethodHead, "dGhlIHNhbXBsZSBub25jZQ==", http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequest(c.method, httpURL+"?access_token="+tok, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", c.key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: %d %v, want %d and a problem", c.name, resp.StatusCode, resp.Header, c.status)
		}
	}
	_, resp, err = websocket.Dial(testkit.Context(t), url+"?access_token="+tok, &websocket.DialOptions{
		HTTPHeader: http.Header{"Origin": {"https://evil.example"}},
	})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("foreign origin: err %v, response %+v", err, resp)
	}
	own := "http://" + strings.TrimPrefix(strings.TrimSuffix(url, "/ws"), "ws://")
	if c, _, err := websocket.Dial(testkit.Context(t), url+"?access_token="+tok, &websocket.DialOptions{
		HTTPHeader: http.Header{"Origin": {own}},
	}); err != nil {
		t.Errorf("own origin refused by default: %v", err)
	} else {
		c.CloseNow()
	}

	// With ALLOWED_ORIGINS set, exactly the listed origins may connect.
	_, listed := b.notifier(notifier.Config{AllowedOrigins: []string{"https://shop.example", "*.fans.example"}}, nil)
	for origin, want := range map[string]int{
		"https://shop.example": http.StatusSwitchingProtocols, "https://a.fans.example": http.StatusSwitchingProtocols,
		"http://shop.example": http.StatusForbidden, "https://evil.example": http.StatusForbidden,
		"http://" + strings.TrimPrefix(strings.TrimSuffix(listed, "/ws"), "ws://"): http.StatusForbidden,
	} {
		c, resp, _ := websocket.Dial(testkit.Context(t), listed+"?access_token="+tok, &websocket.DialOptions{
			HTTPHeader: http.Header{"Origin": {origin}},
		})
		if c != nil {
			c.CloseNow()
		}
		if resp == nil || resp.StatusCode != want {
			t.Errorf("origin %s: response %+v, want %d", origin, resp, want)
		}
	}
}

// smallBuffers shrinks the send buffer of accepted connections, so that a
// client that stops reading fills it after a few frames.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}

// A socket that stops reading is closed with 1008, and finds that close
// after the frames it left unread when it reads again, however late: its
// writes never fill the kernel's send queue, so the close frame always
// fits (a write into a full queue would time out, and the library then
// drops the connection without one). Sockets that read are not slowed.
func TestASocketThatStopsReadingIsClosedWith1008(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name         string
		writeTimeout time.Duration
		late         bool // reads again only once its socket is closed
		wrapped      bool // behind crowdpass's listener (problem.Listener)
	}{
		{"reading again soon", 0, false, false},
		{"reading again after the write timeout", 300 * time.Millisecond, true, false},
		{"behind crowdpass's listener", 300 * time.Millisecond, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			slowSocket(t, c.writeTimeout, c.late, c.wrapped)
		})
	}
}

func slowSocket(t *testing.T, writeTimeout time.Duration, late, wrapped bool) {
	b := setup(t)
	reg := prometheus.NewRegistry()
	listener := func(l net.Listener) net.Listener { return smallBuffers{l} }
	if wrapped {
		listener = func(l net.Listener) net.Listener { return problem.Listener(smallBuffers{l}, nil) }
	}
	n, url := b.notifier(notifier.Config{Buffer: 8, WriteTimeout: writeTimeout, Registry: reg}, listener)
	dialer := &net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	slowClient := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	slow := b.dialWith(url, "slow", &websocket.DialOptions{HTTPClient: slowClient})
	fast := b.dial(url, "fast")

	// Outcomes straight onto order_events, as the relay would publish them.
	ch := testkit.Channel(t)
	outcome := func(customer string, i int) []byte {
		now := crowdpass.NewTime(time.Now())
		body, _ := json.Marshal(crowdpass.Outcome{Type: crowdpass.EventOrderRejected, CustomerID: customer, Order: crowdpass.Order{
			ID: crowdpass.OrderID(customer, fmt.Sprint(i)), Status: crowdpass.StatusRejected, Reason: crowdpass.ReasonSoldOut,
			ProcessedAt: &now, Tickets: []crowdpass.Ticket{}}})
		return body
	}
	for i := 0; n.Kicked() == 0 && i < 20000; i++ {
		if err := ch.PublishWithContext(testkit.Context(t), b.topo.Outcomes(), crowdpass.EventOrderRejected, false, false,
			amqp091Publishing(outcome("slow", i))); err != nil {
			t.Fatal(err)
		}
		switch {
		case late:
			// Paced, so that the writer keeps up until the kernel's queue is
			// full and is then held in a write when the frames pile up.
			time.Sleep(2 * time.Millisecond)
		case i%100 == 99:
			time.Sleep(5 * time.Millisecond) // let the notifier catch up with the broker
		}
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return n.Kicked() == 1 }, "the slow socket kicked")

	// The others keep receiving.
	if err := ch.PublishWithContext(testkit.Context(t), b.topo.Outcomes(), crowdpass.EventOrderRejected, false, false,
		amqp091Publishing(outcome("fast", 0))); err != nil {
		t.Fatal(err)
	}
	if f := read(t, fast); f.Type != crowdpass.EventOrderRejected {
		t.Errorf("fast socket got %+v", f)
	}
	if late {
		testkit.Eventually(t, 20*time.Second, func() bool { return gauge(reg, "crowdpass_ws_sockets") == 1 }, "the slow socket closed")
	}
	// The slow one, reading again, finds its socket closed with 1008.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		if _, _, err := slow.Read(ctx); err != nil {
			if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
				t.Errorf("slow socket ended with %v (status %d), want 1008", err, got)
			}
			break
		}
	}
}

// gauge is the value of a registry's gauge, or -1.
func gauge(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// A client answers pings as it reads; one that stops reading, even with no
// frames for it, is closed with 1008 once a ping goes unanswered, and finds
// that close when it reads again. A client that reads is left alone.
func TestASocketThatStopsAnsweringPingsIsClosedWith1008(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n, url := b.notifier(notifier.Config{PingInterval: 50 * time.Millisecond, WriteTimeout: 5 * time.Second}, nil)
	idle := b.dial(url, "idle")
	reader := b.dial(url, "reader")
	frames := make(chan frameMsg, 1)
	go func() {
		for {
			_, data, err := reader.Read(context.Background())
			if err != nil {
				return
			}
			var f frameMsg
			json.Unmarshal(data, &f)
			select {
			case frames <- f:
			default:
			}
		}
	}()

	testkit.Eventually(t, 20*time.Second, func() bool { return n.Kicked() == 1 }, "the idle socket kicked")

	// The reading socket still gets its outcomes.
	now := crowdpass.NewTime(time.Now())
	body, _ := json.Marshal(crowdpass.Outcome{Type: crowdpass.EventOrderRejected, CustomerID: "reader", Order: crowdpass.Order{
		ID: crowdpass.OrderID("reader", "1"), Status: crowdpass.StatusRejected, Reason: crowdpass.ReasonSoldOut,
		ProcessedAt: &now, Tickets: []crowdpass.Ticket{}}})
	if err := testkit.Channel(t).PublishWithContext(testkit.Context(t), b.topo.Outcomes(), crowdpass.EventOrderRejected, false, false,
		amqp091Publishing(body)); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-frames:
		if f.Type != crowdpass.EventOrderRejected {
			t.Errorf("reading socket got %+v", f)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the reading socket got nothing")
	}
	if k := n.Kicked(); k != 1 {
		t.Errorf("%d sockets kicked, want only the idle one", k)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, _, err := idle.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
		t.Errorf("idle socket ended with %v (status %d), want 1008", err, got)
	}
}

// A notifier that stops closes each socket with 1001 before Run returns:
// the process may exit as soon as it has, and would drop the sockets still
// open without a close frame.
func TestStoppingClosesEverySocketBeforeRunReturns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reg := prometheus.NewRegistry()
	n := notifier.New(notifier.Config{AMQPURL: testkit.AMQPURL(), Topology: b.topo, Logger: testkit.Logger(t), Registry: reg},
		b.store, nil, b.authority)
	ctx, stop := context.WithCancel(b.ctx)
	defer stop()
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		n.Run(ctx)
	}()
	srv := httptest.NewServer(n)
	t.Cleanup(srv.Close)
	testkit.Eventually(t, 20*time.Second, n.Ready, "notifier consuming")
	alice := b.dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", "alice")
	closed := make(chan error, 1)
	go func() {
		_, _, err := alice.Read(context.Background()) // answers the close
		closed <- err
	}()
	sockets := func() float64 { return gauge(reg, "crowdpass_ws_sockets") }
	testkit.Eventually(t, 10*time.Second, func() bool { return sockets() == 1 }, "alice's socket served")

	stop()
	select {
	case <-ran:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	if n := sockets(); n != 0 {
		t.Errorf("%v sockets still served once Run returned", n)
	}
	select {
	case err := <-closed:
		if websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Errorf("alice's socket ended with %v, want 1001", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("alice's socket still open after the notifier stopped")
	}
}
