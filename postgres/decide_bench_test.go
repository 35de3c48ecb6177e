package postgres_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/testkit"
)

// BenchmarkDecideOrders measures the worker's decision path against the real
// database: one transaction per batch, every order from a different customer
// into one hot category, which is the flash sale's shape.
//
//	go test -run '^$' -bench DecideOrders -benchtime 20000x ./postgres/
func BenchmarkDecideOrders(b *testing.B) {
	for _, batch := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			_, store := setupBench(b)
			event := testkit.CreateEvent(b, store, 4, crowdpass.MaxCapacity)
			ctx := b.Context()
			reqs := make([]crowdpass.OrderRequest, 0, batch)
			n := 0
			b.ResetTimer()
			start := time.Now()
			for n < b.N {
				reqs = reqs[:0]
				for ; len(reqs) < batch && n < b.N; n++ {
					reqs = append(reqs, testkit.OrderRequest(fmt.Sprintf("buyer-%d", n), "k", event, 0, 1))
				}
				if _, err := store.DecideOrders(ctx, reqs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "orders/s")
		})
	}
}

// BenchmarkDecideOrdersParallel is four workers deciding batches of 100 at
// once, racing for the same hot category as in a sale.
func BenchmarkDecideOrdersParallel(b *testing.B) {
	_, store := setupBench(b)
	event := testkit.CreateEvent(b, store, 4, crowdpass.MaxCapacity)
	ctx := b.Context()
	var next atomic.Int64
	b.SetParallelism(2) // 2 × GOMAXPROCS(2) = 4 deciders
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		reqs := make([]crowdpass.OrderRequest, 0, 100)
		for pb.Next() {
			reqs = append(reqs, testkit.OrderRequest(fmt.Sprintf("buyer-%d", next.Add(1)), "k", event, 0, 1))
			if len(reqs) == cap(reqs) {
				if _, err := store.DecideOrders(ctx, reqs); err != nil {
					b.Error(err)
					return
				}
				reqs = reqs[:0]
			}
		}
		if len(reqs) > 0 {
			if _, err := store.DecideOrders(ctx, reqs); err != nil {
				b.Error(err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "orders/s")
}
