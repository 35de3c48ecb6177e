package main

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/web"
)

// saleStats builds the dashboard's snapshots from the process's metrics,
// the API's catalog and the queue's depth.
func saleStats(registry *prometheus.Registry, events func() []crowdpass.Event, queueDepth func(context.Context) (int, error)) web.StatsSource {
	var mu sync.Mutex
	soldOut := map[string]*time.Time{}
	depth := &sharedDepth{read: queueDepth, fresh: 500 * time.Millisecond}
	return func(ctx context.Context) web.Stats {
		s := web.Stats{At: time.Now(), Events: events(), SoldOutAt: map[string]*time.Time{}}
		families, _ := registry.Gather()
		for _, f := range families {
			switch f.GetName() {
			case "crowdpass_gate_decisions_total":
				s.Accepted += sumWhere(f, "decision", "admitted")
			case "crowdpass_gate_bypassed_total":
				s.Accepted += sumWhere(f, "", "")
			case "crowdpass_worker_decided_total":
				s.Decided += sumWhere(f, "", "")
			case "crowdpass_outbox_backlog_rows":
				s.Backlog = sumWhere(f, "", "")
			case "crowdpass_notification_latency_seconds":
				s.NotifyP50Ms, s.NotifyP99Ms = quantile(f, 0.5)*1000, quantile(f, 0.99)*1000
			}
		}
		if n, err := depth.get(ctx); err == nil {
			s.QueueDepth = n
		} else {
			s.Unavailable = append(s.Unavailable, "queue depth")
		}
		mu.Lock()
		defer mu.Unlock()
		for _, e := range s.Events {
			for _, c := range e.Categories {
				id := c.ID.String()
				if c.Remaining == 0 && soldOut[id] == nil {
					t := s.At
					soldOut[id] = &t
				}
				s.SoldOutAt[id] = soldOut[id]
			}
		}
		return s
	}
}

// sharedDepth reads the queue's depth for every dashboard stream at once:
// one read at a time, its value shared while fresh, so that many open
// dashboards (a public page) cost the broker one passive declare now and
// then, and never hold the publisher's inspection slots that the API's
// reconcile needs.
type sharedDepth struct {
	read  func(context.Context) (int, error)
	fresh time.Duration

	mu   sync.Mutex
	n    int
	err  error
	at   time.Time // of the last read's end; zero before the first
	busy bool
}

var errNoDepthYet = errors.New("the queue's depth is being read")

func (d *sharedDepth) get(ctx context.Context) (int, error) {
	d.mu.Lock()
	if d.busy || (!d.at.IsZero() && time.Since(d.at) < d.fresh) {
		n, err := d.n, d.err
		if d.at.IsZero() {
			err = errNoDepthYet
		}
		d.mu.Unlock()
		return n, err
	}
	d.busy = true
	d.mu.Unlock()
	n, err := d.read(ctx)
	d.mu.Lock()
	d.n, d.err, d.at, d.busy = n, err, time.Now(), false
	d.mu.Unlock()
	return n, err
}

// sumWhere adds the values of a family's series whose label has the value
// (all series when label is "").
func sumWhere(f *dto.MetricFamily, label, value string) float64 {
	total := 0.0
	for _, m := range f.GetMetric() {
		if label != "" {
			match := false
			for _, l := range m.GetLabel() {
				match = match || (l.GetName() == label && l.GetValue() == value)
			}
			if !match {
				continue
			}
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		}
	}
	return total
}

// quantile estimates a quantile of a histogram from its buckets.
func quantile(f *dto.MetricFamily, q float64) float64 {
	for _, m := range f.GetMetric() {
		h := m.GetHistogram()
		if h == nil || h.GetSampleCount() == 0 {
			continue
		}
		rank := q * float64(h.GetSampleCount())
		prevBound, prevCount := 0.0, 0.0
		for _, b := range h.GetBucket() {
			count := float64(b.GetCumulativeCount())
			if count >= rank {
				if count == prevCount || math.IsInf(b.GetUpperBound(), 1) {
					return prevBound
				}
				return prevBound + (b.GetUpperBound()-prevBound)*(rank-prevCount)/(count-prevCount)
			}
			prevBound, prevCount = b.GetUpperBound(), count
		}
		return prevBound
	}
	return 0
}
