package api

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's Prometheus series.
type metrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	inFlight    prometheus.Gauge
	gate        *prometheus.CounterVec
	confirm     prometheus.Histogram
	slowPath    prometheus.Counter
	refused     prometheus.Counter
	reconcile   *prometheus.CounterVec
	remembered  *prometheus.CounterVec
	existing    *prometheus.CounterVec
	waiting     prometheus.Gauge
	unconfirmed prometheus.Counter
	restored    prometheus.Counter
	// recoveryWaits counts answers given during a recovery, looked at again after it.
	recoveryWaits prometheus.Counter
}

// registerExisting adds the size of the filter of orders that exist.
func (m *metrics) registerExisting(reg prometheus.Registerer, n func() float64) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "crowdpass_orders_existing",
		Help: "Order ids in the filter of orders in PostgreSQL (walked at start, then added as decided); -1 until the walk at start is done.",
	}, n))
}

// registerCatalogAge adds the catalog's age, read at each scrape.
func (m *metrics) registerCatalogAge(reg prometheus.Registerer, age func() float64) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "crowdpass_catalog_age_seconds",
		Help: "Time since the event catalog was last read from PostgreSQL (-1: never; the copy from Redis, if any, serves meanwhile).",
	}, age))
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crowdpass_http_requests_total", Help: "HTTP requests by route and status.",
		}, []string{"route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "crowdpass_http_request_duration_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "crowdpass_http_requests_in_flight", Help: "HTTP requests being served.",
		}),
		gate: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crowdpass_gate_decisions_total", Help: "Edge gate decisions on POST /orders.",
		}, []string{"decision"}),
		confirm: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "crowdpass_publish_confirm_seconds",
			Help:    "Time from publishing an order to the broker's confirm.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		slowPath: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "crowdpass_gate_bypassed_total", Help: "Orders admitted without the Redis gate because it was unreachable.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "crowdpass_gate_refusals_total",
			Help: "POST /orders that a fresh sold-out view sent to the gate's single SET NX GET instead of its admission script.",
		}),
		reconcile: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crowdpass_gate_reconciled_total",
			Help: "Gate stock keys set from PostgreSQL, by why: missing (rebuilt from what is unsold), " +
				"missing_catalog (rebuilt from the catalog's remaining: the database did not answer in time), drift (corrected once the queue was drained), " +
				"given_back (the tickets of an order a worker rejected limit_exceeded added back).",
		}, []string{"why"}),
		remembered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crowdpass_gate_remembered_total",
			Help: "POST /orders for a key whose 202 or edge refusal this process remembers, by what Redis held: " +
				"held (its record), restored (the answer written back: Redis had lost it), error or redis_down (answered from memory), " +
				"superseded (a refusal Redis holds another attempt for: the gate decides).",
		}, []string{"result"}),
		existing: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crowdpass_orders_looked_up_total",
			Help: "POST /orders for a key neither Redis nor this process held, whose order the filter of orders that exist says may be in PostgreSQL, " +
				"by what the read found: found (the order's 202 answers), absent (a false positive), error.",
		}, []string{"result"}),
		unconfirmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "crowdpass_orders_unconfirmed_total",
			Help: "POST /orders answered 503 with the order perhaps queued: it left for the broker, which did not confirm it by PUBLISH_TIMEOUT.",
		}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "crowdpass_gate_restored_total",
			Help: "Answers (202s and edge refusals) this process remembered and wrote back into Redis after Redis lost its keys.",
		}),
		recoveryWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "crowdpass_gate_recovery_waits_total",
			Help: "POST /orders answered anew while Redis recovered from losing its keys, which waited for the recovery's end and looked at their key again.",
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "crowdpass_orders_waiting_for_key",
			Help: "POST /orders waiting for another request of their Idempotency-Key in this process (a double click's second click waiting for its first).",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.inFlight, m.gate, m.confirm, m.slowPath, m.refused, m.reconcile, m.remembered, m.existing, m.waiting, m.unconfirmed, m.restored, m.recoveryWaits)
	return m
}
