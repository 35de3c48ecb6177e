package notifier

import (
	"encoding/json"
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
