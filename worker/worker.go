// Package worker drains ticket_orders at a controlled rate and decides the
// orders in batches, one PostgreSQL transaction per batch.
package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/time/rate"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/broker"
)

// Decider decides batches of order requests against the source of truth.
type Decider interface {
	DecideOrders(ctx context.Context, reqs []crowdpass.OrderRequest) ([]crowdpass.Decision, error)
	// CanDecide reports, without waiting for locks, whether a decision
	// could be written now (nil) or not.
	CanDecide(ctx context.Context) error
}

// Config configures a Worker. Zero values take the defaults.
type Config struct {
	AMQPURL  string
	Topology broker.Topology
	// Name names the broker connection (default "crowdpass-worker").
	Name string
	// Rate caps the orders decided per second; 0 means as fast as possible.
	Rate float64
	// Prefetch is how many unacknowledged orders the broker hands out (default 2×Batch).
	Prefetch int
	// Batch is the most orders decided in one transaction (default 50).
	// processed_at precedes the batch's writes by one round trip, so a
	// smaller batch reaches its commit, and its buyers, sooner. In a rush,
	// 50 against 100 cut the notification p99 from 159–206 to 101–120 ms at
	// no cost in requests per second, while the sale's orders were decided
	// more slowly (the queue holds them meanwhile; 25 was too slow).
	// docs/benchmarks.md has the runs.
	Batch int
	// BatchWait is how long a batch waits for more orders after its first
	// (default 5ms): the client library hands deliveries over one at a time,
	// so without a moment's wait every batch would be a batch of one.
	BatchWait time.Duration
	// RetryMin and RetryMax bound the backoff between attempts after the
	// database or the broker failed (defaults 100ms and 5s).
	RetryMin, RetryMax time.Duration
	// DecideTimeout bounds one decision transaction (default 30s).
	DecideTimeout time.Duration
	// CheckTimeout bounds the check that the database can decide, made
	// before the worker takes orders from the queue (default 2s).
	CheckTimeout time.Duration
	// StalledAfter is how long one decision may run before the worker
	// reads as not ready (default 10s): a stalled database holds it without
	// failing until DecideTimeout.
	StalledAfter time.Duration
	Logger       *slog.Logger
	// Registry, if set, gets the worker's metrics.
	Registry prometheus.Registerer
}

func (c Config) withDefaults() Config {
	c.Name = cmp.Or(c.Name, "crowdpass-worker")
	c.Batch = max(c.Batch, 0)
	c.Batch = cmp.Or(c.Batch, 50)
	c.Prefetch = cmp.Or(max(c.Prefetch, 0), 2*c.Batch)
	c.Prefetch = max(c.Prefetch, c.Batch)
	c.BatchWait = cmp.Or(c.BatchWait, 5*time.Millisecond)
	c.RetryMin = cmp.Or(c.RetryMin, 100*time.Millisecond)
	c.RetryMax = cmp.Or(c.RetryMax, 5*time.Second)
	c.DecideTimeout = cmp.Or(c.DecideTimeout, 30*time.Second)
	c.CheckTimeout = cmp.Or(c.CheckTimeout, 2*time.Second)
	c.StalledAfter = cmp.Or(c.StalledAfter, 10*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Worker consumes order requests and decides them. Any number of workers may
// run against one queue and one database.
type Worker struct {
	cfg     Config
	decider Decider
	log     *slog.Logger
	limiter *rate.Limiter

	connected atomic.Bool
	dbFailing atomic.Bool
	// deciding is when the decision under way started (since), 0 if none.
	deciding    atomic.Int64
	epoch       time.Time
	afterDecide func() // test hook: runs after a batch committed, before its ack
	decided     *prometheus.CounterVec
	commitLag   prometheus.Histogram
}

// New returns a worker; Run starts it.
func New(cfg Config, decider Decider) *Worker {
	cfg = cfg.withDefaults()
	w := &Worker{cfg: cfg, decider: decider, log: cfg.Logger.With("role", "worker"), epoch: time.Now(),
		decided: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "crowdpass_worker_decided_total", Help: "Orders decided, by outcome.",
		}, []string{"outcome"}),
		commitLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "crowdpass_worker_commit_lag_seconds",
			Help:    "From a batch's processed_at to its commit returning: the first leg of the notification latency.",
			Buckets: crowdpass.NotificationBuckets,
		}),
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(w.decided, w.commitLag)
	}
	if cfg.Rate > 0 {
		w.limiter = rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Batch)
	}
	return w
}

