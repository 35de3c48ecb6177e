// Package broker is the RabbitMQ adapter: the topology derived from a
// namespace in one place, connections, and the confirming publisher.
package broker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DeliveryLimit is how many times ticket_orders hands out a message before
// dead-lettering it: enough to outlive crashes and restarts, few enough that
// a message that kills its consumer does not circulate for ever.
const DeliveryLimit = 20

// Topology names every queue and exchange of one deployment.
type Topology struct {
	Namespace string
}

// Orders is the quorum queue of order requests.
func (t Topology) Orders() string { return t.Namespace + "ticket_orders" }

// DeadLetters is where undecidable order requests end.
func (t Topology) DeadLetters() string { return t.Namespace + "ticket_orders.dlq" }

// Outcomes is the topic exchange of decided orders.
func (t Topology) Outcomes() string { return t.Namespace + "order_events" }

// NotifierQueue is a name for one notifier's own queue on order_events:
// namespaced like every other, and unique to the connection that declares it.
func (t Topology) NotifierQueue() string {
	return t.Namespace + "order_events.notifier." + rand.Text()
}

// Declare declares everything idempotently; declaring twice is harmless.
func (t Topology) Declare(ch *amqp.Channel) error {
	if _, err := ch.QueueDeclare(t.DeadLetters(), true, false, false, false, amqp.Table{
		amqp.QueueTypeArg: amqp.QueueTypeQuorum,
	}); err != nil {
		return fmt.Errorf("declaring queue %s: %w", t.DeadLetters(), err)
	}
	if _, err := ch.QueueDeclare(t.Orders(), true, false, false, false, amqp.Table{
		amqp.QueueTypeArg:           amqp.QueueTypeQuorum,
		"x-delivery-limit":          int32(DeliveryLimit),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": t.DeadLetters(),
	}); err != nil {
		return fmt.Errorf("declaring queue %s: %w", t.Orders(), err)
	}
	if err := ch.ExchangeDeclare(t.Outcomes(), amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declaring exchange %s: %w", t.Outcomes(), err)
	}
	return nil
}

// Delete removes everything Declare made; tests use it to clean up.
func (t Topology) Delete(ch *amqp.Channel) error {
	_, err1 := ch.QueueDelete(t.Orders(), false, false, false)
	_, err2 := ch.QueueDelete(t.DeadLetters(), false, false, false)
	err3 := ch.ExchangeDelete(t.Outcomes(), false, false)
	return errors.Join(err1, err2, err3)
}

// Dial connects to the broker, naming the connection so operators can tell
// the roles apart in the management UI. It gives up when ctx is done.
func Dial(ctx context.Context, url, name string) (*amqp.Connection, error) {
	conn, _, err := dial(ctx, url, name, 0, nil)
	return conn, err
}

// dial is Dial whose connection, given a linger, gathers its writes
// (lingerConn) while worth says it pays off. cut closes the connection's
// socket at once, under amqp091-go: its own close waits for locks that a
// write the broker does not read holds.
func dial(ctx context.Context, url, name string, linger time.Duration, worth func() bool) (conn *amqp.Connection, cut func(), err error) {
	deadline, ok := ctx.Deadline()
	timeout := 10 * time.Second
	if ok {
		timeout = time.Until(deadline)
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(name)
	var raw net.Conn // set by DialConfig's call of the dialler, before it returns
	plain := amqp.DefaultDial(timeout)
	netDial := func(network, addr string) (net.Conn, error) {
		c, err := plain(network, addr)
		if err != nil {
			return nil, err
		}
		raw = c
		if linger > 0 {
			return newLingerConn(c, linger, worth), nil
		}
		return c, nil
	}
	conn, err = amqp.DialConfig(url, amqp.Config{
		Heartbeat:  10 * time.Second,
		Locale:     "en_US",
		Properties: props,
		Dial:       netDial,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to broker: %w", err)
	}
	return conn, func() { _ = raw.Close() }, nil
}

// Close closes conn, waiting for the broker's answer for at most 5 s:
// amqp091-go's own Close waits for it without a deadline, so a stalled
// broker would hold a shutdown until its heartbeats run out, or for ever.
func Close(conn *amqp.Connection) error {
	return conn.CloseDeadline(time.Now().Add(closeTimeout))
}

const closeTimeout = 5 * time.Second

// closeOrCut closes conn as Close does, and cuts its socket if that takes
// longer than closeTimeout. amqp091-go's close, like its own shutdown after
// a missed heartbeat, waits for the channel that a publish blocked in a
// write to a broker that reads nothing holds, for as long as the broker
// stalls; the cut fails that write, and the close goes on.
func closeOrCut(conn *amqp.Connection, cut func()) {
	t := time.AfterFunc(closeTimeout, cut)
	defer t.Stop()
	_ = Close(conn)
}

// Open dials the broker (for at most 10 seconds), opens a channel and
// declares the topology on it: the start of every consumer's session.
// Closing the connection closes the channel.
func (t Topology) Open(ctx context.Context, url, name string) (*amqp.Connection, *amqp.Channel, error) {
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := Dial(dialCtx, url, name)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		Close(conn)
		return nil, nil, fmt.Errorf("opening channel: %w", err)
	}
	if err := t.Declare(ch); err != nil {
		Close(conn)
		return nil, nil, err
	}
	return conn, ch, nil
}
