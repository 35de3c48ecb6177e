package broker_test

import (
	"strings"
	"testing"

	"github.com/crowdpass/crowdpass/broker"
)

func TestANotifierQueueIsNamespacedAndItsOwn(t *testing.T) {
	topo := broker.Topology{Namespace: "t1."}
	a, b := topo.NotifierQueue(), topo.NotifierQueue()
	if !strings.HasPrefix(a, "t1.order_events.notifier.") || a == b {
		t.Errorf("notifier queues %q and %q: want the namespace's prefix and one name each", a, b)
	}
}