// Ready reports whether the worker is consuming and its database answers:
// its last decision did not fail, and the one under way, if any, has run
// for less than StalledAfter.
func (w *Worker) Ready() bool {
	started := w.deciding.Load()
	stalled := started != 0 && w.since()-started > int64(w.cfg.StalledAfter)
	return w.connected.Load() && !w.dbFailing.Load() && !stalled
}

// since is the time since the worker was made, on the monotonic clock.
func (w *Worker) since() int64 { return int64(time.Since(w.epoch)) }

// Run consumes until ctx is done, reconnecting to the broker whenever the
// connection is lost. It returns nil after a graceful stop: the batch in hand
// is decided and acknowledged first.
func (w *Worker) Run(ctx context.Context) error {
	broker.Reconnect(ctx, w.log, w.cfg.RetryMin, w.cfg.RetryMax, w.session, func() { w.connected.Store(false) })
	return nil
}

var errDeliveriesClosed = errors.New("delivery channel closed")

// session is one broker connection's life: it declares the topology, consumes
// and returns when the connection fails or ctx is done. It takes no order
// before its database can decide them (waitForDatabase).
func (w *Worker) session(ctx context.Context, onConnected func()) error {
	if !w.waitForDatabase(ctx) {
		return ctx.Err()
	}
	conn, ch, err := w.cfg.Topology.Open(ctx, w.cfg.AMQPURL, w.cfg.Name)
	if err != nil {
		return err
	}
	defer broker.Close(conn)
	if err := ch.Qos(w.cfg.Prefetch, 0, false); err != nil {
		return fmt.Errorf("setting prefetch: %w", err)
	}
	deliveries, err := ch.ConsumeWithContext(ctx, w.cfg.Topology.Orders(), "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consuming %s: %w", w.cfg.Topology.Orders(), err)
	}
	w.connected.Store(true)
	onConnected()
	for {
		batch, err := w.collect(ctx, deliveries)
		if len(batch) > 0 {
			w.process(ctx, batch)
		}
		if err != nil || ctx.Err() != nil {
			return err
		}
	}
}

// waitForDatabase returns once the database can decide (true), or when ctx
// ends (false), checking with backoff meanwhile. Each order a worker holds
// when it stops or dies goes back to the queue one delivery nearer the
// dead-letter queue (DeliveryLimit); a worker restarted over and over while
// its database is down or locked would send valid orders there, never to
// be decided, if it took them before it could decide them. A check that
// fails for any other reason than an unreachable database or a lock
// (missing privileges, say) is logged and the worker goes on: the decisions
// themselves may not need what the check does. A lock seen once or twice
// (autovacuum truncating a table) does not mark the worker failing.
func (w *Worker) waitForDatabase(ctx context.Context) bool {
	backoff := w.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		checkCtx, cancel := context.WithTimeout(ctx, w.cfg.CheckTimeout)
		err := w.decider.CanDecide(checkCtx)
		cancel()
		switch {
		case err == nil:
			if w.dbFailing.CompareAndSwap(true, false) {
				w.log.Info("database recovered")
			}
			return true
		case ctx.Err() != nil:
			return false
		case crowdpass.Code(err) != crowdpass.EUnavailable:
			w.log.Error("cannot check that the database can decide; taking orders all the same", "err", err)
			return true
		}
		if attempt >= 3 && w.dbFailing.CompareAndSwap(false, true) {
			w.log.Warn("database cannot decide; taking no orders until it can", "err", err)
		}
		if !broker.Sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, w.cfg.RetryMax)
	}
}

// collect waits for one delivery, then takes whatever else arrives within
// BatchWait, up to a batch. Under load the prefetch buffer fills while the
// previous batch is decided, so batches grow exactly when they pay off.
func (w *Worker) collect(ctx context.Context, deliveries <-chan amqp.Delivery) ([]amqp.Delivery, error) {
	var batch []amqp.Delivery
	select {
	case <-ctx.Done():
		return nil, nil
	case d, ok := <-deliveries:
		if !ok {
			return nil, errDeliveriesClosed
		}
		batch = append(batch, d)
	}
	if w.cfg.Batch == 1 {
		return batch, nil
	}
	wait := time.NewTimer(w.cfg.BatchWait)
	defer wait.Stop()
	for len(batch) < w.cfg.Batch {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return batch, errDeliveriesClosed
			}
			batch = append(batch, d)
		case <-wait.C:
			return batch, nil
		case <-ctx.Done():
			return batch, nil
		}
	}
	return batch, nil
}

