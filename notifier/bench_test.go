package notifier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/notifier"
	"github.com/crowdpass/crowdpass/postgres"
	"github.com/crowdpass/crowdpass/relay"
	"github.com/crowdpass/crowdpass/testkit"
)

// BenchmarkNotificationLatency decides b.N orders in batches of 100 (the
// worker's commit), with the relay and a notifier running and 1,000 buyers
// connected, and reports how long each outcome took from processed_at to
// arriving on its buyer's socket: once as fast as one decider goes, which
// saturates the two cores, and once paced at about 1,000 outcomes/s.
//
//	go test -run '^$' -bench NotificationLatency -benchtime 10000x ./notifier/
func BenchmarkNotificationLatency(b *testing.B) {
	b.Run("unpaced", func(b *testing.B) { notificationLatency(b, 0) })
	b.Run("1000-per-s", func(b *testing.B) { notificationLatency(b, 100*time.Millisecond) })
}

// notificationLatency decides batches of 100, pausing pace after each.
func notificationLatency(b *testing.B, pace time.Duration) {
	const sockets = 1000
	db := testkit.NewDB(b)
	store := postgres.NewStore(db.Pool, nil)
	topo := broker.Topology{Namespace: testkit.Namespace(b)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()

	pub := broker.NewPublisher(broker.PublisherConfig{URL: testkit.AMQPURL(), Name: "bench-relay", Declare: topo.Declare})
	r := relay.New(relay.Config{Exchange: topo.Outcomes(), Batch: 500}, store, pub)
	authority := benchAuthority()
	n := notifier.New(notifier.Config{AMQPURL: testkit.AMQPURL(), Topology: topo, Buffer: 1024}, store, nil, authority)
	wg.Go(func() { pub.Run(ctx) })
	wg.Go(func() { r.Run(ctx) })
	wg.Go(func() { n.Run(ctx) })
	url := serve(b, n)
	for !n.Ready() || !pub.Ready() {
		time.Sleep(10 * time.Millisecond)
	}

	latencies := make(chan time.Duration, b.N+sockets)
	for i := range sockets {
		tok, _ := authority.Issue(fmt.Sprintf("buyer-%d", i), false, time.Hour)
		c, _, err := websocket.Dial(ctx, url+"?access_token="+tok, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseNow()
		wg.Go(func() {
			for {
				_, data, err := c.Read(ctx)
				if err != nil {
					return
				}
				arrived := time.Now()
				var f struct {
					ProcessedAt crowdpass.Time `json:"processed_at"`
				}
				if json.Unmarshal(data, &f) == nil {
					latencies <- arrived.Sub(f.ProcessedAt.Time)
				}
			}
		})
	}

	event := testkit.CreateEvent(b, store, 1000, crowdpass.MaxCapacity)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i += 100 {
		var reqs []crowdpass.OrderRequest
		for j := i; j < min(i+100, b.N); j++ {
			reqs = append(reqs, testkit.OrderRequest(fmt.Sprintf("buyer-%d", j%sockets), fmt.Sprint(j), event, 0, 1))
		}
		if _, err := store.DecideOrders(ctx, reqs); err != nil {
			b.Fatal(err)
		}
		if pace > 0 {
			time.Sleep(pace) // pacing the load, not waiting for a result
		}
	}
	decided := time.Since(start)
	got := make([]time.Duration, 0, b.N)
	timeout := time.After(60 * time.Second)
	for len(got) < b.N {
		select {
		case d := <-latencies:
			got = append(got, d)
		case <-timeout:
			b.Fatalf("only %d of %d outcomes arrived", len(got), b.N)
		}
	}
	b.StopTimer()
	slices.Sort(got)
	b.ReportMetric(float64(b.N)/decided.Seconds(), "outcomes/s")
	b.ReportMetric(float64(got[len(got)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(got[len(got)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(got[len(got)-1].Microseconds())/1000, "max-ms")
}

// BenchmarkIdleSocketMemory opens b.N idle sockets to one notifier and
// reports the heap per socket, both ends being in this process: the
// server's share is at most that.
//
//	go test -run '^$' -bench IdleSocketMemory -benchtime 5000x ./notifier/
func BenchmarkIdleSocketMemory(b *testing.B) {
	db := testkit.NewDB(b)
	store := postgres.NewStore(db.Pool, nil)
	authority := benchAuthority()
	n := notifier.New(notifier.Config{AMQPURL: testkit.AMQPURL(), Topology: broker.Topology{Namespace: testkit.Namespace(b)}}, store, nil, authority)
	url := serve(b, n)
	tok, _ := authority.Issue("idle", false, time.Hour)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	conns := make([]*websocket.Conn, 0, b.N)
	for range b.N {
		c, _, err := websocket.Dial(context.Background(), url+"?access_token="+tok, nil)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	b.StopTimer()
	time.Sleep(200 * time.Millisecond) // let the server side settle its goroutines
	runtime.GC()
	runtime.ReadMemStats(&after)
	perSocket := float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse) / float64(b.N)
	b.ReportMetric(perSocket/1024, "KiB/socket(both-ends)")
	b.ReportMetric(float64(1<<30)/perSocket, "sockets/GiB(both-ends)")
	for _, c := range conns {
		c.CloseNow()
	}
}
