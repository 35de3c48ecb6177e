package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/testkit"
	"github.com/crowdpass/crowdpass/worker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type bundle struct {
	db    *testkit.DB
	store *postgres.Store
	topo  broker.Topology
	pub   *testkit.Publisher
}

func setup(t *testing.T) *bundle {
	t.Helper()
	db := testkit.NewDB(t)
	topo := broker.Topology{Namespace: testkit.Namespace(t)}
	return &bundle{
		db:    db,
		store: postgres.NewStore(db.Pool, nil),
		topo:  topo,
		pub:   testkit.NewPublisher(t, topo),
	}
}

// start runs a worker until the test ends and waits for it to stop.
func (b *bundle) start(t *testing.T, cfg worker.Config) *worker.Worker {
	t.Helper()
	return b.startOn(t, cfg, b.store)
}

// startOn runs a worker deciding with decider.
func (b *bundle) startOn(t *testing.T, cfg worker.Config, decider worker.Decider) *worker.Worker {
	t.Helper()
	cfg.AMQPURL = cmpOr(cfg.AMQPURL, testkit.AMQPURL())
	cfg.Topology = b.topo
	cfg.Logger = testkit.Logger(t)
	cfg.RetryMin = 10 * time.Millisecond
	cfg.RetryMax = 200 * time.Millisecond
	w := worker.New(cfg, decider)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker stopped with %v", err)
		}
	})
	return w
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (b *bundle) waitDecided(t *testing.T, n int) {
	t.Helper()
	testkit.Eventually(t, 60*time.Second, func() bool { return testkit.CountDecided(t, b.db.Pool) >= n },
		"%d orders decided", n)
}

func (b *bundle) countBy(t *testing.T, status crowdpass.OrderStatus, reason crowdpass.Reason) int {
	t.Helper()
	var n int
	err := b.db.Pool.QueryRow(testkit.Context(t),
		"SELECT count(*) FROM orders WHERE status = $1 AND coalesce(reason, '') = $2", status, reason).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestLastTicketIsSoldOnceAcrossFourWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 50)

	reqs := make([]crowdpass.OrderRequest, 1000)
	for i := range reqs {
		reqs[i] = testkit.OrderRequest(fmt.Sprintf("buyer-%d", i), "k", event, 0, 1)
	}
	b.pub.Orders(reqs...)
	for i := range 4 {
		b.start(t, worker.Config{Batch: 10 + 20*i, Name: fmt.Sprintf("worker-%d", i)})
	}
	b.waitDecided(t, 1000)

	if got := b.countBy(t, crowdpass.StatusConfirmed, ""); got != 50 {
		t.Errorf("confirmed orders = %d, want 50", got)
	}
	if got := b.countBy(t, crowdpass.StatusRejected, crowdpass.ReasonSoldOut); got != 950 {
		t.Errorf("sold_out orders = %d, want 950", got)
	}
	testkit.CheckInvariants(t, b.db.Pool)
}

func TestRedeliveredOrderIsDecidedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 10)
	req := testkit.OrderRequest("alice", "click-1", event, 0, 2)
	sentinel := testkit.OrderRequest("bob", "click-1", event, 0, 1)

	// The same message three times, then one that tells us they were all handled.
	b.pub.Orders(req, req, req, sentinel)
	b.start(t, worker.Config{Batch: 1})
	b.waitDecided(t, 2)

	b.assertDecidedOnce(t, req, 2)
	testkit.CheckInvariants(t, b.db.Pool)
}

func TestChannelClosedBeforeAckRedeliversWithoutEffect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 10)
	proxy, amqpURL := testkit.NewURLProxy(t, testkit.AMQPURL())
	req := testkit.OrderRequest("alice", "click-1", event, 0, 3)
	sentinel := testkit.OrderRequest("bob", "click-1", event, 0, 1)

	var cuts atomic.Int32
	w := b.start(t, worker.Config{Batch: 1, AMQPURL: amqpURL})
	worker.SetAfterDecide(w, func() {
		if cuts.Add(1) == 1 {
			proxy.Cut() // the transaction committed; the ack will never arrive
		}
	})
	b.pub.Orders(req)
	testkit.Eventually(t, 30*time.Second, func() bool { return cuts.Load() >= 2 }, "the order redelivered after the cut")
	b.pub.Orders(sentinel)
	b.waitDecided(t, 2)

	b.assertDecidedOnce(t, req, 3)
	testkit.CheckInvariants(t, b.db.Pool)
}

