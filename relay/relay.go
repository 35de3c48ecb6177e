// Package relay carries the outbox to RabbitMQ: it publishes every outbox
// row on order_events, at least once, and marks it published only after the
// broker confirmed it.
package relay

import (
	"cmp"
	"context"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/broker"
)

// Store is the outbox as the relay sees it.
type Store interface {
	PublishOutbox(ctx context.Context, from int64, max int, publish func(context.Context, []crowdpass.OutboxMessage) []int64) (int, error)
	DeletePublishedOutbox(ctx context.Context, before time.Time, max int) (int64, error)
	OutboxBacklog(ctx context.Context) (rows int64, oldest time.Time, err error)
	ListenOutbox(ctx context.Context, wake func(from int64)) error
}

// Publisher publishes batches with confirms.
type Publisher interface {
	PublishBatch(ctx context.Context, msgs []broker.Message) []error
	Ready() bool
}

var _ Publisher = (*broker.Publisher)(nil)

// Config configures a Relay. Zero values take the defaults.
type Config struct {
	// Exchange is the order_events exchange (with its namespace).
	Exchange string
	// Batch is the most rows claimed and published at once (default 500).
	Batch int
	// Loops is how many batches may be in flight at once (default 4): while
	// one waits for its confirms, an idle one claims the rows committed
	// since. The claim skips rows another loop holds.
	Loops int
	// Poll is the longest wait between looks at the outbox when no
	// notification comes (default 1s).
	Poll time.Duration
	// Retention, if positive, is how long published rows are kept
	// (OUTBOX_RETENTION). Zero, the default, keeps them for ever: the
	// contract holds that every decided order has its outcome row in the
	// outbox at every moment, and pruning breaks that for older orders.
	Retention time.Duration
	// PublishTimeout bounds the wait for a batch's confirms (default 10s).
	PublishTimeout time.Duration
	// Local, when set, is handed every batch of claimed rows just before it
	// is published: the notifier of the same process (notifier.Deliver),
	// which pushes those outcomes to its sockets without waiting for the
	// broker's round trip. Every other notifier gets them from the broker.
	Local    func([]crowdpass.OutboxMessage)
	Logger   *slog.Logger
	Registry prometheus.Registerer
	Now      func() time.Time
}

// Relay is the outbox relay role; any number may run at once.
type Relay struct {
	cfg       Config
	store     Store
	publisher Publisher
	log       *slog.Logger
	wake      chan struct{} // taken by one idle loop
	// from is the lowest outbox id announced since a loop last took a
	// wake-up (noFloor: none), where that loop's claims start.
	from atomic.Int64
	// swept is when a loop last claimed from the start, in ns since epoch.
	epoch   time.Time
	swept   atomic.Int64
	failing atomic.Bool

	backlog   prometheus.Gauge
	oldest    prometheus.Gauge
	published prometheus.Counter
	confirmed prometheus.Histogram
}

// New returns a relay; Run starts it.
func New(cfg Config, store Store, publisher Publisher) *Relay {
	cfg.Batch = cmp.Or(max(cfg.Batch, 0), 500)
	cfg.Loops = cmp.Or(max(cfg.Loops, 0), 4)
	cfg.Poll = cmp.Or(cfg.Poll, time.Second)
	cfg.PublishTimeout = cmp.Or(cfg.PublishTimeout, 10*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Relay{
		cfg: cfg, store: store, publisher: publisher,
		log:  cfg.Logger.With("role", "relay"),
		wake: make(chan struct{}, 1),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "crowdpass_outbox_backlog_rows", Help: "Outbox rows not yet published.",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "crowdpass_outbox_oldest_unpublished_seconds", Help: "Age of the oldest unpublished outbox row.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "crowdpass_outbox_published_total", Help: "Outbox rows published and confirmed.",
		}),
		confirmed: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "crowdpass_relay_confirm_seconds",
			Help:    "From a batch's publish to the broker's last confirm of it.",
			Buckets: crowdpass.NotificationBuckets,
		}),
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(r.backlog, r.oldest, r.published, r.confirmed)
	}
	r.from.Store(noFloor)
	r.epoch = time.Now()
	r.swept.Store(-int64(cfg.Poll)) // the first sweep is due at once
	return r
}

// Ready reports whether the relay can publish and its last look at the outbox worked.
func (r *Relay) Ready() bool { return r.publisher.Ready() && !r.failing.Load() }

// Run relays until ctx is done.
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { r.listen(ctx) })
	for range r.cfg.Loops {
		wg.Go(func() { r.loop(ctx) })
	}

	housekeeping := time.NewTicker(time.Second)
	defer housekeeping.Stop()
	for ticks := 1; ; ticks++ {
		select {
		case <-ctx.Done():
			return nil
		case <-housekeeping.C:
			r.housekeep(ctx, ticks%60 == 1)
		}
	}
}

// noFloor marks that no notification is waiting for a loop.
const noFloor = math.MaxInt64

