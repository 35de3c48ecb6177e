package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/crowdpass/crowdpass"
)

func TestHandedOverHoldsEachRowOnceForTwoGenerations(t *testing.T) {
	t.Parallel()
	h := newHandedOver(2)
	row := func(id int64) handedRow { return handedRow{order: uuid.UUID{byte(id)}} }
	for id := int64(1); id <= 4; id++ {
		if !h.add(id, row(id)) { // 1 and 2 fill a generation, 3 and 4 the next
			t.Fatalf("row %d held before it was handed over", id)
		}
	}
	if h.add(3, row(3)) {
		t.Error("row 3 handed over twice") // a retried publish: not pushed again
	}
	if _, ok := h.take(2, row(9).order); ok {
		t.Error("row 2 taken for another order's copy")
	}
	if _, ok := h.take(2, row(2).order); !ok {
		t.Error("row 2 not held")
	}
	if _, ok := h.take(2, row(2).order); ok {
		t.Error("row 2 held after it was taken")
	}
	h.add(5, row(5)) // 3 and 4's generation is full: 1's goes
	if _, ok := h.take(1, row(1).order); ok {
		t.Error("row 1 outlived two generations")
	}
	for _, id := range []int64{3, 4, 5} {
		if _, ok := h.take(id, row(id).order); !ok {
			t.Errorf("row %d of the last two generations forgotten", id)
		}
	}
}

// The broker's copy of an outcome the relay handed over is told by its
// CorrelationId and dropped unread, yet still timed; a copy naming another
// order is pushed; a copy without one is read to tell.
func TestTheBrokerCopyOfAHandedOverOutcomeIsDroppedUnread(t *testing.T) {
	t.Parallel()
	var decided []uuid.UUID
	n := New(Config{Decided: func(o crowdpass.Outcome) { decided = append(decided, o.ID) }}, nil, nil, nil)
	outcome := func(id int64) crowdpass.OutboxMessage {
		at := crowdpass.Time{Time: time.Now()}
		o := crowdpass.Outcome{Type: crowdpass.EventOrderConfirmed, CustomerID: "alice",
			Order: crowdpass.Order{ID: uuid.New(), Status: crowdpass.StatusConfirmed, ProcessedAt: &at}}
		payload, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		return crowdpass.OutboxMessage{ID: id, AggregateID: o.ID, EventType: o.Type, Payload: payload}
	}
	copyOf := func(row crowdpass.OutboxMessage, correlation string, body []byte) amqp.Delivery {
		return amqp.Delivery{MessageId: strconv.FormatInt(row.ID, 10), CorrelationId: correlation, Body: body}
	}
	rows := []crowdpass.OutboxMessage{outcome(1), outcome(2), outcome(3)}
	n.Deliver(rows)
	if len(decided) != 3 {
		t.Fatalf("%d of 3 handed-over outcomes passed to Decided", len(decided))
	}

	n.fromBroker(copyOf(rows[0], rows[0].AggregateID.String(), []byte("not read")))
	if got := brokerLagCount(t, n); got != 1 {
		t.Errorf("broker copy of row 1 timed %d times; want 1, from the handed-over processed_at", got)
	}
	other := outcome(2) // row 2 announcing another order: not the copy handed over
	n.fromBroker(copyOf(other, other.AggregateID.String(), other.Payload))
	n.fromBroker(copyOf(rows[2], "", rows[2].Payload))
	if len(decided) != 4 || decided[3] != other.AggregateID {
		t.Errorf("Decided got %v after the copies; want the 3 handed over, then %s", decided, other.AggregateID)
	}
	if got := brokerLagCount(t, n); got != 3 {
		t.Errorf("broker copies timed %d times; want 3", got)
	}
}

func brokerLagCount(t *testing.T, n *Notifier) uint64 {
	t.Helper()
	var m dto.Metric
	if err := n.lag.WithLabelValues("broker").(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// Where a catch-up after a loss of the broker starts reading the outbox.
func TestACatchUpStartsBelowWhatTheBrokerDelivered(t *testing.T) {
	t.Parallel()
	live := func(n *Notifier, id int64) { // an outcome the broker delivers
		o := crowdpass.Outcome{Type: crowdpass.EventOrderConfirmed, CustomerID: "alice", Order: crowdpass.Order{ID: uuid.New()}}
		body, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		n.fromBroker(amqp.Delivery{MessageId: strconv.FormatInt(id, 10), Body: body})
	}
	start := func(prepare func(n *Notifier, o *recordingOutbox)) (after int64) {
		o := &recordingOutbox{last: 60_000}
		n := New(Config{Outbox: o}, nil, nil, nil)
		n.noteLoss() // the first session
		prepare(n, o)
		o.down = false
		if err := n.catchUp(context.Background()); err != nil {
			t.Fatal(err)
		}
		return o.afters[len(o.afters)-1]
	}

	// The relay of this process went on handing rows over while the broker
	// was lost: the other relays' outcomes of the gap are below them.
	if got := start(func(n *Notifier, _ *recordingOutbox) {
		live(n, 15_000)
		n.observeSeen(40_000) // handed over by the relay
		n.noteLoss()
	}); got != 5_000 {
		t.Errorf("read after %d, want 5000: 10,000 below the broker's last", got)
	}
	// Nothing known before the loss: below the first outcome since.
	if got := start(func(n *Notifier, o *recordingOutbox) {
		o.down = true
		if n.catchUp(context.Background()) == nil {
			t.Fatal("the outbox's end read while down")
		}
		n.noteLoss()
		live(n, 50_000)
	}); got != 40_000 {
		t.Errorf("read after %d, want 40000: 10,000 below the first live outcome", got)
	}
	// A second loss before the first gap was read keeps the lower start.
	if got := start(func(n *Notifier, o *recordingOutbox) {
		if err := n.catchUp(context.Background()); err != nil { // marks the end
			t.Fatal(err)
		}
		live(n, 61_000)
		n.noteLoss()
		o.down = true
		if n.catchUp(context.Background()) == nil {
			t.Fatal("caught up while the outbox was down")
		}
		live(n, 75_000)
		n.noteLoss()
	}); got != 51_000 {
		t.Errorf("read after %d, want 51000: the first gap's start", got)
	}
}

// recordingOutbox ends at last, holds no rows, and records where each
// read starts; it refuses reads while down.
type recordingOutbox struct {
	last   int64
	down   bool
	afters []int64
}

func (o *recordingOutbox) OutboxAfter(_ context.Context, after int64, _ int) ([]crowdpass.OutboxMessage, error) {
	if o.down {
		return nil, errors.New("outbox down")
	}
	o.afters = append(o.afters, after)
	return nil, nil
}

func (o *recordingOutbox) OutboxLastID(context.Context) (int64, error) {
	if o.down {
		return 0, errors.New("outbox down")
	}
	return o.last, nil
}
