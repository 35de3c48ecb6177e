package broker_test

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/testkit"
)

// runPublisher starts a publisher on url under a namespace of its own and
// waits until it is connected.
func runPublisher(t *testing.T, url string, opts ...func(*broker.PublisherConfig)) (*broker.Publisher, broker.Topology) {
	t.Helper()
	topo := broker.Topology{Namespace: testkit.Namespace(t)}
	cfg := broker.PublisherConfig{
		URL: url, Name: "publisher-test", Declare: topo.Declare,
		RetryMin: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond, Logger: testkit.Logger(t),
	}
	for _, o := range opts {
		o(&cfg)
	}
	pub := broker.NewPublisher(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = pub.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	testkit.Eventually(t, 10*time.Second, pub.Ready, "publisher not connected")
	return pub, topo
}

// An order whose publish was written but whose connection was lost before
// the confirm may be queued, so it is sent again on the next connection
// rather than reported as not queued (which the API would turn into a 503
// that promises nothing was created).
func TestAnOrderWhoseConnectionWasLostBeforeItsConfirmIsSentAgain(t *testing.T) {
	t.Parallel()
	proxy, url := testkit.NewURLProxy(t, testkit.AMQPURL())
	pub, topo := runPublisher(t, url)
	queue := broker.OrderQueue{Publisher: pub, Topology: topo}
	req := crowdpass.OrderRequest{
		OrderID: crowdpass.OrderID("c1", "k1"), CustomerID: "c1", IdempotencyKey: "k1",
		EventID: uuid.New(), CategoryID: uuid.New(), Quantity: 1, AcceptedAt: crowdpass.NewTime(time.Now()),
	}

	proxy.Stall()
	t.Cleanup(proxy.Resume)
	held := proxy.Held()
	result := make(chan error, 1)
	go func() { result <- queue.Enqueue(testkit.Context(t), req) }()
	// More than a heartbeat's 8 bytes: the publish's frames.
	testkit.Eventually(t, 10*time.Second, func() bool { return proxy.Held() > held+100 }, "the publish never reached the proxy")
	proxy.Cut() // the broker never gets the held message, nor its sender a confirm
	proxy.Resume()

	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("Enqueue = %v, want nil: the message is sent again once reconnected", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Enqueue still waiting 30 s after the connection was cut")
	}
	check := testkit.NewPublisher(t, topo)
	if n := check.QueueDepth(topo.Orders()); n != 1 {
		t.Errorf("%d messages queued, want the one resent", n)
	}
}

// A publish the broker does not read (stalled, or holding publishers back
// by TCP flow control) ends soon after the caller's deadline (5 s of grace):
// the connection is cut under it, instead of the caller hanging until the
// broker wakes; the publisher then connects again. That holds too when the
// client library has begun to shut the connection down first, after a
// missed heartbeat: its shutdown waits for the channel the blocked write
// holds, and so did a close made through it.
func TestAPublishTheBrokerDoesNotReadEndsAtItsDeadline(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, query string }{
		{"heartbeats go on", ""},
		{"a heartbeat is missed first", "heartbeat=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			proxy, raw := testkit.NewURLProxy(t, testkit.AMQPURL())
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			u.RawQuery = tc.query
			pub, topo := runPublisher(t, u.String())
			proxy.Stall()
			t.Cleanup(proxy.Resume)

			// Far more than the sockets' buffers hold, so that the write blocks.
			body := make([]byte, 64<<20)
			deadline := 500 * time.Millisecond
			if tc.query != "" {
				deadline = 3 * time.Second // past the missed heartbeats
			}
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			result := make(chan error, 1)
			go func() {
				result <- pub.Publish(ctx, "", topo.Orders(), amqp.Publishing{MessageId: "big", Body: body})
			}()
			select {
			case err := <-result:
				if err == nil {
					t.Fatal("Publish = nil through a stalled broker")
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("Publish still blocked 20 s after its %s deadline", deadline)
			}
			proxy.Resume()
			testkit.Eventually(t, 20*time.Second, pub.Ready, "publisher not connected again")
			ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel2()
			testkit.Eventually(t, 20*time.Second, func() bool {
				return pub.Publish(ctx2, "", topo.Orders(), amqp.Publishing{MessageId: "small", Body: []byte("{}")}) == nil
			}, "no publish confirmed after the broker woke")
		})
	}
}

// A broker that stops confirming, its connection open, makes the publisher
// not ready once a publish has waited StalledAfter with no confirm coming
// (/readyz then reads down rather than ok while every order waits out its
// deadline), and ready again once confirms come.
func TestAPublisherWhoseConfirmsStopIsNotReady(t *testing.T) {
	t.Parallel()
	proxy, url := testkit.NewURLProxy(t, testkit.AMQPURL())
	pub, topo := runPublisher(t, url, func(c *broker.PublisherConfig) { c.StalledAfter = 300 * time.Millisecond })
	publish := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return pub.Publish(ctx, "", topo.Orders(), amqp.Publishing{MessageId: "m", Body: []byte("{}")})
	}
	if err := publish(10 * time.Second); err != nil {
		t.Fatalf("Publish before the stall = %v", err)
	}
	if !pub.Ready() {
		t.Fatal("publisher not ready after a confirmed publish")
	}

	proxy.Stall()
	t.Cleanup(proxy.Resume)
	if err := publish(200 * time.Millisecond); !errors.Is(err, crowdpass.ErrUnconfirmed) {
		t.Fatalf("Publish through a stalled broker = %v, want ErrUnconfirmed", err)
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return !pub.Ready() }, "publisher still ready with a publish unconfirmed for 10 s")

	proxy.Resume()
	testkit.Eventually(t, 20*time.Second, pub.Ready, "publisher not ready again after the broker woke")
	if err := publish(10 * time.Second); err != nil {
		t.Fatalf("Publish after the broker woke = %v", err)
	}
}

// A queue inspection the broker does not answer ends at its caller's
// deadline (the reconcile and the dashboard call it every second), and past
// four such, the next fails at once rather than pile up behind them.
func TestAQueueInspectionTheBrokerDoesNotAnswerEndsAtItsDeadline(t *testing.T) {
	t.Parallel()
	proxy, url := testkit.NewURLProxy(t, testkit.AMQPURL())
	pub, topo := runPublisher(t, url)
	proxy.Stall()
	t.Cleanup(proxy.Resume)

	depth := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		result := make(chan error, 1)
		go func() {
			_, err := pub.QueueDepth(ctx, topo.Orders())
			result <- err
		}()
		select {
		case err := <-result:
			return err
		case <-time.After(20 * time.Second):
			t.Fatalf("QueueDepth still blocked 20 s after its %s deadline", timeout)
			return nil
		}
	}
	for range 4 {
		if err := depth(200 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("QueueDepth through a stalled broker = %v, want the deadline", err)
		}
	}
	if err := depth(time.Second); !errors.Is(err, broker.ErrBusy) {
		t.Fatalf("QueueDepth behind four stalled ones = %v, want ErrBusy", err)
	}
	proxy.Resume()
	testkit.Eventually(t, 20*time.Second, func() bool { return depth(5*time.Second) == nil }, "queue inspected after the broker woke")
}
