package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/testkit"
)

func orderID(t *testing.T, r reply) string {
	t.Helper()
	var a struct {
		OrderID string `json:"order_id"`
	}
	if err := json.Unmarshal(r.body, &a); err != nil || a.OrderID == "" {
		t.Fatalf("no order id in %d %s", r.status, r.body)
	}
	return a.OrderID
}

func TestReplayIsTheFirstAnswerByteForByte(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	event := h.event(4, 10)
	first := h.order("alice", "buy-1", orderJSON(event, 0, 2))
	if first.status != http.StatusAccepted || first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first answer %d %v %s", first.status, first.header, first.body)
	}
	if loc := first.header.Get("Location"); loc != "/orders/"+orderID(t, first) {
		t.Errorf("Location %q", loc)
	}
	for range 3 {
		again := h.order("alice", "buy-1", orderJSON(event, 0, 2))
		if again.status != first.status || !bytes.Equal(again.body, first.body) {
			t.Errorf("replay %d %s differs from %d %s", again.status, again.body, first.status, first.body)
		}
		if again.header.Get("Idempotent-Replayed") != "true" || again.header.Get("Location") != first.header.Get("Location") {
			t.Errorf("replay headers %v", again.header)
		}
	}
	// The quoted form names the same key.
	if quoted := h.order("alice", `"buy-1"`, orderJSON(event, 0, 2)); !bytes.Equal(quoted.body, first.body) {
		t.Errorf("quoted key answered %d %s", quoted.status, quoted.body)
	}
}

func TestKeyReusedWithAnotherPayloadIsAMismatch(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	event := h.event(4, 10, 10)
	if r := h.order("alice", "k", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("first: %d %s", r.status, r.body)
	}
	for _, body := range [][]byte{orderJSON(event, 0, 2), orderJSON(event, 1, 1)} {
		r := h.order("alice", "k", body)
		if r.status != http.StatusUnprocessableEntity || r.problem(t)["code"] != string(crowdpass.EKeyMismatch) {
			t.Errorf("mismatch answered %d %s", r.status, r.body)
		}
	}
}

func TestKeyInFlightAnswersInProgressOrMismatch(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	event := h.event(4, 10)
	// Put the key in flight as a first request that has not been confirmed yet would.
	payload := crowdpass.OrderPayload{EventID: event.ID, CategoryID: event.Categories[0].ID, Quantity: 1}
	res, err := h.gate.Admit(testkit.Context(t), crowdpass.Admission{
		OrderID: crowdpass.OrderID("alice", "slow"), CustomerID: "alice", Fingerprint: payload.Fingerprint(),
		CategoryID: payload.CategoryID, Quantity: 1,
	}, "first-request")
	if err != nil || res.Verdict != crowdpass.Admitted {
		t.Fatalf("admit: %+v %v", res, err)
	}
	same := h.order("alice", "slow", orderJSON(event, 0, 1))
	if same.status != http.StatusConflict || same.problem(t)["code"] != string(crowdpass.ERequestInProgress) || same.header.Get("Retry-After") == "" {
		t.Errorf("same payload in flight: %d %v %s", same.status, same.header, same.body)
	}
	other := h.order("alice", "slow", orderJSON(event, 0, 2))
	if other.status != http.StatusUnprocessableEntity || other.problem(t)["code"] != string(crowdpass.EKeyMismatch) {
		t.Errorf("other payload in flight: %d %s", other.status, other.body)
	}
}

// A double click is answered as its first click is: the second request
// waits for the first and gets its 202 replayed, not request_in_progress.
func TestADoubleClickGetsTheFirstClicksAnswer(t *testing.T) {
	t.Parallel()
	h := setup(t, options{proxyAMQP: true, publishTimeout: 20 * time.Second, inProgressWait: 20 * time.Second})
	event := h.event(4, 10)
	h.amqpProxy.Stall() // the first click's publish waits
	clicks := make(chan reply, 2)
	click := func() { clicks <- h.order("alice", "k", orderJSON(event, 0, 1)) }
	go click()
	testkit.Eventually(t, 10*time.Second, func() bool {
		rec, err := h.gate.Lookup(testkit.Context(t), crowdpass.OrderID("alice", "k"))
		return err == nil && rec.InFlight
	}, "the first click admitted")
	go click()
	testkit.Eventually(t, 10*time.Second, func() bool { return h.metric("crowdpass_orders_waiting_for_key") == "1" }, "the second click waiting")
	h.amqpProxy.Resume()
	// The two answers may come back in either order.
	var first, second reply
	for range 2 {
		if c := <-clicks; c.header.Get("Idempotent-Replayed") == "true" {
			second = c
		} else {
			first = c
		}
	}
	if first.status != http.StatusAccepted {
		t.Fatalf("the first click: %d %v %s", first.status, first.header, first.body)
	}
	if second.status != http.StatusAccepted || !bytes.Equal(second.body, first.body) {
		t.Errorf("the second click: %d %v %s, want the first's 202 replayed: %s", second.status, second.header, second.body, first.body)
	}
	if n := h.metric("crowdpass_orders_waiting_for_key"); n != "0" {
		t.Errorf("%s requests still waiting", n)
	}
}

