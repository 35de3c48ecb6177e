package testkit

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/postgres"
)

// CreateEvent creates an event with one category per capacity given.
func CreateEvent(t testing.TB, store *postgres.Store, maxPerCustomer int, capacities ...int) crowdpass.Event {
	t.Helper()
	spec := crowdpass.EventSpec{Name: "Test " + Token(), MaxPerCustomer: &maxPerCustomer}
	for i, c := range capacities {
		spec.Categories = append(spec.Categories, crowdpass.CategorySpec{Name: fmt.Sprintf("Cat %d", i+1), Capacity: c, PriceCents: 1000})
	}
	event, err := store.CreateEvent(Context(t), spec)
	if err != nil {
		t.Fatalf("creating event: %v", err)
	}
	return event
}

// OrderRequest builds a valid order request as the API would queue it.
func OrderRequest(customer, key string, event crowdpass.Event, category, quantity int) crowdpass.OrderRequest {
	return crowdpass.OrderRequest{
		OrderID:        crowdpass.OrderID(customer, key),
		CustomerID:     customer,
		IdempotencyKey: key,
		EventID:        event.ID,
		CategoryID:     event.Categories[category].ID,
		Quantity:       quantity,
		AcceptedAt:     crowdpass.NewTime(time.Now()),
	}
}

// Publisher publishes raw messages on a namespace's order queue with
// publisher confirms.
type Publisher struct {
	t    testing.TB
	topo broker.Topology
	ch   *amqp.Channel
}

// NewPublisher declares the topology and opens a confirming channel.
func NewPublisher(t testing.TB, topo broker.Topology) *Publisher {
	t.Helper()
	ctx := Context(t)
	conn, err := broker.Dial(ctx, AMQPURL(), "crowdpass-test-publisher")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Declare(ch); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return &Publisher{t: t, topo: topo, ch: ch}
}

// Orders publishes order requests and waits for the broker to confirm them all.
func (p *Publisher) Orders(reqs ...crowdpass.OrderRequest) {
	p.t.Helper()
	bodies := make([][]byte, len(reqs))
	for i, r := range reqs {
		b, err := json.Marshal(r)
		if err != nil {
			p.t.Fatal(err)
		}
		bodies[i] = b
	}
	p.Raw(bodies...)
}

// Raw publishes bodies as they are and waits for the broker's confirms.
func (p *Publisher) Raw(bodies ...[]byte) {
	p.t.Helper()
	ctx := Context(p.t)
	confirms := make([]*amqp.DeferredConfirmation, 0, len(bodies))
	for _, b := range bodies {
		c, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, "", p.topo.Orders(), true, false, amqp.Publishing{
			ContentType:  "application/json",
			DeliveryMode: amqp.Persistent,
			Body:         b,
		})
		if err != nil {
			p.t.Fatalf("publishing: %v", err)
		}
		confirms = append(confirms, c)
	}
	for _, c := range confirms {
		ok, err := c.WaitContext(ctx)
		if err != nil || !ok {
			p.t.Fatalf("publish not confirmed: ok=%v err=%v", ok, err)
		}
	}
}

// QueueDepth returns the ready messages of a queue.
func (p *Publisher) QueueDepth(name string) int {
	p.t.Helper()
	q, err := p.ch.QueueDeclarePassive(name, true, false, false, false, nil)
	if err != nil {
		p.t.Fatalf("inspecting %s: %v", name, err)
	}
	return q.Messages
}

// Eventually polls cond every 20ms until it holds, failing the test with msg
// if it does not within timeout.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CountDecided returns how many orders are no longer pending.
func CountDecided(t testing.TB, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(Context(t), "SELECT count(*) FROM orders WHERE status <> 'pending'").Scan(&n); err != nil {
		t.Fatalf("counting decided orders: %v", err)
	}
	return n
}

// invariants are the contract's invariants, each a plain SQL query that
// counts violations.
var invariants = []struct{ name, query string }{
	{"remaining is never negative", `SELECT count(*) FROM ticket_categories WHERE remaining < 0 OR remaining > capacity`},
	{"capacity - remaining = tickets of confirmed orders", `
		SELECT count(*) FROM ticket_categories c
		WHERE c.capacity - c.remaining <> (SELECT coalesce(sum(quantity), 0) FROM orders o WHERE o.category_id = c.id AND o.status = 'confirmed')`},
	{"capacity - remaining = ticket rows", `
		SELECT count(*) FROM ticket_categories c
		WHERE c.capacity - c.remaining <> (SELECT count(*) FROM tickets t WHERE t.category_id = c.id)`},
	{"each confirmed order has one ticket per unit", `
		SELECT count(*) FROM orders o
		WHERE (SELECT count(*) FROM tickets t WHERE t.order_id = o.id) <> CASE WHEN o.status = 'confirmed' THEN o.quantity ELSE 0 END`},
	{"no seat twice", `SELECT count(*) FROM (SELECT category_id, seat FROM tickets GROUP BY 1, 2 HAVING count(*) > 1) d`},
	{"seats within capacity", `SELECT count(*) FROM tickets t JOIN ticket_categories c ON c.id = t.category_id WHERE t.seat < 1 OR t.seat > c.capacity`},
	{"one order per customer and key", `SELECT count(*) FROM (SELECT customer_id, idempotency_key FROM orders GROUP BY 1, 2 HAVING count(*) > 1) d`},
	{"every decided order has exactly one outcome in outbox", `
		SELECT count(*) FROM orders o
		WHERE o.status <> 'pending' AND (SELECT count(*) FROM outbox x WHERE x.aggregate_type = 'order' AND x.aggregate_id = o.id) <> 1`},
	{"no customer passes max_per_customer", `
		SELECT count(*) FROM (
			SELECT o.event_id, o.customer_id FROM orders o JOIN events e ON e.id = o.event_id
			WHERE o.status = 'confirmed' GROUP BY o.event_id, o.customer_id, e.max_per_customer
			HAVING sum(o.quantity) > e.max_per_customer) d`},
}

// CheckInvariants fails the test for every contract invariant that does not hold.
func CheckInvariants(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, inv := range invariants {
		var violations int
		if err := pool.QueryRow(ctx, inv.query).Scan(&violations); err != nil {
			t.Errorf("checking %q: %v", inv.name, err)
			continue
		}
		if violations != 0 {
			t.Errorf("invariant %q violated %d times", inv.name, violations)
		}
	}
}