// process decides a batch and settles every delivery in it: undecidable
// ones are rejected to the dead-letter queue, the rest acknowledged with one
// multiple ack after the transaction committed. If ctx ends before the batch
// could be decided, nothing is settled and the broker redelivers it.
func (w *Worker) process(ctx context.Context, batch []amqp.Delivery) {
	if w.limiter != nil {
		if err := w.limiter.WaitN(ctx, len(batch)); err != nil {
			return
		}
	}
	reqs := make([]crowdpass.OrderRequest, 0, len(batch))
	valid := make([]amqp.Delivery, 0, len(batch))
	for _, d := range batch {
		var r crowdpass.OrderRequest
		if err := decode(d.Body, &r); err != nil {
			w.deadLetter(d, err)
			continue
		}
		reqs = append(reqs, r)
		valid = append(valid, d)
	}
	if len(reqs) == 0 {
		return
	}
	start := time.Now()
	decisions, ok := w.decide(ctx, reqs)
	if !ok {
		return
	}
	w.log.Debug("batch decided", "orders", len(reqs), "took", time.Since(start))
	for _, d := range decisions {
		if d.Order != nil && d.Order.ProcessedAt != nil {
			w.commitLag.Observe(time.Since(d.Order.ProcessedAt.Time).Seconds())
			break // one processed_at per batch
		}
	}
	if w.afterDecide != nil {
		w.afterDecide()
	}
	var last uint64
	for i, d := range decisions {
		if d.Invalid != nil {
			w.deadLetter(valid[i], d.Invalid)
			continue
		}
		if d.Order != nil {
			outcome := string(d.Order.Status)
			if d.Order.Reason != "" {
				outcome = string(d.Order.Reason)
			}
			w.decided.WithLabelValues(outcome).Inc()
		}
		last = max(last, valid[i].DeliveryTag)
	}
	if last > 0 {
		// Every delivery of this batch up to last is settled by this one ack;
		// rejected ones were settled just before and are no longer pending.
		if err := valid[0].Acknowledger.Ack(last, true); err != nil {
			w.log.Debug("ack failed; the batch will be redelivered and found decided", "err", err)
		}
	}
}

// decide decides reqs, retrying with backoff while the database fails
// transiently. A batch failing for good is split, so that one bad request
// cannot hold up the others: alone, it is marked invalid.
func (w *Worker) decide(ctx context.Context, reqs []crowdpass.OrderRequest) ([]crowdpass.Decision, bool) {
	backoff := w.cfg.RetryMin
	for {
		attemptCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.DecideTimeout)
		w.deciding.Store(max(w.since(), 1))
		decisions, err := w.decider.DecideOrders(attemptCtx, reqs)
		w.deciding.Store(0)
		cancel()
		switch {
		case err == nil:
			if w.dbFailing.CompareAndSwap(true, false) {
				w.log.Info("database recovered")
			}
			return decisions, true
		case crowdpass.Code(err) != crowdpass.EInternal && len(reqs) > 1:
			out := make([]crowdpass.Decision, 0, len(reqs))
			for _, r := range reqs {
				d, ok := w.decide(ctx, []crowdpass.OrderRequest{r})
				if !ok {
					return nil, false
				}
				out = append(out, d...)
			}
			return out, true
		case crowdpass.Code(err) != crowdpass.EInternal:
			return []crowdpass.Decision{{Request: reqs[0], Invalid: err}}, true
		}
		if w.dbFailing.CompareAndSwap(false, true) {
			w.log.Warn("database unavailable; retrying", "err", err)
		}
		if !broker.Sleep(ctx, backoff) {
			return nil, false
		}
		backoff = min(2*backoff, w.cfg.RetryMax)
	}
}

func (w *Worker) deadLetter(d amqp.Delivery, reason error) {
	w.log.Warn("order request dead-lettered", "message_id", d.MessageId, "err", reason)
	if err := d.Nack(false, false); err != nil {
		w.log.Debug("nack failed; the message will be redelivered", "err", err)
	}
}

// decode reads one order request strictly: one JSON object, nothing after it.
func decode(body []byte, r *crowdpass.OrderRequest) error {
	if err := json.Unmarshal(body, r); err != nil {
		return fmt.Errorf("decoding order request: %w", err)
	}
	return nil
}
