package relay_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/relay"
	"github.com/crowdpass/crowdpass/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type bundle struct {
	db    *testkit.DB
	store *postgres.Store
	topo  broker.Topology
}

func setup(t *testing.T) *bundle {
	t.Helper()
	db := testkit.NewDB(t)
	return &bundle{db: db, store: postgres.NewStore(db.Pool, nil), topo: broker.Topology{Namespace: testkit.Namespace(t)}}
}

// decide makes n decided orders, hence n outbox rows.
func (b *bundle) decide(t *testing.T, n int) {
	t.Helper()
	event := testkit.CreateEvent(t, b.store, 4, n/2+1)
	var reqs []crowdpass.OrderRequest
	for i := range n {
		reqs = append(reqs, testkit.OrderRequest(fmt.Sprintf("c%d", i), "k", event, 0, 1))
	}
	for len(reqs) > 0 {
		k := min(len(reqs), 100)
		if _, err := b.store.DecideOrders(testkit.Context(t), reqs[:k]); err != nil {
			t.Fatal(err)
		}
		reqs = reqs[k:]
	}
}

// listen binds a queue to order_events and counts deliveries per message id.
func (b *bundle) listen(t *testing.T, key string) func() map[string]int {
	t.Helper()
	deliveries := b.consume(t, key)
	var mu sync.Mutex
	seen := map[string]int{}
	go func() {
		for d := range deliveries {
			mu.Lock()
			seen[d.MessageId]++
			mu.Unlock()
		}
	}()
	return func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[string]int, len(seen))
		for k, v := range seen {
			out[k] = v
		}
		return out
	}
}

// consume binds a queue to order_events by key and returns its deliveries.
func (b *bundle) consume(t *testing.T, key string) <-chan amqp.Delivery {
	t.Helper()
	ch := testkit.Channel(t)
	if err := b.topo.Declare(ch); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, key, b.topo.Outcomes(), false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return deliveries
}

func (b *bundle) start(t *testing.T, store relay.Store) *relay.Relay {
	t.Helper()
	return b.startWith(t, store, relay.Config{})
}

// startWith starts a relay configured by cfg where it sets a field.
func (b *bundle) startWith(t *testing.T, store relay.Store, cfg relay.Config) *relay.Relay {
	t.Helper()
	pub := broker.NewPublisher(broker.PublisherConfig{URL: testkit.AMQPURL(), Name: "relay-test", Declare: b.topo.Declare, Logger: testkit.Logger(t)})
	cfg.Exchange, cfg.Logger = b.topo.Outcomes(), testkit.Logger(t)
	cfg.Batch, cfg.Poll = cmp.Or(cfg.Batch, 50), cmp.Or(cfg.Poll, 200*time.Millisecond)
	r := relay.New(cfg, store, pub)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { pub.Run(ctx) })
	wg.Go(func() { r.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

func (b *bundle) unpublished(t *testing.T) int {
	var n int
	if err := b.db.Pool.QueryRow(testkit.Context(t), "SELECT count(*) FROM outbox WHERE published_at IS NULL").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTwoRelaysPublishEveryRowOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seen := b.listen(t, "order.*")
	b.start(t, b.store)
	b.start(t, b.store)
	b.decide(t, 400)

	testkit.Eventually(t, 30*time.Second, func() bool { return b.unpublished(t) == 0 && len(seen()) == 400 }, "400 outcomes published")
	for id, n := range seen() {
		if n != 1 {
			t.Errorf("outbox row %s published %d times", id, n)
		}
	}
}

// crashingStore loses the marks of batches until lose distinct rows have
// lost theirs, as relays killed between publishing and committing would.
type crashingStore struct {
	*postgres.Store
	lose int

	mu   sync.Mutex
	lost map[int64]bool
}

func (s *crashingStore) PublishOutbox(ctx context.Context, from int64, max int, publish func(context.Context, []crowdpass.OutboxMessage) []int64) (int, error) {
	return s.Store.PublishOutbox(ctx, from, max, func(ctx context.Context, rows []crowdpass.OutboxMessage) []int64 {
		confirmed := publish(ctx, rows)
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.lost) >= s.lose {
			return confirmed
		}
		for _, row := range rows {
			s.lost[row.ID] = true
		}
		return nil
	})
}

func TestRowsPublishedButNotMarkedArePublishedAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.decide(t, 20)
	seen := b.listen(t, "order.*")
	b.start(t, &crashingStore{Store: b.store, lose: 20, lost: map[int64]bool{}})

	testkit.Eventually(t, 30*time.Second, func() bool { return b.unpublished(t) == 0 }, "every row published")
	// A row is marked once the broker confirmed its second publish, which
	// can come before the listener received that copy: wait for the copies.
	twice := func() (rows, again int) {
		for _, n := range seen() {
			rows++
			if n >= 2 {
				again++
			}
		}
		return rows, again
	}
	testkit.Eventually(t, 30*time.Second, func() bool { rows, again := twice(); return rows == 20 && again == 20 },
		"20 rows each seen twice")
}

