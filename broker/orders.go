package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/crowdpass/crowdpass"
)

// OrderQueue puts order requests on ticket_orders through a confirming publisher.
type OrderQueue struct {
	Publisher *Publisher
	Topology  Topology
}

// Enqueue publishes an order request and returns once the broker confirmed
// it. A publish whose channel was lost before its confirm may have been
// queued all the same, so it is sent again (the same message id: workers
// decide an order once) until one is confirmed or ctx ends. Once a message
// has left the process, a failure wraps crowdpass.ErrUnconfirmed: the
// order's fate is unknown. A publish that never left (not connected,
// blocked, refused) fails with its own error: nothing was queued.
func (q OrderQueue) Enqueue(ctx context.Context, r crowdpass.OrderRequest) error {
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding order request: %w", err)
	}
	msg := amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    r.OrderID.String(),
		Timestamp:    time.Now(),
		Type:         "order.requested",
		Body:         body,
	}
	sent := false
	for {
		err := q.Publisher.Publish(ctx, "", q.Topology.Orders(), msg)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, crowdpass.ErrUnconfirmed):
			return err
		case errors.Is(err, ErrChannelLost):
			sent = true
		case errors.Is(err, errChannelDead):
			// Nothing left: the channel was lost before this publish. The
			// publisher reconnects, and the next channel may be a new one.
		case !sent:
			return err
		}
		select {
		case <-ctx.Done():
			if sent {
				return fmt.Errorf("%w: %w", crowdpass.ErrUnconfirmed, err)
			}
			return err
		case <-time.After(resendPause):
		}
	}
}

// resendPause spaces the resends of a publish whose channel was lost while
// the publisher reconnects.
const resendPause = 50 * time.Millisecond

// Ready reports whether orders can be queued now.
func (q OrderQueue) Ready() bool { return q.Publisher.Ready() }

// Drained reports whether no order waits in the queue to be delivered.
func (q OrderQueue) Drained(ctx context.Context) (bool, error) {
	n, err := q.Publisher.QueueDepth(ctx, q.Topology.Orders())
	return n == 0, err
}
