package main

import (
	"context"
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
		if n, err := queueDepth(ctx); err == nil {
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
