package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/api"
	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/testkit"
)

// buy posts n orders from distinct customers, concurrency at a time, and
// returns the answers by status.
func (h *harness) buy(prefix string, n, concurrency int, event crowdpass.Event, category int) map[int]int {
	h.t.Helper()
	var mu sync.Mutex
	statuses := map[int]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				r := h.order(fmt.Sprintf("%s-%d", prefix, i), "k", orderJSON(event, category, 1))
				mu.Lock()
				statuses[r.status]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return statuses
}

func TestOrdersAreAcceptedWhileTheDatabaseIsLocked(t *testing.T) {
	t.Parallel()
	h := setup(t, options{workers: 2})
	event := h.event(4, 5000)

	// Hold every order table, as a stalled database would.
	ctx := testkit.Context(t)
	tx := h.lock("orders, tickets, outbox, ticket_categories")
	const n = 2000
	statuses := h.buy("locked", n, 32, event, 0)
	if statuses[http.StatusAccepted] != n {
		t.Fatalf("answers while locked: %v, want %d × 202", statuses, n)
	}
	var decided int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&decided); err != nil {
		t.Fatal(err)
	}
	if decided != 0 {
		t.Fatalf("%d orders decided through the lock", decided)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 60*time.Second, func() bool { return testkit.CountDecided(t, h.db.Pool) == n }, "all %d decided", n)
	if c := h.countOrders("status = 'confirmed'"); c != n {
		t.Errorf("confirmed = %d, want %d", c, n)
	}
	testkit.CheckInvariants(t, h.db.Pool)
}

// POST /events waits for a stalled database only so long (WriteTimeout,
// 3 s here), then answers 503 with a Retry-After, and nothing is created.
func TestCreatingAnEventWhileTheDatabaseIsLockedAnswersUnavailable(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	ctx := testkit.Context(t)
	tx := h.lock("events")
	admin, _ := h.authority.Issue("root", true, time.Hour)
	r := h.do(http.MethodPost, "/events", http.Header{"Authorization": {"Bearer " + admin}, "Content-Type": {"application/json"}},
		[]byte(`{"name":"Final","categories":[{"name":"A","capacity":10}]}`))
	if r.status != http.StatusServiceUnavailable || r.problem(t)["code"] != string(crowdpass.EUnavailable) || r.header.Get("Retry-After") == "" {
		t.Fatalf("POST /events while the database is locked: %d %s, want 503 unavailable with Retry-After", r.status, r.body)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := h.db.Pool.QueryRow(ctx, "SELECT count(*) FROM events").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d events after a 503, want 0", n)
	}
}

func TestBrokerDownAnswersUnavailableAndGivesTheStockBack(t *testing.T) {
	t.Parallel()
	h := setup(t, options{proxyAMQP: true})
	event := h.event(4, 10)
	cat := event.Categories[0].ID

	h.amqpProxy.Refuse()
	testkit.Eventually(t, 10*time.Second, func() bool { return !h.publisher.Ready() }, "publisher disconnected")
	r := h.order("alice", "k", orderJSON(event, 0, 2))
	if r.status != http.StatusServiceUnavailable || r.problem(t)["code"] != string(crowdpass.EUnavailable) || r.header.Get("Retry-After") == "" {
		t.Fatalf("broker down: %d %v %s", r.status, r.header, r.body)
	}
	h.waitGate(cat, 10)
	// The API cannot work: /readyz says so, in its own document, not a problem.
	ready := h.do(http.MethodGet, "/readyz", nil, nil)
	var doc struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	if ready.status != http.StatusServiceUnavailable || ready.header.Get("Content-Type") != "application/json" ||
		json.Unmarshal(ready.body, &doc) != nil || doc.Status != "down" || doc.Checks["broker"] != "down" {
		t.Errorf("readyz with the broker down: %d %v %s", ready.status, ready.header, ready.body)
	}

	h.amqpProxy.Allow()
	testkit.Eventually(t, 20*time.Second, h.publisher.Ready, "publisher reconnected")
	// The same key goes through: nothing was left in flight.
	if r := h.order("alice", "k", orderJSON(event, 0, 2)); r.status != http.StatusAccepted || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("after recovery: %d %s", r.status, r.body)
	}
	h.waitGate(cat, 8)
}

func TestPublishInterruptedMidFlightAnswersUnavailable(t *testing.T) {
	t.Parallel()
	h := setup(t, options{proxyAMQP: true})
	event := h.event(4, 1000)
	// Cut the connection repeatedly while orders stream in: every answer is
	// a 202 or a 503. A 503 gave its stock back if its order never left the
	// process, else kept it, its order perhaps queued.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
				h.amqpProxy.Cut()
			}
		}
	})
	statuses := h.buy("cut", 300, 16, event, 0)
	close(stop)
	wg.Wait()
	if statuses[http.StatusAccepted]+statuses[http.StatusServiceUnavailable] != 300 {
		t.Fatalf("answers %v", statuses)
	}
	testkit.Eventually(t, 20*time.Second, h.publisher.Ready, "publisher reconnected")
	// Every buyer retries until answered 202: each key then has its one
	// ticket taken at the gate, none twice, none given back for good.
	for i := 1; i <= 300; i++ {
		var r reply
		testkit.Eventually(t, 20*time.Second, func() bool {
			r = h.order(fmt.Sprintf("cut-%d", i), "k", orderJSON(event, 0, 1))
			return r.status != http.StatusConflict && r.status != http.StatusServiceUnavailable
		}, "cut-%d answered", i)
		if r.status != http.StatusAccepted {
			t.Fatalf("cut-%d's retry: %d %s", i, r.status, r.body)
		}
	}
	// No worker runs, so the queue never drains and the reconcile never
	// corrects the gate: what it holds is the admissions' own accounting.
	h.waitGate(event.Categories[0].ID, 1000-300)
}

// A publish the broker received but did not confirm in time may be queued:
// its 503 keeps the ticket it took and its attempt in flight, so that the
// retry resolves to that order, with its acceptance time, and the ticket
// never goes to another buyer.
func TestAnUnconfirmedOrderKeepsItsTicketForItsRetry(t *testing.T) {
	t.Parallel()
	h := setup(t, options{proxyAMQP: true, publishTimeout: 300 * time.Millisecond, workers: 1})
	event := h.event(4, 1)
	h.waitGate(event.Categories[0].ID, 1)
	h.amqpProxy.Stall()
	first := h.order("alice", "k", orderJSON(event, 0, 1))
	h.amqpProxy.Resume()
	if first.status != http.StatusServiceUnavailable || first.problem(t)["code"] != string(crowdpass.EUnavailable) || first.header.Get("Retry-After") == "" {
		t.Fatalf("alice, unconfirmed: %d %v %s", first.status, first.header, first.body)
	}
	if r := h.order("bob", "k", orderJSON(event, 0, 1)); r.status != http.StatusConflict || r.problem(t)["code"] != string(crowdpass.ESoldOut) {
		t.Fatalf("bob, after alice's unconfirmed order: %d %s, want sold_out", r.status, r.body)
	}
	r := h.orderOnceOutOfFlight("alice", "k", orderJSON(event, 0, 1))
	if r.status != http.StatusAccepted {
		t.Fatalf("alice's retry: %d %s, want her order", r.status, r.body)
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return testkit.CountDecided(t, h.db.Pool) == 1 }, "alice's order decided")
	var created time.Time
	if err := h.db.Pool.QueryRow(testkit.Context(t), "SELECT created_at FROM orders WHERE customer_id = 'alice' AND status = 'confirmed'").Scan(&created); err != nil {
		t.Fatal(err)
	}
	if at := r.problem(t)["accepted_at"]; at != crowdpass.NewTime(created).String() {
		t.Errorf("alice's 202 accepted at %v, her order created at %s", at, crowdpass.NewTime(created))
	}
}