func (b *bundle) assertDecidedOnce(t *testing.T, req crowdpass.OrderRequest, tickets int) {
	t.Helper()
	ctx := testkit.Context(t)
	var orders, ticketRows, outboxRows int
	err := b.db.Pool.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM orders WHERE customer_id = $1 AND idempotency_key = $2),
		       (SELECT count(*) FROM tickets WHERE order_id = $3),
		       (SELECT count(*) FROM outbox WHERE aggregate_id = $3)`,
		req.CustomerID, req.IdempotencyKey, req.OrderID).Scan(&orders, &ticketRows, &outboxRows)
	if err != nil {
		t.Fatal(err)
	}
	if orders != 1 || ticketRows != tickets || outboxRows != 1 {
		t.Errorf("orders, tickets, outbox rows = %d, %d, %d; want 1, %d, 1", orders, ticketRows, outboxRows, tickets)
	}
}

func TestLimitHoldsAcrossCategoriesUnderConcurrency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 100, 100)

	var reqs []crowdpass.OrderRequest
	for i := range 40 {
		reqs = append(reqs, testkit.OrderRequest("greedy", fmt.Sprintf("k-%d", i), event, i%2, 1+i%2))
	}
	for i := range 4 {
		b.start(t, worker.Config{Batch: 1 + 5*i})
	}
	// Publish concurrently so the orders interleave across the workers.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { b.pub.Orders(reqs[i*10 : (i+1)*10]...) })
	}
	wg.Wait()
	b.waitDecided(t, len(reqs))

	var held int
	err := b.db.Pool.QueryRow(testkit.Context(t),
		"SELECT coalesce(sum(quantity), 0) FROM orders WHERE customer_id = 'greedy' AND status = 'confirmed'").Scan(&held)
	if err != nil {
		t.Fatal(err)
	}
	if held > 4 {
		t.Errorf("customer holds %d tickets, max_per_customer is 4", held)
	}
	if got := b.countBy(t, crowdpass.StatusRejected, crowdpass.ReasonLimitExceeded); got < len(reqs)-4 {
		t.Errorf("limit_exceeded orders = %d, want at least %d", got, len(reqs)-4)
	}
	testkit.CheckInvariants(t, b.db.Pool)
}

func TestPoisonMessageIsDeadLetteredAndTheNextOrderDecided(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 10)
	unknown := testkit.OrderRequest("mallory", "k", event, 0, 1)
	unknown.CategoryID = unknown.OrderID // a category that does not exist

	b.pub.Raw([]byte("{not json"), []byte(`{"order_id": 42}`))
	b.pub.Orders(unknown, testkit.OrderRequest("alice", "k", event, 0, 1))
	b.start(t, worker.Config{Batch: 10})

	b.waitDecided(t, 1)
	testkit.Eventually(t, 30*time.Second, func() bool { return b.pub.QueueDepth(b.topo.DeadLetters()) == 3 },
		"three messages in the dead-letter queue")
	if got := b.countBy(t, crowdpass.StatusConfirmed, ""); got != 1 {
		t.Errorf("confirmed = %d, want 1", got)
	}
	testkit.CheckInvariants(t, b.db.Pool)
}

func TestBrokerConnectionLossLosesNoOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 1000)
	proxy, amqpURL := testkit.NewURLProxy(t, testkit.AMQPURL())
	w := b.start(t, worker.Config{Batch: 5, Prefetch: 10, Rate: 500, AMQPURL: amqpURL})

	const total = 300
	reqs := make([]crowdpass.OrderRequest, total)
	for i := range reqs {
		reqs[i] = testkit.OrderRequest(fmt.Sprintf("buyer-%d", i), "k", event, 0, 1)
	}
	b.pub.Orders(reqs[:total/2]...)
	testkit.Eventually(t, 30*time.Second, func() bool { return testkit.CountDecided(t, b.db.Pool) >= 20 }, "some orders decided")
	proxy.Cut()
	b.pub.Orders(reqs[total/2:]...)
	b.waitDecided(t, total)

	testkit.Eventually(t, 10*time.Second, w.Ready, "worker ready again")
	if got := b.countBy(t, crowdpass.StatusConfirmed, ""); got != total {
		t.Errorf("confirmed = %d, want %d", got, total)
	}
	testkit.CheckInvariants(t, b.db.Pool)
}

func TestDatabaseOutageIsRiddenOut(t *testing.T) {
	t.Parallel()
	db := testkit.NewDB(t)
	proxy, dbURL := testkit.NewURLProxy(t, db.URL)
	pool, err := postgres.Open(testkit.Context(t), dbURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	topo := broker.Topology{Namespace: testkit.Namespace(t)}
	b := &bundle{db: db, store: postgres.NewStore(pool, nil), topo: topo, pub: testkit.NewPublisher(t, topo)}
	event := testkit.CreateEvent(t, postgres.NewStore(db.Pool, nil), 4, 100)
	w := b.start(t, worker.Config{Batch: 10})

	b.pub.Orders(testkit.OrderRequest("first", "k", event, 0, 1))
	b.waitDecided(t, 1)
	proxy.Refuse()
	reqs := make([]crowdpass.OrderRequest, 50)
	for i := range reqs {
		reqs[i] = testkit.OrderRequest(fmt.Sprintf("buyer-%d", i), "k", event, 0, 1)
	}
	b.pub.Orders(reqs...)
	testkit.Eventually(t, 10*time.Second, func() bool { return !w.Ready() }, "worker reports the database down")
	proxy.Allow()
	b.waitDecided(t, 51)
	testkit.Eventually(t, 10*time.Second, w.Ready, "worker ready again")
	testkit.CheckInvariants(t, db.Pool)
}

// A worker takes no order while a lock holds its tables against writes:
// each order it held would go back to the queue one delivery nearer the
// dead-letter queue every time it stopped or died meanwhile.
func TestAWorkerTakesNoOrderWhileItsTablesAreLocked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 10)
	unlock := lockTables(t, b.db, "orders")
	reqs := []crowdpass.OrderRequest{
		testkit.OrderRequest("alice", "k", event, 0, 1),
		testkit.OrderRequest("bob", "k", event, 0, 1),
		testkit.OrderRequest("carol", "k", event, 0, 1),
	}
	b.pub.Orders(reqs...)
	decider := &checkCounter{Store: b.store}
	w := b.startOn(t, worker.Config{Batch: 10}, decider)
	testkit.Eventually(t, 10*time.Second, func() bool { return decider.checks.Load() > 2 }, "the worker checked its database again")
	if w.Ready() {
		t.Error("worker ready while its tables are locked")
	}
	if got := b.pub.QueueDepth(b.topo.Orders()); got != len(reqs) {
		t.Errorf("%d of %d orders ready in the queue while the worker cannot decide; it took the others", got, len(reqs))
	}
	unlock()
	b.waitDecided(t, len(reqs))
	testkit.Eventually(t, 10*time.Second, w.Ready, "worker ready once its tables are free")
	testkit.CheckInvariants(t, b.db.Pool)
}

// A worker stopped mid-decision holds its categories' rows, which every
// decision waits for until the server ends its idle transaction: a worker
// starting meanwhile takes no order, or each of its restarts would bring
// the orders it held one delivery nearer the dead-letter queue.
func TestAWorkerTakesNoOrderWhileAStoppedDecisionHoldsItsRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 10)
	tx, err := b.db.Pool.Begin(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	var pid int
	if err := tx.QueryRow(testkit.Context(t), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(testkit.Context(t), "SELECT 1 FROM ticket_categories FOR NO KEY UPDATE"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { // as a stopped worker's session looks
		var idle bool
		err := b.db.Pool.QueryRow(testkit.Context(t), "SELECT state = 'idle in transaction' AND state_change < now() - interval '1 second' FROM pg_stat_activity WHERE pid = $1", pid).Scan(&idle)
		return err == nil && idle
	}, "the holding session idle in its transaction")
	reqs := []crowdpass.OrderRequest{testkit.OrderRequest("alice", "k", event, 0, 1), testkit.OrderRequest("bob", "k", event, 0, 1)}
	b.pub.Orders(reqs...)
	decider := &checkCounter{Store: b.store}
	w := b.startOn(t, worker.Config{Batch: 10}, decider)
	testkit.Eventually(t, 10*time.Second, func() bool { return decider.checks.Load() > 2 }, "the worker checked its database again")
	if got := b.pub.QueueDepth(b.topo.Orders()); got != len(reqs) {
		t.Errorf("%d of %d orders ready in the queue while a stopped decision holds the rows; the worker took the others", got, len(reqs))
	}
	if err := tx.Rollback(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	b.waitDecided(t, len(reqs))
	testkit.Eventually(t, 10*time.Second, w.Ready, "worker ready once the rows are free")
}

// A decision held by a stalled database makes the worker read as not
// ready long before the decision's own timeout.
func TestAStalledDecisionMakesTheWorkerUnready(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 10)
	w := b.start(t, worker.Config{Batch: 1, StalledAfter: 100 * time.Millisecond})
	testkit.Eventually(t, 10*time.Second, w.Ready, "worker ready")
	unlock := lockTables(t, b.db, "ticket_categories")
	b.pub.Orders(testkit.OrderRequest("alice", "k", event, 0, 1))
	testkit.Eventually(t, 10*time.Second, func() bool { return !w.Ready() }, "worker not ready while its decision waits for a lock")
	unlock()
	b.waitDecided(t, 1)
	testkit.Eventually(t, 10*time.Second, w.Ready, "worker ready again")
}

// A check that fails for another reason than a lock or an unreachable
// database (missing privileges, say) does not keep the worker from orders.
func TestAWorkerWhoseCheckFailsForGoodStillDecides(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 10)
	b.pub.Orders(testkit.OrderRequest("alice", "k", event, 0, 1))
	w := b.startOn(t, worker.Config{}, deniedCheck{b.store})
	b.waitDecided(t, 1)
	testkit.Eventually(t, 10*time.Second, w.Ready, "worker ready")
}

// deniedCheck's check fails as it does without the privilege to lock.
type deniedCheck struct{ *postgres.Store }

func (deniedCheck) CanDecide(context.Context) error {
	return errors.New("ERROR: permission denied for table orders (SQLSTATE 42501)")
}

// lockTables holds an ACCESS EXCLUSIVE lock on tables until the returned
// func (or the test's end) releases it.
func lockTables(t *testing.T, db *testkit.DB, tables string) (unlock func()) {
	t.Helper()
	tx, err := db.Pool.Begin(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	// Held as long as the test wants, on a slow machine too.
	if _, err := tx.Exec(testkit.Context(t), "SET LOCAL idle_in_transaction_session_timeout = 0"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(testkit.Context(t), "LOCK TABLE "+tables+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unlock = func() { once.Do(func() { _ = tx.Rollback(context.Background()) }) }
	t.Cleanup(unlock)
	return unlock
}

// checkCounter counts the worker's checks that it can decide.
type checkCounter struct {
	*postgres.Store
	checks atomic.Int64
}

func (c *checkCounter) CanDecide(ctx context.Context) error {
	c.checks.Add(1)
	return c.Store.CanDecide(ctx)
}

func TestQueuedOrdersAreDecidedInBatches(t *testing.T) {
	t.Parallel()
	b := setup(t)
	event := testkit.CreateEvent(t, b.store, 4, 1000)
	reqs := make([]crowdpass.OrderRequest, 500)
	for i := range reqs {
		reqs[i] = testkit.OrderRequest(fmt.Sprintf("buyer-%d", i), "k", event, 0, 1)
	}
	b.pub.Orders(reqs...)
	b.start(t, worker.Config{Batch: 100})
	b.waitDecided(t, len(reqs))

	// Every order of a batch shares its transaction's processed_at.
	var transactions int
	if err := b.db.Pool.QueryRow(testkit.Context(t), "SELECT count(DISTINCT processed_at) FROM orders").Scan(&transactions); err != nil {
		t.Fatal(err)
	}
	if transactions > 25 {
		t.Errorf("500 queued orders took %d transactions; batches of up to 100 should need about 5", transactions)
	}
}