// A request of another payload that holds the key while the gate has not
// decided it yet does not make the key's own payload a mismatch: the retry
// waits, and gets the key's stored answer replayed.
func TestARetryWaitsBehindAnotherPayloadTheGateHasNotDecided(t *testing.T) {
	t.Parallel()
	// The gate's calls wait for Redis as long as the test holds it.
	h := setup(t, options{proxyRedis: true, inProgressWait: 20 * time.Second, gateTimeout: 20 * time.Second})
	event := h.event(4, 1)
	if r := h.order("bob", "b", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("bob: %d %s", r.status, r.body)
	}
	// Refused by another API process: this one has no memory of the key.
	soldOut := h.refusedElsewhere(event, "alice", "k")
	h.redisProxy.Stall() // the other payload's gate call waits
	other := make(chan reply, 1)
	go func() { other <- h.order("alice", "k", orderJSON(event, 0, 2)) }()
	// In flight: the other payload and the /metrics request that asks.
	testkit.Eventually(t, 10*time.Second, func() bool { return h.metric("crowdpass_http_requests_in_flight") == "2" }, "the other payload in the gate")
	retry := make(chan reply, 1)
	go func() { retry <- h.order("alice", "k", orderJSON(event, 0, 1)) }()
	testkit.Eventually(t, 10*time.Second, func() bool { return h.metric("crowdpass_orders_waiting_for_key") == "1" }, "the retry waiting")
	h.redisProxy.Resume()
	if r := <-other; r.status != http.StatusUnprocessableEntity || r.problem(t)["code"] != string(crowdpass.EKeyMismatch) {
		t.Errorf("the other payload: %d %s, want idempotency_key_mismatch", r.status, r.body)
	}
	r := <-retry
	if r.status != soldOut.Status || !bytes.Equal(r.body, soldOut.Body) || r.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("the retry: %d %v %s, want its sold_out replayed: %s", r.status, r.header, r.body, soldOut.Body)
	}
}

func TestConcurrentSendsOfOneKeyMakeOneOrder(t *testing.T) {
	t.Parallel()
	h := setup(t, options{workers: 1})
	event := h.event(4, 10)
	replies := h.orders(64, "alice", "double-click", orderJSON(event, 0, 1))
	var accepted []reply
	for _, r := range replies {
		switch {
		case r.status == http.StatusAccepted:
			accepted = append(accepted, r)
		case r.status == http.StatusConflict && r.problem(t)["code"] == string(crowdpass.ERequestInProgress):
		default:
			t.Errorf("answer %d %s", r.status, r.body)
		}
	}
	if len(accepted) == 0 {
		t.Fatal("no request was accepted")
	}
	for _, r := range accepted[1:] {
		if !bytes.Equal(r.body, accepted[0].body) {
			t.Errorf("accepted answers differ: %s vs %s", r.body, accepted[0].body)
		}
	}
	after := h.order("alice", "double-click", orderJSON(event, 0, 1))
	if !bytes.Equal(after.body, accepted[0].body) || after.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("later answer %d %s", after.status, after.body)
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return testkit.CountDecided(t, h.db.Pool) == 1 }, "the order decided")
	if n := h.countOrders("customer_id = 'alice'"); n != 1 {
		t.Errorf("%d orders for one key", n)
	}
	testkit.CheckInvariants(t, h.db.Pool)
}

