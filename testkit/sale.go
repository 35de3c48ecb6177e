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

// CheckInvariants fails the test for every contract invariant that does
// not hold, each checked with plain SQL (postgres.Store.Audit). Outbox rows
// not yet published are not counted: most tests run no relay.
func CheckInvariants(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	violations, err := postgres.NewStore(pool, nil).Audit(ctx)
	if err != nil {
		t.Fatalf("auditing: %v", err)
	}
	for _, v := range violations {
		if v.Count != 0 && v.Invariant != "every outbox row published" {
			t.Errorf("invariant %q violated %d times", v.Invariant, v.Count)
		}
	}
}