func TestUnroutableOrderAnswersUnavailableAndHeals(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	event := h.event(4, 10)
	deleteQueue(t, h.topo)

	r := h.order("alice", "k", orderJSON(event, 0, 1))
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("unroutable: %d %s", r.status, r.body)
	}
	h.waitGate(event.Categories[0].ID, 10)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return h.order("alice", "k", orderJSON(event, 0, 1)).status == http.StatusAccepted
	}, "orders accepted again once the queue is declared again")
}

func deleteQueue(t *testing.T, topo broker.Topology) {
	t.Helper()
	if _, err := testkit.Channel(t).QueueDelete(topo.Orders(), false, false, false); err != nil {
		t.Fatal(err)
	}
}

func TestRedisWipedMidSaleNeitherOversellsNorStrandsTickets(t *testing.T) {
	t.Parallel()
	h := setup(t, options{workers: 2})
	const capacity = 200
	event := h.event(4, capacity)
	statuses := h.buy("early", 150, 16, event, 0)
	h.loseRedisKeys()
	for k, v := range h.buy("late", 300, 16, event, 0) {
		statuses[k] += v
	}
	for k := range statuses {
		if k != http.StatusAccepted && k != http.StatusConflict {
			t.Errorf("unexpected answers: %v", statuses)
		}
	}
	// Demand lasts: buyers keep coming until the database says sold out.
	for round := 0; ; round++ {
		testkit.Eventually(t, 30*time.Second, func() bool {
			return testkit.CountDecided(t, h.db.Pool) == h.acceptedCount()
		}, "accepted orders decided")
		if h.countOrders("status = 'confirmed'") == capacity || round == 20 {
			break
		}
		h.buy(fmt.Sprintf("round%d", round), 50, 8, event, 0)
	}
	if c := h.countOrders("status = 'confirmed'"); c != capacity {
		t.Errorf("confirmed = %d, want all %d sold", c, capacity)
	}
	testkit.CheckInvariants(t, h.db.Pool)
}

// Once Redis has lost a key, retries of it on the API that accepted its
// order, even at once and with the gate sold out meanwhile, get that
// order's 202 again, byte for byte and marked replayed; another payload is
// still a mismatch; nothing is queued again.
func TestAKeyRedisLostIsAnsweredWithItsOrder(t *testing.T) {
	t.Parallel()
	h := setup(t, options{}) // no workers: the queue shows what was sent
	event := h.event(4, 1)
	first := h.order("alice", "k", orderJSON(event, 0, 1))
	if first.status != http.StatusAccepted {
		t.Fatalf("first order: %d %s", first.status, first.body)
	}
	h.loseRedisKeys()
	// The gate is rebuilt from PostgreSQL's remaining less alice's order,
	// queued here and not decided yet: sold out, and bob is refused.
	h.waitGate(event.Categories[0].ID, 0)
	if r := h.order("bob", "k", orderJSON(event, 0, 1)); r.status != http.StatusConflict {
		t.Fatalf("bob's order: %d %s", r.status, r.body)
	}
	replies := h.orders(8, "alice", "k", orderJSON(event, 0, 1))
	for _, r := range replies {
		if r.status != http.StatusAccepted || !bytes.Equal(r.body, first.body) || r.header.Get("Idempotent-Replayed") != "true" ||
			r.header.Get("Location") != first.header.Get("Location") {
			t.Errorf("a retry after Redis lost the key: %d %s %v, want the first 202 replayed (%s)", r.status, r.body, r.header, first.body)
		}
	}
	if r := h.order("alice", "k", orderJSON(event, 0, 2)); r.status != http.StatusUnprocessableEntity {
		t.Errorf("another payload under the key: %d %s", r.status, r.body)
	}
	// The 202 is back in Redis, for every API process to replay.
	rec, err := h.gate.Lookup(testkit.Context(t), crowdpass.OrderID("alice", "k"))
	if err != nil || rec.InFlight || !bytes.Equal(rec.Answer.Body, first.body) {
		t.Errorf("alice's record in Redis: %+v, %v", rec, err)
	}
	q, err := testkit.Channel(t).QueueDeclarePassive(h.topo.Orders(), true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 1 {
		t.Errorf("%d orders queued for alice's key", q.Messages)
	}
}

// A key another API process accepted, and a worker decided, is known here
// by its outcome (the notifier of this process passes it to Recent.Decided):
// once Redis has lost the key, a retry here is answered with that order's
// 202, not sold_out, though the gate has no ticket left.
func TestAKeyDecidedElsewhereIsAnsweredWithItsOrderAfterRedisLostIt(t *testing.T) {
	t.Parallel()
	h := setup(t, options{workers: 1})
	event := h.event(4, 1)
	cat := event.Categories[0]
	adm := h.acceptedElsewhere(event, "alice", "k") // and answered there
	testkit.Eventually(t, 20*time.Second, func() bool { return testkit.CountDecided(t, h.db.Pool) == 1 }, "decided")
	h.recent.Decided(h.outcome(adm.OrderID)) // as the notifier passes it on
	h.loseRedisKeys()
	h.waitGate(cat.ID, 0) // rebuilt from PostgreSQL: sold out
	r := h.order("alice", "k", orderJSON(event, 0, 1))
	if r.status != http.StatusAccepted || orderID(t, r) != adm.OrderID.String() || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("a retry after Redis lost a key decided elsewhere: %d %s, want its order's 202 replayed", r.status, r.body)
	}
	if at := r.problem(t)["accepted_at"]; at != adm.AcceptedAt.String() {
		t.Errorf("replayed 202 accepted at %v, want %s", at, adm.AcceptedAt)
	}
	if n := h.countOrders("customer_id = 'alice'"); n != 1 {
		t.Errorf("%d orders for alice's key", n)
	}
}

// After Redis lost a key, another payload sent under it to another API
// process is in flight there; the same payload sent here, where the first
// order is remembered, is told so, never a 5xx.
func TestAnotherPayloadInFlightElsewhereAfterALossIsInProgress(t *testing.T) {
	t.Parallel()
	h := setup(t, options{canary: 24 * time.Hour}) // elsewhere acts before the write-back
	event := h.event(4, 10)
	if r := h.order("alice", "k", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("first order: %d %s", r.status, r.body)
	}
	h.loseRedisKeys()
	// The other process's admission of payload B, as its gate call leaves it.
	b := crowdpass.OrderPayload{EventID: event.ID, CategoryID: event.Categories[0].ID, Quantity: 2}
	elsewhere := crowdpass.Admission{OrderID: crowdpass.OrderID("alice", "k"), CustomerID: "alice", Fingerprint: b.Fingerprint(),
		CategoryID: b.CategoryID, Quantity: b.Quantity}
	if res, err := h.gate.Admit(testkit.Context(t), elsewhere, "elsewhere"); err != nil || res.Verdict != crowdpass.Admitted {
		t.Fatalf("the other process's admission: %+v, %v", res, err)
	}
	if r := h.order("alice", "k", orderJSON(event, 0, 2)); r.status != http.StatusConflict || !bytes.Contains(r.body, []byte(`"request_in_progress"`)) {
		t.Errorf("payload B here while in flight elsewhere: %d %s", r.status, r.body)
	}
}

