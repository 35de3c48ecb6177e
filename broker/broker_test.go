package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/testkit"
)

func TestANotifierQueueIsNamespacedAndItsOwn(t *testing.T) {
	topo := broker.Topology{Namespace: "t1."}
	a, b := topo.NotifierQueue(), topo.NotifierQueue()
	if !strings.HasPrefix(a, "t1.order_events.notifier.") || a == b {
		t.Errorf("notifier queues %q and %q: want the namespace's prefix and one name each", a, b)
	}
}

// A broker that stops answering never holds a shutdown: closing a
// connection to it gives up after its deadline.
func TestClosingAConnectionToAStalledBrokerEnds(t *testing.T) {
	t.Parallel()
	proxy, url := testkit.NewURLProxy(t, testkit.AMQPURL())
	conn, err := broker.Dial(testkit.Context(t), url, "close-test")
	if err != nil {
		t.Fatal(err)
	}
	proxy.Stall()
	t.Cleanup(proxy.Resume)
	closed := make(chan struct{})
	go func() {
		_ = broker.Close(conn)
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close still waiting for a stalled broker after 20 s")
	}
}