func TestSameKeyFromTwoCustomersMakesTwoOrders(t *testing.T) {
	t.Parallel()
	h := setup(t, options{workers: 1})
	event := h.event(4, 10)
	a := h.order("alice", "shared", orderJSON(event, 0, 1))
	b := h.order("bob", "shared", orderJSON(event, 0, 1))
	if a.status != http.StatusAccepted || b.status != http.StatusAccepted || orderID(t, a) == orderID(t, b) {
		t.Fatalf("answers %d %s / %d %s", a.status, a.body, b.status, b.body)
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return testkit.CountDecided(t, h.db.Pool) == 2 }, "both decided")
	// Each sees its own order and not the other's.
	get := func(customer, id string) reply {
		return h.do(http.MethodGet, "/orders/"+id, http.Header{"Authorization": {"Bearer " + h.token(customer)}}, nil)
	}
	if r := get("alice", orderID(t, a)); r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"status":"confirmed"`)) {
		t.Errorf("alice's order: %d %s", r.status, r.body)
	}
	if r := get("alice", orderID(t, b)); r.status != http.StatusNotFound {
		t.Errorf("alice reads bob's order: %d %s", r.status, r.body)
	}
}

func TestPendingOrderIsReadableBeforeItIsDecided(t *testing.T) {
	t.Parallel()
	h := setup(t, options{}) // no worker: the order stays in the queue
	event := h.event(4, 10)
	a := h.order("alice", "k", orderJSON(event, 0, 3))
	r := h.do(http.MethodGet, "/orders/"+orderID(t, a), http.Header{"Authorization": {"Bearer " + h.token("alice")}}, nil)
	var o crowdpass.Order
	if err := json.Unmarshal(r.body, &o); err != nil || r.status != http.StatusOK || o.Status != crowdpass.StatusPending || o.Quantity != 3 {
		t.Errorf("pending order: %d %s", r.status, r.body)
	}
	if !bytes.Contains(a.body, []byte(fmt.Sprintf(`"accepted_at":"%s"`, o.AcceptedAt))) {
		t.Errorf("accepted_at differs: %s vs %s", a.body, r.body)
	}
}

// Once an admission found a category sold out, the next requests for it
// take the gate's cheaper refusal; it keeps every idempotency promise: an
// accepted key still replays its 202, a refused key replays its sold_out,
// and another payload under a refused key is a mismatch.
func TestSoldOutFastPathKeepsReplaysExact(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	event := h.event(4, 1, 10)
	h.waitGate(event.Categories[0].ID, 1)
	accepted := h.order("alice", "a", orderJSON(event, 0, 1))
	if accepted.status != http.StatusAccepted {
		t.Fatalf("alice: %d %s", accepted.status, accepted.body)
	}
	refusals := func() string { return h.metric("crowdpass_gate_refusals_total") }
	// The script finds the category sold out; the fast path is fresh for a
	// moment after it, so the checks run until one batch of them has been
	// answered through it.
	deadline := time.Now().Add(10 * time.Second)
	for round := 0; ; round++ {
		before := refusals()
		first := h.order("bob", fmt.Sprint("b", round), orderJSON(event, 0, 1))
		if first.status != http.StatusConflict || first.problem(t)["code"] != string(crowdpass.ESoldOut) {
			t.Fatalf("bob: %d %s", first.status, first.body)
		}
		again := h.order("alice", "a", orderJSON(event, 0, 1))
		if again.status != http.StatusAccepted || !bytes.Equal(again.body, accepted.body) || again.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("alice's retry: %d %s %v", again.status, again.body, again.header)
		}
		fresh := h.order("carol", fmt.Sprint("c", round), orderJSON(event, 0, 1))
		if fresh.status != http.StatusConflict || !bytes.Equal(fresh.body, first.body) || fresh.header.Get("Idempotent-Replayed") != "" {
			t.Errorf("carol: %d %s %v", fresh.status, fresh.body, fresh.header)
		}
		replay := h.order("carol", fmt.Sprint("c", round), orderJSON(event, 0, 1))
		if replay.status != http.StatusConflict || !bytes.Equal(replay.body, fresh.body) || replay.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("carol's retry: %d %s %v", replay.status, replay.body, replay.header)
		}
		other := h.order("carol", fmt.Sprint("c", round), orderJSON(event, 1, 1))
		if other.status != http.StatusUnprocessableEntity || other.problem(t)["code"] != string(crowdpass.EKeyMismatch) {
			t.Errorf("carol's other payload: %d %s", other.status, other.body)
		}
		if after := refusals(); after != before && after != "" && after != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no request took the sold-out fast path")
		}
	}
	if n := h.countOrders("customer_id <> 'alice'"); n != 0 {
		t.Errorf("%d orders created by refused requests", n)
	}
}

// Stock that comes back to the gate is sold again: the sold-out view of the
// fast path is only trusted for a moment.
func TestStockBackInTheGateIsSoldAgain(t *testing.T) {
	t.Parallel()
	h := setup(t, options{})
	event := h.event(4, 1)
	cat := event.Categories[0].ID
	h.waitGate(cat, 1)
	if r := h.order("alice", "a", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("alice: %d %s", r.status, r.body)
	}
	if r := h.order("bob", "b0", orderJSON(event, 0, 1)); r.status != http.StatusConflict {
		t.Fatalf("bob: %d %s", r.status, r.body)
	}
	// As an aborted admission would give its ticket back.
	if set, err := h.gate.SetStock(testkit.Context(t), cat, 0, true, 1); err != nil || !set {
		t.Fatalf("SetStock = %v, %v", set, err)
	}
	round := 0
	testkit.Eventually(t, 5*time.Second, func() bool {
		round++
		return h.order("bob", fmt.Sprint("b", round), orderJSON(event, 0, 1)).status == http.StatusAccepted
	}, "the ticket back in the gate sold")
}

// An event the catalog has not loaded yet, looked up while PostgreSQL does
// not answer, is unavailable, never not found: it may exist.
func TestAnEventThatMayExistIsNeverNotFound(t *testing.T) {
	t.Parallel()
	h := setup(t, options{reconcile: time.Hour, missTimeout: 200 * time.Millisecond, deaf: true})
	testkit.Eventually(t, 10*time.Second, func() bool {
		return h.do(http.MethodGet, "/events/"+uuid.NewString(), nil, nil).status == http.StatusNotFound
	}, "catalog loaded")
	event := testkit.CreateEvent(t, h.store, 4, 10)
	tx := h.lock("events") // the lookup waits past its time
	r := h.order("alice", "k", orderJSON(event, 0, 1))
	if r.status != http.StatusServiceUnavailable || r.problem(t)["code"] != string(crowdpass.EUnavailable) || r.header.Get("Retry-After") == "" {
		t.Errorf("POST /orders for an event not yet in the catalog, database locked: %d %s", r.status, r.body)
	}
	if err := tx.Rollback(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	if r := h.order("alice", "k", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Errorf("the same order once the database answers: %d %s", r.status, r.body)
	}
}

// An event committed by another process is in the catalog within a round
// trip of its commit, before any request asks for it: a flood of unknown
// ids, which uses up the lookups' rate, cannot make it unknown until the
// next refresh.
func TestAnEventCreatedElsewhereIsAnnounced(t *testing.T) {
	t.Parallel()
	h := setup(t, options{reconcile: time.Hour})
	ctx := testkit.Context(t)
	testkit.Eventually(t, 10*time.Second, func() bool {
		var n int
		err := h.db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN events_created'`).Scan(&n)
		return err == nil && n > 0
	}, "the API listening for new events")
	for range 20 {
		if r := h.do(http.MethodGet, "/events/"+uuid.NewString(), nil, nil); r.status != http.StatusNotFound {
			t.Fatalf("GET /events/{unknown id} answered %d %s", r.status, r.body)
		}
	}

	event := testkit.CreateEvent(t, h.store, 4, 10)
	testkit.Eventually(t, 10*time.Second, func() bool { return h.server.CatalogHas(event.ID) },
		"the new event in the catalog without a refresh or a request")
	if r := h.order("alice", "k", orderJSON(event, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("POST /orders for the new event answered %d %s", r.status, r.body)
	}
}