// loop publishes batches whenever woken; the relay's loops look at the
// outbox at least every Poll between them. A
// notification wakes one idle loop; one that arrives while every loop is
// busy waits in the channel for the first to finish. A notified loop claims
// from the lowest id announced since. Once per Poll one of the relay's
// loops claims from the start instead, which picks up whatever a lost
// notification or a failed publish left behind: only one, as on a table
// that is not vacuumed that claim walks every published row's dead index
// entry (5 ms for a million).
func (r *Relay) loop(ctx context.Context) {
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		var from int64
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
			if from = r.from.Swap(noFloor); from == noFloor {
				// The loop that took this wake-up's id claimed after the
				// notifying commits: nothing announced is left.
				continue
			}
		case <-poll.C:
			if !r.sweepDue() { // another loop claimed from the start lately
				poll.Reset(r.cfg.Poll)
				continue
			}
		}
		// Drain: a full batch means there may be more right behind it.
		// Each pass takes any lower id announced meanwhile (its wake-up
		// then finds nothing left), and starts from the beginning when a
		// sweep is due, so that a long drain holds nothing back.
		for ctx.Err() == nil {
			if f := r.from.Swap(noFloor); f < from {
				from = f
			}
			if from != 0 && r.sweepDue() {
				from = 0
			}
			n := r.relayBatch(ctx, from)
			if n < r.cfg.Batch {
				break
			}
		}
		poll.Reset(r.cfg.Poll)
	}
}

// sweepDue reports whether a claim from the start is due, at most once per
// Poll across the relay's loops; the loop it answers true makes it.
func (r *Relay) sweepDue() bool {
	now := int64(time.Since(r.epoch)) // monotonic: a clock step back never stops the sweeps
	last := r.swept.Load()
	return now-last >= int64(r.cfg.Poll) && r.swept.CompareAndSwap(last, now)
}

// wakeOne wakes an idle loop, or the next to become idle, to claim from the
// outbox id from on (0: all).
func (r *Relay) wakeOne(from int64) {
	for {
		cur := r.from.Load()
		if from >= cur || r.from.CompareAndSwap(cur, from) {
			break
		}
	}
	select {
	case r.wake <- struct{}{}:
	default: // a wake-up is pending already; it claims from the lowest id
	}
}

// listen turns outbox notifications into wake-ups, reconnecting as needed;
// polling covers the gaps.
func (r *Relay) listen(ctx context.Context) {
	for {
		err := r.store.ListenOutbox(ctx, r.wakeOne)
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("outbox listener lost; polling meanwhile", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.cfg.Poll):
		}
	}
}

// relayBatch publishes one batch of rows from the outbox id from on and
// returns how many rows it claimed.
func (r *Relay) relayBatch(ctx context.Context, from int64) int {
	if !r.publisher.Ready() {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout+5*time.Second)
	defer cancel()
	n, err := r.store.PublishOutbox(ctx, from, r.cfg.Batch, r.publish)
	if err != nil {
		if r.failing.CompareAndSwap(false, true) {
			r.log.Warn("outbox unavailable; retrying", "err", err)
		}
		return 0
	}
	if r.failing.CompareAndSwap(true, false) {
		r.log.Info("outbox available again")
	}
	return n
}

// publish sends a batch pipelined and returns the ids the broker confirmed.
func (r *Relay) publish(ctx context.Context, rows []crowdpass.OutboxMessage) []int64 {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	msgs := make([]broker.Message, len(rows))
	now := r.cfg.Now()
	for i, row := range rows {
		msgs[i] = broker.Message{
			Exchange: r.cfg.Exchange,
			Key:      row.EventType,
			// No notifier may be bound right now; the outcome is in the
			// database all the same, so an unroutable outcome is published.
			Mandatory: false,
			Publishing: amqp.Publishing{
				ContentType:  "application/json",
				DeliveryMode: amqp.Persistent,
				MessageId:    strconv.FormatInt(row.ID, 10),
				// The order the outcome announces, so that a notifier
				// can tell its copy without decoding the body.
				CorrelationId: row.AggregateID.String(),
				Type:          row.EventType,
				Timestamp:     now,
				Body:          row.Payload,
			},
		}
	}
	if r.cfg.Local != nil {
		r.cfg.Local(rows)
	}
	start := time.Now()
	errs := r.publisher.PublishBatch(ctx, msgs)
	r.confirmed.Observe(time.Since(start).Seconds())
	confirmed := make([]int64, 0, len(rows))
	for i, err := range errs {
		if err == nil {
			confirmed = append(confirmed, rows[i].ID)
		}
	}
	if len(confirmed) < len(rows) {
		r.log.Debug("some outcomes not confirmed; they stay unpublished", "claimed", len(rows), "confirmed", len(confirmed))
	}
	r.published.Add(float64(len(confirmed)))
	return confirmed
}

// housekeep updates the backlog metrics every second and, when prune, deletes
// old published rows in small batches, so that no long transaction holds the table.
func (r *Relay) housekeep(ctx context.Context, prune bool) {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	if rows, oldest, err := r.store.OutboxBacklog(ctx); err == nil {
		r.backlog.Set(float64(rows))
		age := 0.0
		if rows > 0 {
			age = r.cfg.Now().Sub(oldest).Seconds()
		}
		r.oldest.Set(age)
	}
	if !prune || r.cfg.Retention <= 0 {
		return
	}
	before := r.cfg.Now().Add(-r.cfg.Retention)
	for range 10 {
		n, err := r.store.DeletePublishedOutbox(ctx, before, 1000)
		if err != nil || n < 1000 {
			return
		}
	}
}