// acceptedCount is the orders the broker confirmed, counted from the queue's
// side: those decided plus those still waiting.
func (h *harness) acceptedCount() int {
	h.t.Helper()
	q, err := testkit.Channel(h.t).QueueDeclarePassive(h.topo.Orders(), true, false, false, false, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return testkit.CountDecided(h.t, h.db.Pool) + q.Messages
}

func TestRedisDownOrdersTakeTheSlowPath(t *testing.T) {
	t.Parallel()
	h := setup(t, options{workers: 1, proxyRedis: true})
	event := h.event(4, 10)
	h.redisProxy.Refuse()
	first := h.order("alice", "k", orderJSON(event, 0, 1))
	again := h.order("alice", "k", orderJSON(event, 0, 1))
	if first.status != http.StatusAccepted || again.status != http.StatusAccepted || orderID(t, first) != orderID(t, again) {
		t.Fatalf("slow path: %d %s / %d %s", first.status, first.body, again.status, again.body)
	}
	if !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("a retry on the slow path was not the first answer replayed: %s / %s", first.body, again.body)
	}
	r := h.do(http.MethodGet, "/readyz", nil, nil)
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"degraded"`)) {
		t.Errorf("readyz with redis down: %d %s", r.status, r.body)
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return testkit.CountDecided(t, h.db.Pool) == 1 }, "decided")
	if n := h.countOrders("customer_id = 'alice'"); n != 1 {
		t.Errorf("%d orders for one key on the slow path", n)
	}
	// A double click on the slow path: this process keeps the two apart
	// itself, so every 202 is the first one.
	clicks := h.orders(8, "carol", "k", orderJSON(event, 0, 1))
	var accepted []byte
	for _, c := range clicks {
		switch {
		case c.status == http.StatusConflict && c.problem(t)["code"] == string(crowdpass.ERequestInProgress):
		case c.status != http.StatusAccepted:
			t.Errorf("a click on the slow path: %d %s", c.status, c.body)
		case accepted == nil:
			accepted = c.body
		case !bytes.Equal(c.body, accepted):
			t.Errorf("two 202s for one key on the slow path: %s / %s", accepted, c.body)
		}
	}
	h.redisProxy.Allow()
	testkit.Eventually(t, 10*time.Second, func() bool {
		return h.order("bob", "k", orderJSON(event, 0, 1)).status == http.StatusAccepted &&
			h.order("bob", "k", orderJSON(event, 0, 1)).header.Get("Idempotent-Replayed") == "true"
	}, "the gate back on")
}

// When Redis fails while an order is being queued, a retry of its key is
// in progress here (after waiting for the first, in vain), not queued a
// second time on the slow path with its own 202.
func TestARetryWithoutRedisWaitsForTheGatedAttemptInFlight(t *testing.T) {
	t.Parallel()
	h := setup(t, options{proxyAMQP: true, proxyRedis: true, publishTimeout: 20 * time.Second, inProgressWait: 200 * time.Millisecond})
	event := h.event(4, 10)
	h.amqpProxy.Stall() // the first attempt's publish waits
	first := make(chan reply, 1)
	go func() { first <- h.order("alice", "k", orderJSON(event, 0, 1)) }()
	testkit.Eventually(t, 10*time.Second, func() bool {
		rec, err := h.gate.Lookup(testkit.Context(t), crowdpass.OrderID("alice", "k"))
		return err == nil && rec.InFlight
	}, "the first attempt admitted")
	h.redisProxy.Refuse()
	if r := h.order("alice", "k", orderJSON(event, 0, 1)); r.status != http.StatusConflict || r.problem(t)["code"] != string(crowdpass.ERequestInProgress) {
		t.Errorf("a retry without Redis while the first is queueing: %d %s, want request_in_progress", r.status, r.body)
	}
	if r := h.order("alice", "k", orderJSON(event, 0, 2)); r.status != http.StatusUnprocessableEntity {
		t.Errorf("another payload without Redis while the first is queueing: %d %s, want 422", r.status, r.body)
	}
	h.amqpProxy.Resume()
	if r := <-first; r.status != http.StatusAccepted {
		t.Fatalf("the first attempt: %d %s", r.status, r.body)
	}
}

// An order decided before the database stalled reads as decided, from the
// outcome this process saw, not as pending: an outcome is a committed fact.
func TestADecidedOrderReadsAsDecidedWhileTheDatabaseIsLocked(t *testing.T) {
	t.Parallel()
	// A read of the database waits for the lock as long as the test does:
	// the decided order is answered from memory, never after a timeout.
	h := setup(t, options{workers: 1, readTimeout: time.Hour})
	event := h.event(4, 10)
	if r := h.order("alice", "k", orderJSON(event, 0, 2)); r.status != http.StatusAccepted {
		t.Fatalf("order: %d %s", r.status, r.body)
	}
	id := crowdpass.OrderID("alice", "k")
	testkit.Eventually(t, 20*time.Second, func() bool { return testkit.CountDecided(t, h.db.Pool) == 1 }, "decided")
	fromDB := h.do(http.MethodGet, "/orders/"+id.String(), http.Header{"Authorization": {"Bearer " + h.token("alice")}}, nil)
	h.recent.Decided(h.outcome(id)) // as the notifier passes it on
	h.lock("orders, tickets")
	r := h.do(http.MethodGet, "/orders/"+id.String(), http.Header{"Authorization": {"Bearer " + h.token("alice")}}, nil)
	var got crowdpass.Order
	if r.status != http.StatusOK || json.Unmarshal(r.body, &got) != nil || got.Status != crowdpass.StatusConfirmed || len(got.Tickets) != 2 || got.ProcessedAt == nil {
		t.Errorf("GET a confirmed order while the database is locked: %d %s, want it confirmed with 2 tickets", r.status, r.body)
	}
	if !bytes.Equal(r.body, fromDB.body) {
		t.Errorf("GET from memory:\n%s\nfrom the database:\n%s", r.body, fromDB.body)
	}
	if r := h.do(http.MethodGet, "/orders/"+id.String(), http.Header{"Authorization": {"Bearer " + h.token("bob")}}, nil); r.status != http.StatusNotFound {
		t.Errorf("another customer read it: %d %s", r.status, r.body)
	}
}

func TestOrderAcceptedWithoutRedisReadsAsPending(t *testing.T) {
	t.Parallel()
	h := setup(t, options{proxyRedis: true})
	event := h.event(4, 10)
	h.redisProxy.Refuse()
	accepted := h.order("alice", "k", orderJSON(event, 0, 2))
	if accepted.status != http.StatusAccepted {
		t.Fatalf("slow path: %d %s", accepted.status, accepted.body)
	}
	id := orderID(t, accepted)
	r := h.do(http.MethodGet, "/orders/"+id, http.Header{"Authorization": {"Bearer " + h.token("alice")}}, nil)
	var got struct {
		OrderID    string `json:"order_id"`
		Status     string `json:"status"`
		Quantity   int    `json:"quantity"`
		AcceptedAt string `json:"accepted_at"`
	}
	if r.status != http.StatusOK || json.Unmarshal(r.body, &got) != nil ||
		got.OrderID != id || got.Status != "pending" || got.Quantity != 2 || got.AcceptedAt == "" {
		t.Errorf("GET /orders/{id} of a pending order without redis: %d %s", r.status, r.body)
	}
	if r := h.do(http.MethodGet, "/orders/"+id, http.Header{"Authorization": {"Bearer " + h.token("bob")}}, nil); r.status != http.StatusNotFound {
		t.Errorf("another customer read the order: %d %s", r.status, r.body)
	}
}

// An API that dies after queueing an order but before answering leaves its
// key in flight. A retry takes the key over and gets a 202 for the one
// order, even though the gate has no stock left by then: never a sold_out
// for a key whose order exists. It does so once the in-flight time (3 s
// here) is over, or, where the mark names a process whose live mark is
// gone, at once (the in-flight time an hour). The 202 and the order carry
// the dead attempt's acceptance time, whichever of the two queued messages
// the worker decides.
func TestARetryAfterTheAPIDiedMidRequestGetsItsOrder(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		inFlight time.Duration
		accepted func(h *harness, event crowdpass.Event) crowdpass.Admission
	}{
		{"after the in-flight time", 0, func(h *harness, e crowdpass.Event) crowdpass.Admission {
			return h.acceptedElsewhere(e, "alice", "k")
		}},
		{"at once, its process gone", time.Hour, func(h *harness, e crowdpass.Event) crowdpass.Admission {
			return h.acceptedByDead(e, "alice", "k")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, options{inFlightTTL: c.inFlight})
			event := h.event(4, 1)
			// What the dead process did: admit (taking the last ticket at the
			// gate) and queue the order; it never stored an answer. No
			// worker decides it yet: its key can only be taken over.
			adm := c.accepted(h, event)
			r := h.orderOnceOutOfFlight("alice", "k", orderJSON(event, 0, 1))
			if r.status != http.StatusAccepted || orderID(t, r) != adm.OrderID.String() {
				t.Fatalf("retry after the API died: %d %s, want 202 for order %s", r.status, r.body, adm.OrderID)
			}
			if at := r.problem(t)["accepted_at"]; at != adm.AcceptedAt.String() {
				t.Errorf("retry's 202 accepted at %v, want the dead attempt's %s", at, adm.AcceptedAt)
			}
			h.startWorker()
			testkit.Eventually(t, 20*time.Second, func() bool { return testkit.CountDecided(t, h.db.Pool) == 1 }, "decided")
			var created time.Time
			if err := h.db.Pool.QueryRow(testkit.Context(t), "SELECT created_at FROM orders WHERE id = $1", adm.OrderID).Scan(&created); err != nil {
				t.Fatal(err)
			}
			if !created.Equal(adm.AcceptedAt.Time) {
				t.Errorf("order created at %s, want the dead attempt's %s", created, adm.AcceptedAt)
			}
			if n := h.countOrders("customer_id = 'alice' AND status = 'confirmed'"); n != 1 {
				t.Errorf("%d confirmed orders for one key, want 1", n)
			}
		})
	}
}

// A key refused at the edge keeps its answer after Redis lost it: replayed,
// never decided anew, although the gate, rebuilt from remaining while the
// sold ticket's order still waits in the queue, would admit it now.
func TestAKeyRefusedAtTheEdgeIsReplayedAfterRedisLostIt(t *testing.T) {
	t.Parallel()
	h := setup(t, options{}) // no worker: remaining stays 1 while alice's order waits
	event, first := h.bobRefusedThenRedisLost()
	again := h.order("bob", "b", orderJSON(event, 0, 1))
	if again.status != first.status || !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("bob's retry after Redis lost his key: %d %s %v, want his sold_out replayed", again.status, again.body, again.header)
	}
	if r := h.order("bob", "b", orderJSON(event, 0, 2)); r.status != http.StatusUnprocessableEntity || r.problem(t)["code"] != string(crowdpass.EKeyMismatch) {
		t.Errorf("another payload under bob's key: %d %s, want a mismatch", r.status, r.body)
	}
}

// A refusal this process remembers does not outlive an admission of the key
// that another process made after Redis lost it and then died: the retry is
// the gate's, which takes the dead attempt over, and gets the key's order,
// never request_in_progress until the memory forgets.
func TestARememberedRefusalGivesWayToAnAttemptMadeElsewhere(t *testing.T) {
	t.Parallel()
	// No worker: remaining stays 1 while alice's order waits. The other
	// process acts before this one writes bob's refusal back.
	h := setup(t, options{canary: 24 * time.Hour})
	event, _ := h.bobRefusedThenRedisLost()
	// Another process, its gate rebuilt from remaining, admits bob's key,
	// queues his order and dies before answering.
	adm := h.acceptedElsewhere(event, "bob", "b")
	r := h.orderOnceOutOfFlight("bob", "b", orderJSON(event, 0, 1))
	if r.status != http.StatusAccepted || orderID(t, r) != adm.OrderID.String() {
		t.Fatalf("bob's retry: %d %s, want 202 for the order queued elsewhere (%s)", r.status, r.body, adm.OrderID)
	}
	if again := h.order("bob", "b", orderJSON(event, 0, 1)); again.status != r.status || !bytes.Equal(again.body, r.body) {
		t.Errorf("bob's next retry: %d %s, want %d %s", again.status, again.body, r.status, r.body)
	}
}

// A gate that lost its stock key is rebuilt from remaining less the tickets
// of the orders this process queued that no worker has decided yet: the
// queue is not sold a second time.
func TestAGateThatLostItsStockDoesNotSellTheQueueAgain(t *testing.T) {
	t.Parallel()
	h := setup(t, options{}) // no worker: the first orders stay queued, remaining stays 10
	event := h.event(4, 10)
	h.waitGate(event.Categories[0].ID, 10)
	h.acceptAll("early", 3, event)
	h.loseRedisKeys()
	if accepted := h.buyAll("late", 10, event); accepted != 7 {
		t.Errorf("%d orders accepted after the loss, want the 7 tickets the queue leaves", accepted)
	}
}

// Orders decided whose outcomes this process never heard of are not counted
// twice: the rebuild asks PostgreSQL which of its queued orders are
// decided, in the snapshot that reads remaining. No ticket is left unsold.
func TestAGateRebuiltAfterALossCountsWhatTheWorkersDecided(t *testing.T) {
	t.Parallel()
	// No notifier: no outcome reaches the API. No reconcile either, whose
	// drift correction could raise the stock while the worker holds an
	// order unacknowledged: the first order rebuilds the stock, as after
	// a loss.
	h := setup(t, options{workers: 1, reconcile: time.Hour})
	event := testkit.CreateEvent(t, h.store, 4, 10)
	h.waitCatalog(event.ID)
	h.acceptAll("early", 3, event)
	testkit.Eventually(t, 20*time.Second, func() bool { return testkit.CountDecided(t, h.db.Pool) == 3 }, "the early orders decided")
	h.loseRedisKeys()
	if accepted := h.buyAll("late", 10, event); accepted != 7 {
		t.Errorf("%d orders accepted after the loss, want the 7 tickets left", accepted)
	}
}

// With the database stalled, a gate that lost its stock is rebuilt from
// the catalog's remaining within RestockTimeout: orders are still taken.
func TestAGateLostWhileTheDatabaseIsStalledIsRebuiltFromTheCatalog(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	event := h.event(4, 10)
	h.waitGate(event.Categories[0].ID, 10)
	if r := h.order("early", "k", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("early order: %d %s", r.status, r.body)
	}
	h.lock("orders, ticket_categories")
	h.loseRedisKeys()
	if r := h.order("late", "k", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("an order after the loss, the database stalled: %d %s", r.status, r.body)
	}
	// The catalog's remaining (10) does not count the early order: the
	// rebuilt gate holds 10 less the late one.
	h.waitGate(event.Categories[0].ID, 9)
	if n := h.metric(`crowdpass_gate_reconciled_total{why="missing_catalog"}`); n != "1" {
		t.Errorf("stocks rebuilt from the catalog: %q, want 1", n)
	}
}

// bobRefusedThenRedisLost makes a one-ticket event, sells its ticket to
// alice through another API process, has bob's key refused here, and loses
// Redis's keys. The gate is then rebuilt from remaining (alice's order is
// queued elsewhere, not known here): a ticket, as far as it knows. It
// returns the event and bob's refusal.
func (h *harness) bobRefusedThenRedisLost() (crowdpass.Event, reply) {
	h.t.Helper()
	event := h.event(4, 1)
	// A message no worker takes keeps the queue from ever reading as
	// drained, so that no drift correction gives alice's ticket back to
	// the gate between her admission elsewhere and its publish (this
	// process cannot see that other process's order in flight).
	if err := h.publisher.Publish(testkit.Context(h.t), "", h.topo.Orders(), amqp.Publishing{MessageId: "filler", Body: []byte("{}")}); err != nil {
		h.t.Fatal(err)
	}
	h.acceptedElsewhere(event, "alice", "a")
	first := h.order("bob", "b", orderJSON(event, 0, 1))
	if first.status != http.StatusConflict || first.problem(h.t)["code"] != string(crowdpass.ESoldOut) {
		h.t.Fatalf("bob: %d %s", first.status, first.body)
	}
	h.loseRedisKeys()
	h.waitGate(event.Categories[0].ID, 1)
	return event, first
}

// loseRedisKeys deletes every Redis key of the test's namespace, as a
// flush or a restart of Redis would.
func (h *harness) loseRedisKeys() {
	h.t.Helper()
	ctx := testkit.Context(h.t)
	if h.writesBack {
		// The loss must take the API's canary with the rest, or the API
		// never notices it: a canary set after the keys were listed stays.
		opts, err := redis.ParseURL(testkit.RedisURL())
		if err != nil {
			h.t.Fatal(err)
		}
		rdb := redis.NewClient(opts)
		defer rdb.Close()
		testkit.Eventually(h.t, 10*time.Second, func() bool {
			iter := rdb.Scan(ctx, 0, h.topo.Namespace+"gate:canary:*", 1000).Iterator()
			return iter.Next(ctx)
		}, "the API's canary set")
	}
	if err := testkit.DeleteRedisKeys(ctx, h.topo.Namespace); err != nil {
		h.t.Fatal(err)
	}
}

// acceptAll sends n orders of one ticket, one customer each, and fails
// unless each is accepted.
func (h *harness) acceptAll(prefix string, n int, event crowdpass.Event) {
	h.t.Helper()
	for i := range n {
		if r := h.order(fmt.Sprint(prefix, "-", i), "k", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
			h.t.Fatalf("%s order %d: %d %s", prefix, i, r.status, r.body)
		}
	}
}

// buyAll sends n orders of one ticket, one customer each, one after the
// other, and counts the 202s; anything but a 202 or sold_out fails.
func (h *harness) buyAll(prefix string, n int, event crowdpass.Event) int {
	h.t.Helper()
	accepted := 0
	for i := range n {
		switch r := h.order(fmt.Sprint(prefix, "-", i), "k", orderJSON(event, 0, 1)); {
		case r.status == http.StatusAccepted:
			accepted++
		case r.status != http.StatusConflict || r.problem(h.t)["code"] != string(crowdpass.ESoldOut):
			h.t.Fatalf("%s order %d: %d %s", prefix, i, r.status, r.body)
		}
	}
	return accepted
}

// Another process knows nothing of the keys this process answered: once
// Redis has lost them, this process writes its answers back, so that a
// retry sent there is replayed as here, never queued anew (another
// accepted_at), answered sold_out while its order waits in the queue, or,
// for a key refused here, admitted.
func TestAnswersRedisLostAreWrittenBackForOtherProcesses(t *testing.T) {
	t.Parallel()
	h := setup(t, options{}) // no workers: alice's order stays in the queue
	event, alice, bob := h.acceptedAndRefused()
	h.loseRedisKeys()

	// A retry of each at another process, as its gate call goes.
	for _, c := range []struct {
		adm   crowdpass.Admission
		first reply
	}{{admissionElsewhere(event, "alice", "a"), alice}, {admissionElsewhere(event, "bob", "b"), bob}} {
		testkit.Eventually(t, 10*time.Second, func() bool {
			_, err := h.gate.Lookup(testkit.Context(t), c.adm.OrderID)
			return err == nil
		}, "%s's answer back in Redis", c.adm.CustomerID)
		res, err := h.gate.Admit(testkit.Context(t), c.adm, "elsewhere")
		if err != nil || res.Verdict != crowdpass.Replay || !bytes.Equal(res.Answer.Body, c.first.body) {
			t.Errorf("%s's retry elsewhere: %+v, %v; want its first answer replayed: %s", c.adm.CustomerID, res, err, c.first.body)
		}
	}
}

// acceptedAndRefused makes an event of one ticket, which alice's order (key
// "a") takes and bob's (key "b") is refused; it returns their answers.
func (h *harness) acceptedAndRefused() (event crowdpass.Event, alice, bob reply) {
	h.t.Helper()
	event = h.event(4, 1)
	alice = h.order("alice", "a", orderJSON(event, 0, 1))
	bob = h.order("bob", "b", orderJSON(event, 0, 1))
	if alice.status != http.StatusAccepted || bob.status != http.StatusConflict {
		h.t.Fatalf("alice %d %s, bob %d %s; want 202 and 409", alice.status, alice.body, bob.status, bob.body)
	}
	return event, alice, bob
}

// readyProcess starts another API process over h's database (otherProcess)
// and waits until it is ready.
func (h *harness) readyProcess() harness {
	h.t.Helper()
	other := h.otherProcess(h.store)
	testkit.Eventually(h.t, 10*time.Second, func() bool {
		return other.do(http.MethodGet, "/readyz", nil, nil).status == http.StatusOK
	}, "the other process ready")
	return other
}

// A retry sent to another process at once after Redis lost its keys, before
// this process has written its answers back, is answered only once the
// recovery is over: with the first answer, the 202 with its accepted_at or
// the sold_out, never a second acceptance, a sold_out for an accepted key,
// or an admission of a refused one. The probe's case: without the
// recovery, the other process queued alice's order anew, with another
// accepted_at that replays kept, and could answer it sold_out.
func TestARetryElsewhereRightAfterALossGetsTheFirstAnswer(t *testing.T) {
	t.Parallel()
	h := setup(t, options{}) // no workers: alice's order stays in the queue
	event, alice, bob := h.acceptedAndRefused()
	others := []harness{h.readyProcess(), h.readyProcess()}
	h.loseRedisKeys()

	// All at once, each key at both other processes: they admit anew or
	// refuse, in any order, meet each other's attempts in flight, and all
	// wait out the recovery.
	type retry struct {
		other         harness
		customer, key string
		first, got    reply
	}
	var cases []retry
	for _, other := range others {
		cases = append(cases, retry{other: other, customer: "alice", key: "a", first: alice}, retry{other: other, customer: "bob", key: "b", first: bob})
	}
	var wg sync.WaitGroup
	for i := range cases {
		c := &cases[i]
		wg.Go(func() { c.got = c.other.order(c.customer, c.key, orderJSON(event, 0, 1)) })
	}
	wg.Wait()
	for _, c := range cases {
		if r := c.got; r.status != c.first.status || !bytes.Equal(r.body, c.first.body) || r.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("%s's retry elsewhere right after the loss: %d %s (replayed %q); want %d %s replayed",
				c.customer, r.status, r.body, r.header.Get("Idempotent-Replayed"), c.first.status, c.first.body)
		}
	}
	if n := h.acceptedCount(); n != 1 {
		t.Errorf("%d orders queued; want alice's alone", n)
	}
}

// After a loss, a stock rebuilt at one process counts the orders another
// process queued and no worker has decided, which that process shares
// within the recovery: their tickets are not sold again. Before, the
// rebuild counted only its own process's queue, and a probe saw 332 and
// 390 orders accepted for 300 seats.
func TestAStockRebuiltAfterALossCountsOtherProcessesQueues(t *testing.T) {
	t.Parallel()
	h := setup(t, options{}) // no workers: the orders stay in the queue
	event := h.event(4, 5)
	h.acceptAll("a", 3, event)
	other := h.readyProcess()
	h.loseRedisKeys()
	if n := other.buyAll("b", 5, event); n != 2 {
		t.Errorf("%d orders accepted at the other process after the loss; want 2, the tickets left", n)
	}
}

// An accepted order still in the queue reads as pending at another process
// right after Redis lost its keys, not as unknown: the read waits for the
// recovery, during which the process that accepted it writes its 202 back.
func TestAnOrderReadElsewhereRightAfterALossIsPending(t *testing.T) {
	t.Parallel()
	h := setup(t, options{}) // no workers: alice's order stays in the queue
	event := h.event(4, 1)
	alice := h.order("alice", "a", orderJSON(event, 0, 1))
	if alice.status != http.StatusAccepted {
		t.Fatalf("alice: %d %s", alice.status, alice.body)
	}
	var first struct {
		AcceptedAt string `json:"accepted_at"`
	}
	if err := json.Unmarshal(alice.body, &first); err != nil {
		t.Fatal(err)
	}
	other := h.readyProcess()
	h.loseRedisKeys()

	r := other.do(http.MethodGet, "/orders/"+crowdpass.OrderID("alice", "a").String(), http.Header{"Authorization": {"Bearer " + h.token("alice")}}, nil)
	var got struct {
		Status     string `json:"status"`
		AcceptedAt string `json:"accepted_at"`
	}
	if r.status != http.StatusOK || json.Unmarshal(r.body, &got) != nil || got.Status != "pending" || got.AcceptedAt != first.AcceptedAt {
		t.Errorf("alice's order read elsewhere right after the loss: %d %s; want pending, accepted at %s", r.status, r.body, first.AcceptedAt)
	}
}

// An order that never reaches PostgreSQL (dead-lettered here) keeps its
// ticket out of the gate only for a while: the drift correction stops
// counting it as held by a worker once it is old, and the ticket is sold.
func TestATicketOfAnOrderThatNeverReachesTheDatabaseIsSoldAgain(t *testing.T) {
	t.Parallel()
	var late atomic.Int64 // how far the API's clock is ahead
	h := setup(t, options{now: func() time.Time { return time.Now().Add(time.Duration(late.Load())) }})
	event := h.event(4, 2)
	cat := event.Categories[0]
	if r := h.order("alice", "a", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("alice: %d %s", r.status, r.body)
	}
	ch := h.consumer()
	deliveries, err := ch.Consume(h.topo.Orders(), "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		if err := d.Nack(false, false); err != nil { // dead-lettered
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("alice's order never delivered")
	}
	h.waitGate(cat.ID, 1) // alice's order may still be a worker's
	late.Store(int64(time.Minute))
	h.waitGate(cat.ID, 2)
}

// A worker holds the orders it has taken from the queue until it decides
// them: the queue reads as drained, and remaining does not count them yet.
// A drift the reconcile corrects then is corrected to remaining less this
// process's orders no worker has decided, never to remaining, which would
// sell their tickets again.
func TestADriftCorrectedWhileAWorkerHoldsOrdersDoesNotSellThemAgain(t *testing.T) {
	t.Parallel()
	h := setup(t, options{}) // no workers: the order stays undecided
	event := h.event(4, 2)
	cat := event.Categories[0]
	if r := h.order("alice", "a", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("alice: %d %s", r.status, r.body)
	}
	// A worker takes alice's order and has not decided it yet.
	deliveries, err := h.consumer().Consume(h.topo.Orders(), "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-deliveries:
	case <-time.After(10 * time.Second):
		t.Fatal("alice's order never delivered")
	}
	// A ticket stranded in the gate: an attempt elsewhere took it and died.
	stranded := admissionElsewhere(event, "dave", "d")
	if res, err := h.gate.Admit(testkit.Context(t), stranded, "elsewhere"); err != nil || res.Verdict != crowdpass.Admitted {
		t.Fatalf("dave's admission: %+v, %v", res, err)
	}
	// Of 2 tickets, alice's is taken: 1 to sell, not 2.
	h.waitGate(cat.ID, 1)
	if r := h.order("bob", "b", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("bob: %d %s", r.status, r.body)
	}
	if r := h.order("carol", "c", orderJSON(event, 0, 1)); r.status != http.StatusConflict {
		t.Errorf("carol, for a third ticket of two: %d %s", r.status, r.body)
	}
}

// consumer is a channel on the test's broker, closed when the test ends,
// for a test to take orders from the queue as a worker would.
func (h *harness) consumer() *amqp.Channel {
	h.t.Helper()
	conn, err := broker.Dial(testkit.Context(h.t), testkit.AMQPURL(), "api-test-consumer")
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		h.t.Fatal(err)
	}
	return ch
}

// orderOnceOutOfFlight sends the customer's order again and again while it
// is answered request_in_progress (its key held by an attempt that may
// still be queueing), and returns the first other answer.
func (h *harness) orderOnceOutOfFlight(customer, key string, body []byte) reply {
	h.t.Helper()
	var r reply
	testkit.Eventually(h.t, 20*time.Second, func() bool {
		r = h.order(customer, key, body)
		return !(r.status == http.StatusConflict && r.problem(h.t)["code"] == string(crowdpass.ERequestInProgress))
	}, "%s's key out of flight", customer)
	return r
}

// An API process that starts while PostgreSQL cannot be read answers orders
// at once, from the copy of the catalog another process keeps in Redis; an
// event created since it started is found in that copy too.
func TestAProcessStartedWithoutTheDatabaseTakesTheCatalogFromRedis(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	h.waitCatalogCopy()

	other := h.otherProcess(downStore{})
	testkit.Eventually(t, 10*time.Second, func() bool {
		return other.metric("crowdpass_catalog_age_seconds") == "-1" &&
			other.do(http.MethodGet, "/readyz", nil, nil).status == http.StatusOK
	}, "the catalog loaded without the database")

	event := h.event(4, 10)
	testkit.Eventually(t, 20*time.Second, func() bool {
		data, err := h.gate.LoadCatalog(testkit.Context(t))
		return err == nil && bytes.Contains(data, []byte(event.ID.String()))
	}, "the event in the catalog's copy in Redis")
	if r := other.do(http.MethodGet, "/events/"+event.ID.String(), nil, nil); r.status != http.StatusOK {
		t.Errorf("the event at the process without the database: %d %s; want 200", r.status, r.body)
	}
	if r := other.order("alice", "a", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Errorf("order at the process started without the database: %d %s; want 202", r.status, r.body)
	}
}

// A key Redis forgot (a flush, or its TTL) whose order exists in PostgreSQL
// gets that order's 202 byte for byte, at a process that never saw it,
// although its category is sold out and its gate stock gone; another
// payload under it is a mismatch. Nothing is decided anew.
func TestAKeyRedisForgotWhoseOrderExistsGetsItsOrder(t *testing.T) {
	t.Parallel()
	h := setup(t, options{workers: 1})
	event := h.event(4, 1)
	// Another process, which hears of no outcome (no notifier) and has
	// walked the orders before this one was decided: the outbox's tail
	// alone tells it the order exists.
	other := h.otherProcess(h.store)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return other.existingOrders() == 0 && other.do(http.MethodGet, "/readyz", nil, nil).status == http.StatusOK
	}, "the orders that exist listed, the catalog loaded")
	first := h.order("alice", "k", orderJSON(event, 0, 1))
	if first.status != http.StatusAccepted {
		t.Fatalf("first order: %d %s", first.status, first.body)
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return testkit.CountDecided(t, h.db.Pool) == 1 }, "decided")
	testkit.Eventually(t, 10*time.Second, func() bool { return other.existingOrders() == 1 }, "the order seen in the outbox")
	if err := testkit.DeleteRedisKeys(testkit.Context(t), h.topo.Namespace); err != nil {
		t.Fatal(err)
	}

	r := other.order("alice", "k", orderJSON(event, 0, 1))
	if r.status != http.StatusAccepted || !bytes.Equal(r.body, first.body) || r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("the key after Redis forgot it: %d %s (replayed %q); want the first 202 %s replayed", r.status, r.body, r.header.Get("Idempotent-Replayed"), first.body)
	}
	if r := other.order("alice", "k", orderJSON(event, 0, 2)); r.status != http.StatusUnprocessableEntity || r.problem(t)["code"] != string(crowdpass.EKeyMismatch) {
		t.Errorf("another payload under the key: %d %s; want a mismatch", r.status, r.body)
	}
	// The first process, which remembers the key, answers the same.
	if r := h.order("alice", "k", orderJSON(event, 0, 1)); r.status != http.StatusAccepted || !bytes.Equal(r.body, first.body) {
		t.Errorf("the key at the first process: %d %s; want the first 202", r.status, r.body)
	}
	if n := h.countOrders("customer_id = 'alice'"); n != 1 {
		t.Errorf("%d orders for one key, want 1", n)
	}
}

// A key the filter says may have an order, whose order cannot be read, is
// answered from Redis where Redis holds it, and otherwise unavailable, with
// nothing stored for it: a decision then could contradict the order.
func TestAKeyWhoseOrderCannotBeLookedUpIsUnavailable(t *testing.T) {
	t.Parallel()
	h := setup(t, options{workers: 1})
	event := h.event(4, 1)
	if r := h.order("alice", "k", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("first order: %d %s", r.status, r.body)
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return testkit.CountDecided(t, h.db.Pool) == 1 }, "decided")
	other := h.otherProcess(unreadableOrders{h.store})
	testkit.Eventually(t, 10*time.Second, func() bool {
		return other.existingOrders() == 1 && other.do(http.MethodGet, "/readyz", nil, nil).status == http.StatusOK
	}, "the orders that exist listed, the catalog loaded")
	// While Redis holds the key, the gate answers it.
	if r := other.order("alice", "k", orderJSON(event, 0, 1)); r.status != http.StatusAccepted || r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("the key Redis holds: %d %s; want its 202 replayed", r.status, r.body)
	}
	if err := testkit.DeleteRedisKeys(testkit.Context(t), h.topo.Namespace); err != nil {
		t.Fatal(err)
	}
	r := other.order("alice", "k", orderJSON(event, 0, 1))
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Errorf("the key whose order cannot be read: %d %s; want 503 with Retry-After", r.status, r.body)
	}
	if _, err := h.gate.Lookup(testkit.Context(t), crowdpass.OrderID("alice", "k")); !errors.Is(err, crowdpass.ErrNotFound) {
		t.Errorf("the gate holds %v for the key, want nothing stored", err)
	}
}

// otherProcess starts another API process on h's Redis and broker, over
// store, with a memory of its own; it returns h pointed at it.
func (h *harness) otherProcess(store api.Store) harness {
	h.t.Helper()
	other := *h
	server := api.New(api.Config{Recent: api.NewRecent(0), ReconcileInterval: 50 * time.Millisecond, Logger: testkit.Logger(h.t)},
		h.gate, broker.OrderQueue{Publisher: h.publisher, Topology: h.topo}, store, h.authority)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { server.Run(ctx); close(done) }()
	srv := httptest.NewServer(server.Handler())
	h.t.Cleanup(func() { srv.Close(); cancel(); <-done })
	other.url = srv.URL
	return other
}

// waitCatalogCopy waits for the catalog's copy in Redis.
func (h *harness) waitCatalogCopy() {
	h.t.Helper()
	testkit.Eventually(h.t, 20*time.Second, func() bool {
		_, err := h.gate.LoadCatalog(testkit.Context(h.t))
		return err == nil
	}, "the catalog's copy in Redis")
}

// existingOrders reads crowdpass_orders_existing: -1 until the walk is done.
func (h *harness) existingOrders() int {
	n, err := strconv.Atoi(h.metric("crowdpass_orders_existing"))
	if err != nil {
		return -1
	}
	return n
}

// A process that starts while PostgreSQL does not answer (stalled, not
// down) does not wait out a whole read before it answers from the copy
// of the catalog in Redis.
func TestAProcessStartedDuringAStallAnswersFromTheCatalogsCopySoon(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	h.waitCatalogCopy()
	stalled := &stalledEvents{Store: h.store}
	other := h.otherProcess(stalled)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return other.do(http.MethodGet, "/readyz", nil, nil).status == http.StatusOK
	}, "the catalog loaded during the stall")
	if wait := stalled.first(); wait <= 0 || wait > time.Second {
		t.Errorf("the first catalog read waited for up to %s, want a second at most", wait)
	}
}

// stalledEvents is a database whose events are never read: each read
// waits for its deadline, which the first one records.
type stalledEvents struct {
	api.Store
	mu    sync.Mutex
	limit time.Duration
}

func (s *stalledEvents) Events(ctx context.Context) ([]crowdpass.Event, error) {
	if d, ok := ctx.Deadline(); ok {
		s.mu.Lock()
		if s.limit == 0 {
			s.limit = time.Until(d)
		}
		s.mu.Unlock()
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *stalledEvents) first() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit
}

// A process is not ready while PostgreSQL answers but the orders that
// exist are not listed yet: a key Redis forgot would be decided as new.
func TestAProcessIsNotReadyUntilItKnowsTheOrdersThatExist(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	walk := &heldWalk{Store: h.store, release: make(chan struct{})}
	other := h.otherProcess(walk)
	var body struct {
		Checks map[string]string `json:"checks"`
	}
	testkit.Eventually(t, 10*time.Second, func() bool {
		r := other.do(http.MethodGet, "/readyz", nil, nil)
		return json.Unmarshal(r.body, &body) == nil && body.Checks["catalog"] == "ok"
	}, "the catalog loaded")
	if r := other.do(http.MethodGet, "/readyz", nil, nil); r.status != http.StatusServiceUnavailable || !bytes.Contains(r.body, []byte(`"orders":"down"`)) {
		t.Errorf("readyz during the walk: %d %s; want 503 with orders down", r.status, r.body)
	}
	close(walk.release)
	testkit.Eventually(t, 10*time.Second, func() bool {
		return other.do(http.MethodGet, "/readyz", nil, nil).status == http.StatusOK
	}, "ready once the walk is done")
}

// heldWalk is a database whose orders are listed only once released.
type heldWalk struct {
	api.Store
	release chan struct{}
}

func (w *heldWalk) OrderIDs(ctx context.Context, after uuid.UUID, limit int) ([]uuid.UUID, error) {
	select {
	case <-w.release:
		return w.Store.OrderIDs(ctx, after, limit)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// unreadableOrders is a database whose orders cannot be read one by one.
type unreadableOrders struct{ api.Store }

func (unreadableOrders) Order(context.Context, uuid.UUID) (crowdpass.Order, error) {
	return crowdpass.Order{}, errDatabaseDown
}

// downStore is a database that cannot be reached.
type downStore struct{}

var errDatabaseDown = errors.New("database down")

func (downStore) Events(context.Context) ([]crowdpass.Event, error) { return nil, errDatabaseDown }
func (downStore) CreateEvent(context.Context, crowdpass.EventSpec) (crowdpass.Event, error) {
	return crowdpass.Event{}, errDatabaseDown
}
func (downStore) Event(context.Context, uuid.UUID) (crowdpass.Event, error) {
	return crowdpass.Event{}, errDatabaseDown
}
func (downStore) Order(context.Context, uuid.UUID) (crowdpass.Order, error) {
	return crowdpass.Order{}, errDatabaseDown
}
func (downStore) Unsold(context.Context, uuid.UUID, []uuid.UUID, []int32) (int, error) {
	return 0, errDatabaseDown
}
func (downStore) Ping(context.Context) error { return errDatabaseDown }
func (downStore) ListenEventsCreated(context.Context, func(), func(uuid.UUID)) error {
	return errDatabaseDown
}
func (downStore) OrderIDs(context.Context, uuid.UUID, int) ([]uuid.UUID, error) {
	return nil, errDatabaseDown
}
func (downStore) OrderCountEstimate(context.Context) (int64, error) { return 0, errDatabaseDown }
func (downStore) OutboxLastID(context.Context) (int64, error)       { return 0, errDatabaseDown }
func (downStore) OutboxOrdersAfter(context.Context, int64, int) ([]int64, []uuid.UUID, error) {
	return nil, nil, errDatabaseDown
}

// The tickets of an order a worker rejects limit_exceeded go back to the
// gate at once, not when the queue is next drained: the gate would answer
// sold_out while they are left. A sold_out rejection gives nothing back.
func TestTicketsOfAnOrderOverTheLimitGoBackToTheGate(t *testing.T) {
	t.Parallel()
	// No drift correction: only the give-back can raise the stock.
	h := setup(t, options{reconcile: time.Hour})
	event := testkit.CreateEvent(t, h.store, 2, 4)
	h.waitCatalog(event.ID)
	cat := event.Categories[0]
	for _, key := range []string{"a1", "a2"} {
		if r := h.order("alice", key, orderJSON(event, 0, 2)); r.status != http.StatusAccepted {
			t.Fatalf("alice's %s: %d %s", key, r.status, r.body)
		}
	}
	h.waitGate(cat.ID, 0)
	// Outcomes as the notifier passes them on: a1 rejected sold_out gives
	// nothing back, a2 rejected over alice's limit its 2 tickets.
	rejected := func(key string, reason crowdpass.Reason) crowdpass.Outcome {
		return crowdpass.Outcome{Type: crowdpass.EventOrderRejected, CustomerID: "alice", Order: crowdpass.Order{
			ID: crowdpass.OrderID("alice", key), Status: crowdpass.StatusRejected, Reason: reason,
			EventID: event.ID, CategoryID: cat.ID, Quantity: 2,
		}}
	}
	h.recent.Decided(rejected("a1", crowdpass.ReasonSoldOut))
	h.recent.Decided(rejected("a2", crowdpass.ReasonLimitExceeded))
	h.waitGate(cat.ID, 2)
	if r := h.order("bob", "b", orderJSON(event, 0, 2)); r.status != http.StatusAccepted {
		t.Errorf("bob, with 2 tickets back in the gate: %d %s; want 202", r.status, r.body)
	}
	if n, _, err := h.gate.Stock(testkit.Context(t), cat.ID); err != nil || n != 0 {
		t.Errorf("gate stock after bob: %d, %v; want 0 (nothing given back for the sold_out)", n, err)
	}
}

// With PostgreSQL stalled the catalog's remaining cannot fall: a drift
// correction against it would undo every admission since (another
// process's, whose orders workers hold), over and over.
func TestNoDriftIsCorrectedAgainstACatalogThatCannotBeRead(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	event := h.event(4, 10)
	cat := event.Categories[0]
	h.lock("ticket_categories")
	// The refresh now waits for the lock, and no reconcile runs meanwhile.
	testkit.Eventually(t, 10*time.Second, func() bool { return h.catalogAge() > 0.5 }, "the catalog's refresh held")
	if set, err := h.gate.SetStock(testkit.Context(t), cat.ID, 10, true, 5); err != nil || !set {
		t.Fatalf("setting the gate's stock as other admissions would: %v, %v", set, err)
	}
	// The refresh gives up after 3s, then the gate is reconciled.
	testkit.Eventually(t, 20*time.Second, func() bool { return h.catalogAge() > 3.5 }, "a catalog refresh failed")
	if n, _, err := h.gate.Stock(testkit.Context(t), cat.ID); err != nil || n != 5 {
		t.Errorf("gate stock %d, %v after a reconcile against a catalog that could not be read; want 5", n, err)
	}
}

// A copy of the catalog that Redis lost while PostgreSQL cannot be read is
// put back from a running process's memory, for a process that starts then.
func TestTheCatalogsCopyLostDuringAnOutageIsPutBack(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	event := h.event(4, 10)
	h.lock("events")
	testkit.Eventually(t, 20*time.Second, func() bool { return h.catalogAge() > 3.5 }, "a catalog refresh failed")
	if err := testkit.DeleteRedisKeys(testkit.Context(t), h.topo.Namespace); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		data, err := h.gate.LoadCatalog(testkit.Context(t))
		return err == nil && bytes.Contains(data, []byte(event.ID.String()))
	}, "the catalog's copy back in Redis")
}

// catalogAge is the API's crowdpass_catalog_age_seconds (-1: never read, or
// unreadable).
func (h *harness) catalogAge() float64 {
	age, err := strconv.ParseFloat(h.metric("crowdpass_catalog_age_seconds"), 64)
	if err != nil {
		return -1
	}
	return age
}