// A relay that stops between its claim and its commit (SIGSTOP, a frozen
// VM) holds the rows it claimed; the database ends its idle transaction
// (postgres.IdleInTransactionTimeout, shortened here), and another relay
// publishes them.
func TestRowsClaimedByAHungRelayArePublishedByAnother(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.decide(t, 10)
	u, err := url.Parse(b.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("idle_in_transaction_session_timeout", "300ms")
	u.RawQuery = q.Encode()
	pool, err := postgres.Open(testkit.Context(t), u.String(), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	hung := &hungPublisher{claimed: make(chan struct{}), release: make(chan struct{})}
	r := relay.New(relay.Config{Exchange: b.topo.Outcomes(), Batch: 50, Poll: 200 * time.Millisecond, Logger: testkit.Logger(t)},
		postgres.NewStore(pool, nil), hung)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	t.Cleanup(func() { close(hung.release); cancel(); wg.Wait() })
	<-hung.claimed // all 10 rows claimed, and held

	b.start(t, b.store)
	testkit.Eventually(t, 30*time.Second, func() bool { return b.unpublished(t) == 0 }, "every row published by the relay that runs")
}

// hungPublisher stands for a relay process stopped mid-publish: its first
// batch never returns until release.
type hungPublisher struct {
	once             sync.Once
	claimed, release chan struct{}
}

func (p *hungPublisher) PublishBatch(_ context.Context, msgs []broker.Message) []error {
	p.once.Do(func() { close(p.claimed) })
	<-p.release
	return make([]error, len(msgs))
}

func (p *hungPublisher) Ready() bool { return true }

func TestOutcomesAreRoutedByEventType(t *testing.T) {
	t.Parallel()
	b := setup(t)
	confirmed := b.listen(t, crowdpass.EventOrderConfirmed)
	rejected := b.listen(t, crowdpass.EventOrderRejected)
	b.start(t, b.store)
	b.decide(t, 10) // 6 confirmed, 4 sold out
	testkit.Eventually(t, 30*time.Second, func() bool { return len(confirmed()) == 6 && len(rejected()) == 4 },
		"6 order.confirmed and 4 order.rejected")
}

// A notifier tells the copy of an outcome its own relay handed over by
// the order in CorrelationId, without decoding the body.
func TestOutcomesNameTheirOrderInCorrelationID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	deliveries := b.consume(t, "order.*")
	b.start(t, b.store)
	b.decide(t, 4)
	for range 4 {
		select {
		case d := <-deliveries:
			var body struct {
				OrderID string `json:"order_id"`
			}
			if err := json.Unmarshal(d.Body, &body); err != nil {
				t.Fatalf("outcome %q: %v", d.Body, err)
			}
			if d.CorrelationId == "" || d.CorrelationId != body.OrderID {
				t.Errorf("outcome of order %s has CorrelationId %q", body.OrderID, d.CorrelationId)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("fewer than 4 outcomes published in 30s")
		}
	}
}

func TestPublishedRowsPastRetentionAreDeleted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.decide(t, 10)
	b.start(t, b.store)
	testkit.Eventually(t, 30*time.Second, func() bool { return b.unpublished(t) == 0 }, "every row published")
	// Half the rows were published eight days ago.
	if _, err := b.db.Pool.Exec(testkit.Context(t),
		"UPDATE outbox SET published_at = now() - interval '8 days' WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 5)"); err != nil {
		t.Fatal(err)
	}
	b.startWith(t, b.store, relay.Config{Retention: 7 * 24 * time.Hour}) // a relay's first housekeeping prunes
	testkit.Eventually(t, 10*time.Second, func() bool {
		var n int
		if err := b.db.Pool.QueryRow(testkit.Context(t), "SELECT count(*) FROM outbox").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 5
	}, "the five old rows deleted, the five recent kept")
}

// Published rows are kept for ever unless a retention is set: the contract
// holds that every decided order has its outcome row in the outbox.
func TestPublishedRowsAreKeptByDefault(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.decide(t, 10)
	// Published long ago, past any retention.
	if _, err := b.db.Pool.Exec(testkit.Context(t), "UPDATE outbox SET published_at = now() - interval '400 days'"); err != nil {
		t.Fatal(err)
	}
	store := &housekeepingCounter{Store: b.store}
	b.start(t, store)
	// The first housekeeping prunes, if anything; it is over once the second has begun.
	testkit.Eventually(t, 10*time.Second, func() bool { return store.calls.Load() >= 2 }, "two housekeepings")
	var n int
	if err := b.db.Pool.QueryRow(testkit.Context(t), "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 10 {
		t.Errorf("%d of 10 outbox rows left after housekeeping with no retention set", n)
	}
}

// housekeepingCounter counts the relay's housekeepings.
type housekeepingCounter struct {
	*postgres.Store
	calls atomic.Int64
}

func (s *housekeepingCounter) OutboxBacklog(ctx context.Context) (int64, time.Time, error) {
	s.calls.Add(1)
	return s.Store.OutboxBacklog(ctx)
}

// A row whose commit sent no notification (or whose publish failed) lies
// below the ids later notifications announce; a relay kept busy by them
// still publishes it, within about Poll, even with no loop ever idle that
// long.
func TestARowNoNotificationAnnouncedIsPublishedWhileOthersKeepComing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	seen := b.listen(t, "order.*")
	b.startWith(t, b.store, relay.Config{Loops: 1, Poll: time.Second})
	event := testkit.CreateEvent(t, b.store, 4, 1000)
	next := 0
	decide := func() {
		next++
		if _, err := b.store.DecideOrders(testkit.Context(t), []crowdpass.OrderRequest{
			testkit.OrderRequest(fmt.Sprintf("c%d", next), "k", event, 0, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	decide()
	testkit.Eventually(t, 30*time.Second, func() bool { return b.unpublished(t) == 0 }, "the first outcome published")

	var silent int64
	if err := b.db.Pool.QueryRow(testkit.Context(t), `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
		VALUES ('order', gen_random_uuid(), 'order.rejected', '{}') RETURNING id`).Scan(&silent); err != nil {
		t.Fatal(err)
	}
	// Notifications with higher ids, every 20 ms (well under Poll), keep
	// the loop from ever idling a whole Poll.
	pace := time.NewTicker(20 * time.Millisecond)
	defer pace.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for seen()[fmt.Sprint(silent)] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("outbox row %d, never announced, not published while others were", silent)
		}
		decide()
		<-pace.C
	}
}

// sweepCounter records when the relay claims from the start of the outbox.
type sweepCounter struct {
	*postgres.Store
	mu    sync.Mutex
	times []time.Time
}

func (s *sweepCounter) PublishOutbox(ctx context.Context, from int64, max int, publish func(context.Context, []crowdpass.OutboxMessage) []int64) (int, error) {
	if from == 0 {
		s.mu.Lock()
		s.times = append(s.times, time.Now())
		s.mu.Unlock()
	}
	return s.Store.PublishOutbox(ctx, from, max, publish)
}

// Claims from the start (which walk every dead index entry of a table not
// vacuumed) come once per Poll from the whole relay, not once per loop.
func TestOnlyOneLoopClaimsFromTheStartEachPoll(t *testing.T) {
	t.Parallel()
	b := setup(t)
	store := &sweepCounter{Store: b.store}
	const poll = 100 * time.Millisecond
	b.startWith(t, store, relay.Config{Loops: 4, Poll: poll})
	testkit.Eventually(t, 20*time.Second, func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return len(store.times) >= 12
	}, "a dozen claims from the start")
	store.mu.Lock()
	defer store.mu.Unlock()
	// Each loop sweeping on its own would leave about Poll/4 between sweeps.
	// Half a Poll leaves room for a loop held up on a busy machine, and for
	// the listener's wake-up when it connects.
	short := 0
	for i := 1; i < 12; i++ {
		if store.times[i].Sub(store.times[i-1]) < poll/2 {
			short++
		}
	}
	if short > 3 {
		t.Errorf("%d of 11 claims from the start came within half a Poll of the one before", short)
	}
}
