package api_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPostOrder measures POST /orders through the real router with
// real Redis and RabbitMQ (no workers), next to a bare handler that answers
// 202 without work over the same client, and the edge sold-out path.
//
//	go test -run '^$' -bench PostOrder -benchtime 20000x ./api/
func BenchmarkPostOrder(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Location", "/orders/0")
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, `{"order_id":"00000000-0000-0000-0000-000000000000","status":"pending"}`+"\n")
		}))
		defer srv.Close()
		h := &harness{t: b, url: srv.URL, client: benchClient()}
		h.runOrders(b, func(int64) []byte { return []byte(`{}`) }, http.StatusAccepted)
	})
	b.Run("real", func(b *testing.B) {
		h := setup(b, options{})
		h.client = benchClient()
		event := h.event(1000, 10_000_000)
		body := orderJSON(event, 0, 1)
		h.runOrders(b, func(int64) []byte { return body }, http.StatusAccepted)
	})
	b.Run("sold_out", func(b *testing.B) {
		h := setup(b, options{})
		h.client = benchClient()
		event := h.event(4, 1)
		body := orderJSON(event, 0, 1)
		if r := h.order("first", "k", body); r.status != http.StatusAccepted {
			b.Fatalf("first order: %d", r.status)
		}
		h.waitGate(event.Categories[0].ID, 0)
		h.runOrders(b, func(int64) []byte { return body }, http.StatusConflict)
	})
}

func benchClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}}
}

// runOrders posts b.N orders from 64 concurrent clients, each order from
// its own customer and key, and reports requests per second.
func (h *harness) runOrders(b *testing.B, body func(int64) []byte, want int) {
	tokens := make([]string, 64)
	for i := range tokens {
		if h.authority != nil {
			tokens[i] = h.token(fmt.Sprintf("bench-%d", i))
		}
	}
	var next, worker atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		tok := tokens[worker.Add(1)%int64(len(tokens))]
		for pb.Next() {
			i := next.Add(1)
			req, _ := http.NewRequest(http.MethodPost, h.url+"/orders", strings.NewReader(string(body(i))))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Idempotency-Key", fmt.Sprintf("bench-%d", i))
			req.Header.Set("Content-Type", "application/json")
			resp, err := h.client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				b.Errorf("status %d, want %d", resp.StatusCode, want)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// benchParallelism × GOMAXPROCS clients post at once: a stampede has many
// requests in flight, and the broker confirms them in batches.
const benchParallelism = 128