// An event created through another process (or `crowdpass event create`) is
// known at once, not only after the next catalog refresh, by the lookup a
// miss makes where the process has not heard of it yet (deaf).
func TestEventCreatedElsewhereIsOrderableAtOnce(t *testing.T) {
	t.Parallel()
	h := setup(t, options{reconcile: time.Hour, deaf: true})
	testkit.Eventually(t, 10*time.Second, func() bool {
		return h.do(http.MethodGet, "/events/"+uuid.NewString(), nil, nil).status == http.StatusNotFound
	}, "catalog loaded")

	event := testkit.CreateEvent(t, h.store, 4, 10)
	if r := h.do(http.MethodGet, "/events/"+event.ID.String(), nil, nil); r.status != http.StatusOK {
		t.Fatalf("GET /events/{id} of a new event answered %d %s", r.status, r.body)
	}
	other := testkit.CreateEvent(t, h.store, 4, 10)
	if r := h.order("alice", "new-1", orderJSON(other, 0, 1)); r.status != http.StatusAccepted {
		t.Fatalf("POST /orders for a new event answered %d %s", r.status, r.body)
	}
	// An unknown event is still not found, also when asked again (from the
	// remembered miss).
	unknown := orderJSON(crowdpass.Event{ID: uuid.New(), Categories: []crowdpass.Category{{ID: uuid.New()}}}, 0, 1)
	for range 2 {
		if r := h.order("alice", "new-2", unknown); r.status != http.StatusNotFound {
			t.Fatalf("POST /orders for an unknown event answered %d %s", r.status, r.body)
		}
	}
}
