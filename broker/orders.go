package broker

import (
	"context"
	"encoding/json"
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

// Enqueue publishes an order request and returns once the broker confirmed it.
func (q OrderQueue) Enqueue(ctx context.Context, r crowdpass.OrderRequest) error {
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding order request: %w", err)
	}
	return q.Publisher.Publish(ctx, "", q.Topology.Orders(), amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		MessageId:    r.OrderID.String(),
		Timestamp:    time.Now(),
		Type:         "order.requested",
		Body:         body,
	})
}

// Ready reports whether orders can be queued now.
func (q OrderQueue) Ready() bool { return q.Publisher.Ready() }

// Drained reports whether no order waits in the queue to be delivered.
func (q OrderQueue) Drained(ctx context.Context) (bool, error) {
	n, err := q.Publisher.QueueDepth(ctx, q.Topology.Orders())
	return n == 0, err
}
