// Package notifier streams order outcomes to buyers' browsers over
// WebSockets. Each instance binds its own queue to order_events and keeps a
// hub of sockets per customer; any number of instances may run.
package notifier

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/auth"
	"github.com/crowdpass/crowdpass/broker"
	"github.com/crowdpass/crowdpass/internal/generations"
)

// Orders reads the current state of orders for subscribe.
type Orders interface {
	Order(ctx context.Context, id uuid.UUID) (crowdpass.Order, error)
}

// Pending finds orders not in PostgreSQL yet, or not readable there: those
// accepted and not yet decided (the gate's stored 202), and those whose
// outcome this process saw.
type Pending interface {
	Lookup(ctx context.Context, order uuid.UUID) (crowdpass.KeyRecord, error)
	// Remembered finds an order in this process's memory only: one it
	// accepted, or whose outcome it saw (then Decided is set).
	Remembered(order uuid.UUID) (crowdpass.KeyRecord, bool)
}

// Outbox reads the outbox, for the outcomes published while the notifier
// was cut from the broker.
type Outbox interface {
	OutboxAfter(ctx context.Context, after int64, max int) ([]crowdpass.OutboxMessage, error)
	OutboxLastID(ctx context.Context) (int64, error)
}

// Verifier checks bearer tokens.
type Verifier interface {
	Verify(token string) (auth.Principal, error)
}

// Config configures a Notifier. Zero values take the defaults.
type Config struct {
	AMQPURL  string
	Topology broker.Topology
	Name     string
	// AllowedOrigins are the origin patterns a browser may connect from
	// (ALLOWED_ORIGINS); empty means the API's own host only.
	AllowedOrigins []string
	// Buffer is how many frames wait for a socket before it counts as not
	// reading and is closed with 1008 (default 64).
	Buffer int
	// WriteTimeout bounds each write (default 15s); PingInterval is how often
	// sockets are pinged (default 20s).
	WriteTimeout, PingInterval time.Duration
	// Decided, if set, is given every outcome the notifier learns of, from
	// the relay of its process or from the broker, at least once: the API of
	// the same process remembers decided orders with it (api.Recent.Decided).
	Decided func(crowdpass.Outcome)
	// LookupTimeout bounds each of a subscribe's reads: the order in the
	// database, then, if that fails, its stored 202 in the gate (default 2s).
	LookupTimeout time.Duration
	// Outbox, if set, is read when the notifier is back on the broker after
	// losing it: its queue went with the connection, so the outcomes
	// published meanwhile are pushed from the outbox (clients dedupe),
	// retried until the outbox answers.
	Outbox Outbox
	// Recall, with Decided and Outbox set, is how many outbox ids back from
	// the last the notifier reads when it starts (at most that many rows:
	// ids have gaps), and gives their outcomes to Decided, not to sockets.
	// A process that restarts then still knows the orders decided before it
	// started, and answers their keys with their 202 if Redis loses their
	// records later (api.Recent). 0 reads none.
	Recall             int
	RetryMin, RetryMax time.Duration
	Logger             *slog.Logger
	Registry           prometheus.Registerer
	Now                func() time.Time
}

// Notifier is the notifier role.
type Notifier struct {
	cfg      Config
	log      *slog.Logger
	orders   Orders
	pending  Pending
	verifier Verifier
	hub      hub
	ready    atomic.Bool

	stopCtx context.Context
	stopAll context.CancelFunc
	// live counts the sockets being served, so that Run returns only once
	// each has been closed with 1001; liveMu orders their start with the stop.
	liveMu sync.Mutex
	live   sync.WaitGroup

	sockets  prometheus.Gauge
	frames   prometheus.Counter
	kicked   prometheus.Counter
	latency  prometheus.Histogram
	lag      *prometheus.HistogramVec // by path: local or broker
	recalled prometheus.Counter

	handed *handedOver
	// pushed holds the outbox ids of the outcomes pushed lately, so that a
	// catch-up pushes only what was missed: a customer's sockets are not
	// sent again, and closed 1008 for, what they already had.
	pushed *pushedRows
	// seen is the highest outbox id received (from the broker or the relay
	// of this process); brokerSeen the highest from the broker (the
	// sessions' own); caughtUp, once known, the highest read from the
	// outbox. A session after a loss reads from the higher of the last two,
	// less catchUpWindow: the relay of this process goes on handing rows
	// over while the broker is lost.
	seen       atomic.Int64
	brokerSeen int64
	// firstLive is the first outbox id the current session received.
	firstLive atomic.Int64
	// The catch-up's bookkeeping, used by one session's catch-up at a time.
	caughtUp int64
	marked   bool  // caughtUp is known
	bound    bool  // a session has bound a queue before: the next one follows a loss
	behind   bool  // outcomes after outbox id missed may have been missed
	missed   int64 // the outbox id after which to read; -1: catchUpWindow below the first live one
}

// New returns a notifier; Run consumes outcomes, ServeHTTP serves /ws.
// pending may be nil.
func New(cfg Config, orders Orders, pending Pending, verifier Verifier) *Notifier {
	cfg.Name = cmp.Or(cfg.Name, "crowdpass-notifier")
	cfg.Buffer = cmp.Or(max(cfg.Buffer, 0), 64)
	// A write blocked this long means the client stopped reading; the wait
	// leaves it time to read again and receive its 1008 close.
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, 15*time.Second)
	cfg.PingInterval = cmp.Or(cfg.PingInterval, 20*time.Second)
	cfg.LookupTimeout = cmp.Or(cfg.LookupTimeout, 2*time.Second)
	cfg.RetryMin = cmp.Or(cfg.RetryMin, 100*time.Millisecond)
	cfg.RetryMax = cmp.Or(cfg.RetryMax, 5*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	n := &Notifier{
		cfg: cfg, log: cfg.Logger.With("role", "notifier"),
		orders: orders, pending: pending, verifier: verifier,
		hub: hub{byCustomer: map[string]map[*client]struct{}{}},
		sockets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "crowdpass_ws_sockets", Help: "Open WebSockets.",
		}),
		frames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "crowdpass_ws_frames_total", Help: "Frames queued for sockets.",
		}),
		kicked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "crowdpass_ws_slow_closed_total", Help: "Sockets closed with 1008 for not reading.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "crowdpass_notification_latency_seconds",
			Help:    "From the worker's commit (processed_at) to the frame's write.",
			Buckets: crowdpass.NotificationBuckets,
		}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "crowdpass_notifier_outcome_lag_seconds",
			Help: "From an outcome's processed_at to its arrival at this notifier, by path: " +
				"local (handed over by this process's relay) or broker (commit, relay and broker).",
			Buckets: crowdpass.NotificationBuckets,
		}, []string{"path"}),
		handed: newHandedOver(1 << 16),
		pushed: &pushedRows{rows: generations.New[int64, struct{}](2 * catchUpWindow)},
	}
	n.recalled = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "crowdpass_notifier_recalled_total",
		Help: "Outcomes read from the outbox at start and remembered (Config.Recall); added once the read ends.",
	})
	for _, path := range []string{"local", "broker"} {
		n.lag.WithLabelValues(path) // both series from the start
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(n.sockets, n.frames, n.kicked, n.latency, n.lag, n.recalled)
	}
	n.stopCtx, n.stopAll = context.WithCancel(context.Background())
	return n
}

// stopping ends when the notifier stops: every socket is then closed.
func (n *Notifier) stopping() context.Context { return n.stopCtx }

// stop closes every socket with 1001 and waits until each is closed: the
// process may exit as soon as Run returns, and a socket it leaves open is
// dropped without a close frame.
func (n *Notifier) stop() {
	n.liveMu.Lock()
	n.stopAll()
	n.liveMu.Unlock()
	n.live.Wait()
}

// serving counts a socket in live, unless the notifier has stopped.
func (n *Notifier) serving() bool {
	n.liveMu.Lock()
	defer n.liveMu.Unlock()
	if n.stopCtx.Err() != nil {
		return false
	}
	n.live.Add(1)
	return true
}

// Ready reports whether the notifier is receiving outcomes.
func (n *Notifier) Ready() bool { return n.ready.Load() }

// Kicked is how many sockets were closed for not reading: their frame
// buffer filled, or they stopped answering pings.
func (n *Notifier) Kicked() int {
	var m dto.Metric
	if err := n.kicked.Write(&m); err != nil {
		return 0
	}
	return int(m.GetCounter().GetValue())
}

// Run consumes order_events until ctx is done, reconnecting after losses.
func (n *Notifier) Run(ctx context.Context) error {
	defer n.stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	if n.cfg.Recall > 0 && n.cfg.Decided != nil && n.cfg.Outbox != nil {
		wg.Go(func() { n.recall(ctx) })
	}
	broker.Reconnect(ctx, n.log, n.cfg.RetryMin, n.cfg.RetryMax, n.session, func() { n.ready.Store(false) })
	return nil
}

// recallTimeout bounds the read of Config.Recall outcomes at start.
const recallTimeout = 30 * time.Second

// recall gives Decided the outcomes of the outbox rows among the latest
// Config.Recall ids, oldest first, beside the live ones: an order is
// decided once, so the two can only agree. It is retried until it reads
// them all (PostgreSQL may be down when the process starts).
func (n *Notifier) recall(ctx context.Context) {
	n.untilDone(ctx, "recalling the latest outcomes from the outbox", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, recallTimeout)
		defer cancel()
		last, err := n.cfg.Outbox.OutboxLastID(ctx)
		if err != nil {
			return fmt.Errorf("reading the outbox's end: %w", err)
		}
		recalled := 0
		for after := max(last-int64(n.cfg.Recall), 0); after < last; {
			rows, err := n.cfg.Outbox.OutboxAfter(ctx, after, catchUpPage)
			if err != nil {
				return fmt.Errorf("reading after outbox id %d: %w", after, err)
			}
			if len(rows) == 0 {
				break
			}
			for _, row := range rows {
				if row.ID > last {
					break
				}
				if out, ok := n.decode(row.Payload, strconv.FormatInt(row.ID, 10)); ok {
					n.decided(out)
					recalled++
				}
			}
			after = rows[len(rows)-1].ID
		}
		n.recalled.Add(float64(recalled))
		n.log.Info("recalled the latest outcomes from the outbox", "outcomes", recalled)
		return nil
	})
}

// untilDone runs f until it succeeds or ctx ends, backing off between
// attempts from RetryMin to RetryMax; the first failure, every 20th after
// it (about every 100 s at the default RetryMax) and the recovery are
// logged.
func (n *Notifier) untilDone(ctx context.Context, what string, f func(context.Context) error) {
	backoff := n.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil {
			if attempt > 1 {
				n.log.Info(what+": done after retries", "attempts", attempt)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		if attempt%20 == 1 {
			n.log.Warn(what+" failed; retrying", "attempts", attempt, "err", err)
		}
		if !broker.Sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, n.cfg.RetryMax)
	}
}

func (n *Notifier) session(ctx context.Context, onConnected func()) error {
	conn, ch, err := n.cfg.Topology.Open(ctx, n.cfg.AMQPURL, n.cfg.Name)
	if err != nil {
		return err
	}
	defer broker.Close(conn)
	// A queue of our own, gone with us: outcomes for sockets that are not
	// here are not kept; a client that reconnects subscribes again.
	q, err := ch.QueueDeclare(n.cfg.Topology.NotifierQueue(), false, true, true, false, nil)
	if err != nil {
		return fmt.Errorf("declaring notifier queue: %w", err)
	}
	if err := ch.QueueBind(q.Name, "order.*", n.cfg.Topology.Outcomes(), false, nil); err != nil {
		return fmt.Errorf("binding notifier queue: %w", err)
	}
	deliveries, err := ch.ConsumeWithContext(ctx, q.Name, "", true, true, false, false, nil)
	if err != nil {
		return fmt.Errorf("consuming outcomes: %w", err)
	}
	// Ready before catching up: the queue is bound, and what it receives
	// is pushed meanwhile.
	n.ready.Store(true)
	onConnected()
	n.noteLoss()
	var catching sync.WaitGroup
	defer catching.Wait()
	catchCtx, stopCatching := context.WithCancel(ctx)
	defer stopCatching()
	// Retried until it succeeds: PostgreSQL may be down when the broker
	// comes back, and the sockets that stayed open would otherwise never
	// get the gap's outcomes. Live outcomes are pushed meanwhile.
	catching.Go(func() { n.untilDone(catchCtx, "catching up from the outbox", n.catchUp) })
	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("outcome deliveries stopped")
			}
			n.fromBroker(d)
		}
	}
}

// Deliver pushes outcomes that the relay of this process has just claimed
// from the outbox, without waiting for their round trip through the broker,
// and drops the broker's copy of each when it comes. They are committed
// outcomes, so they may go out before the broker has confirmed them. A row
// handed over again before its broker copy came (its publish failed and is
// retried) is not pushed twice. The relay's own path (publish, route,
// consume) is still measured, on the broker's copies.
func (n *Notifier) Deliver(rows []crowdpass.OutboxMessage) {
	for _, row := range rows {
		n.observeSeen(row.ID)
		out, ok := n.decode(row.Payload, strconv.FormatInt(row.ID, 10))
		if !ok {
			continue
		}
		if !n.handed.add(row.ID, handedRow{order: row.AggregateID, processedAt: out.ProcessedAt}) {
			continue
		}
		n.observeLag(out.ProcessedAt, "local")
		if !n.pushed.addNew(row.ID) { // a catch-up pushed it first
			continue
		}
		n.decided(out)
		n.push(out)
	}
}

// Catching up after a loss of the broker: outbox ids commit out of order, so
// the rows read start catchUpWindow ids below the highest known; at most
// catchUpPages pages of catchUpPage rows are read, within catchUpTimeout.
const (
	catchUpWindow  = 10_000
	catchUpPage    = 1_000
	catchUpPages   = 100
	catchUpTimeout = 10 * time.Second
)

// noteLoss runs when a session's queue is bound: after the first, the
// outcomes published while no queue was bound were dropped by the broker,
// from a little before the last one it delivered on. A gap not caught up
// yet is kept, and read from the lower start of both.
func (n *Notifier) noteLoss() {
	n.firstLive.Store(0)
	if !n.bound {
		n.bound = true
		return
	}
	floor := int64(-1) // nothing known before the loss
	if last := max(n.brokerSeen, n.caughtUp); last > 0 {
		floor = max(last-catchUpWindow, 0)
	}
	switch {
	case !n.behind:
		n.behind, n.missed = true, floor
	case n.missed < 0:
		n.missed = floor
	case floor >= 0:
		n.missed = min(n.missed, floor)
	}
}

// catchUp notes where the outbox ends, the first time, and pushes the
// outcomes a loss of the broker may have dropped (noteLoss). What it read
// before failing is not read again.
func (n *Notifier) catchUp(ctx context.Context) error {
	if n.cfg.Outbox == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	if !n.marked {
		last, err := n.cfg.Outbox.OutboxLastID(ctx)
		if err != nil {
			return fmt.Errorf("reading the outbox's end: %w", err)
		}
		n.caughtUp, n.marked = last, true
	}
	if !n.behind {
		return nil
	}
	if n.missed < 0 { // nothing was known before the loss: below what came since
		from := n.caughtUp
		if live := n.firstLive.Load(); live > 0 {
			from = live
		}
		n.missed = max(from-catchUpWindow, 0)
	}
	pushed := 0
	for range catchUpPages {
		rows, err := n.cfg.Outbox.OutboxAfter(ctx, n.missed, catchUpPage)
		if err != nil {
			return fmt.Errorf("catching up after outbox id %d (%d outcomes pushed): %w", n.missed, pushed, err)
		}
		for _, row := range rows {
			n.missed = row.ID
			if !n.pushed.addNew(row.ID) {
				continue
			}
			if out, ok := n.decode(row.Payload, strconv.FormatInt(row.ID, 10)); ok {
				n.decided(out)
				n.push(out)
				pushed++
			}
		}
		n.caughtUp = max(n.caughtUp, n.missed)
		if len(rows) < catchUpPage {
			n.behind = false
			n.log.Info("caught up from the outbox after a loss of the broker", "outcomes", pushed)
			return nil
		}
	}
	n.behind = false
	n.log.Warn("caught up only partly from the outbox: too many outcomes since the loss of the broker", "outcomes", pushed)
	return nil
}

// fromBroker pushes one outcome the broker delivered, unless this process's
// relay handed it over first. The relay names the order in CorrelationId,
// so a copy handed over already is dropped without decoding its body; a
// copy without one (another relay's build) is decoded to learn it.
func (n *Notifier) fromBroker(d amqp.Delivery) {
	id, idErr := strconv.ParseInt(d.MessageId, 10, 64)
	order, orderErr := uuid.Parse(d.CorrelationId)
	if idErr == nil {
		n.observeSeen(id)
		n.brokerSeen = max(n.brokerSeen, id)
		n.firstLive.CompareAndSwap(0, id)
		if orderErr == nil {
			if row, ok := n.handed.take(id, order); ok {
				n.observeLag(row.processedAt, "broker")
				return
			}
		}
	}
	out, ok := n.decode(d.Body, d.MessageId)
	if !ok {
		return
	}
	n.observeLag(out.ProcessedAt, "broker")
	if idErr == nil && orderErr != nil {
		if _, ok := n.handed.take(id, out.ID); ok {
			return
		}
	}
	n.decided(out)
	n.push(out)
	if idErr == nil {
		n.pushed.add(id)
	}
}

func (n *Notifier) observeSeen(id int64) {
	for {
		seen := n.seen.Load()
		if id <= seen || n.seen.CompareAndSwap(seen, id) {
			return
		}
	}
}

func (n *Notifier) decided(out crowdpass.Outcome) {
	if n.cfg.Decided != nil {
		n.cfg.Decided(out)
	}
}

func (n *Notifier) decode(payload []byte, messageID string) (crowdpass.Outcome, bool) {
	var out crowdpass.Outcome
	if err := json.Unmarshal(payload, &out); err != nil || out.CustomerID == "" {
		n.log.Warn("undecodable outcome dropped", "message_id", messageID, "err", err)
		return out, false
	}
	return out, true
}

func (n *Notifier) observeLag(processedAt *crowdpass.Time, path string) {
	if processedAt != nil {
		n.lag.WithLabelValues(path).Observe(n.cfg.Now().Sub(processedAt.Time).Seconds())
	}
}

// push sends one outcome to every socket of its customer; its frame is
// built only if the customer has a socket here.
func (n *Notifier) push(out crowdpass.Outcome) {
	var frame []byte
	n.hub.each(out.CustomerID, func(c *client) {
		if frame == nil {
			var err error
			if frame, err = json.Marshal(pushFrame(out)); err != nil {
				return
			}
		}
		n.offer(c, frame, out.ProcessedAt)
	})
}

// handedOver remembers the outbox rows the local relay handed over whose
// broker copies have not come yet, by outbox id, for two generations of
// rows (see package generations). A copy that comes later than that is
// pushed again, which clients dedupe.
type handedOver struct {
	mu   sync.Mutex
	rows *generations.Map[int64, handedRow]
}

// handedRow is what a handed-over row announces: its order, and when that
// was decided, to time the broker's copy without decoding it.
type handedRow struct {
	order       uuid.UUID
	processedAt *crowdpass.Time
}

func newHandedOver(size int) *handedOver {
	return &handedOver{rows: generations.New[int64, handedRow](size)}
}

// add remembers a handed-over row; it reports false if the row is held already.
func (h *handedOver) add(id int64, row handedRow) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if held, ok := h.rows.Get(id); ok && held.order == row.order {
		return false
	}
	h.rows.Put(id, row)
	return true
}

// take reports whether row id, announcing order, was handed over, and
// forgets it.
func (h *handedOver) take(id int64, order uuid.UUID) (handedRow, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if held, ok := h.rows.Get(id); ok && held.order == order {
		h.rows.Delete(id)
		return held, true
	}
	return handedRow{}, false
}

// pushedRows are outbox ids pushed lately (two generations).
type pushedRows struct {
	mu   sync.Mutex
	rows *generations.Map[int64, struct{}]
}

func (p *pushedRows) add(id int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rows.Put(id, struct{}{})
}

// addNew records id and reports whether it was not held yet.
func (p *pushedRows) addNew(id int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.rows.Get(id); ok {
		return false
	}
	p.rows.Put(id, struct{}{})
	return true
}

// pushFrame is an outcome as the contract pushes it: no customer id.
func pushFrame(o crowdpass.Outcome) any {
	if o.Status == crowdpass.StatusRejected {
		return struct {
			Type        string                `json:"type"`
			OrderID     uuid.UUID             `json:"order_id"`
			Status      crowdpass.OrderStatus `json:"status"`
			Reason      crowdpass.Reason      `json:"reason"`
			ProcessedAt *crowdpass.Time       `json:"processed_at"`
		}{o.Type, o.ID, o.Status, o.Reason, o.ProcessedAt}
	}
	return struct {
		Type        string                `json:"type"`
		OrderID     uuid.UUID             `json:"order_id"`
		Status      crowdpass.OrderStatus `json:"status"`
		EventID     uuid.UUID             `json:"event_id"`
		CategoryID  uuid.UUID             `json:"category_id"`
		Quantity    int                   `json:"quantity"`
		Tickets     []crowdpass.Ticket    `json:"tickets"`
		ProcessedAt *crowdpass.Time       `json:"processed_at"`
	}{o.Type, o.ID, o.Status, o.EventID, o.CategoryID, o.Quantity, o.Tickets, o.ProcessedAt}
}

// hub holds the open sockets by customer.
type hub struct {
	mu         sync.RWMutex
	byCustomer map[string]map[*client]struct{}
}

func (h *hub) add(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.byCustomer[c.customer]
	if set == nil {
		set = map[*client]struct{}{}
		h.byCustomer[c.customer] = set
	}
	set[c] = struct{}{}
}

func (h *hub) remove(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.byCustomer[c.customer], c)
	if len(h.byCustomer[c.customer]) == 0 {
		delete(h.byCustomer, c.customer)
	}
}

func (h *hub) each(customer string, f func(*client)) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.byCustomer[customer] {
		f(c)
	}
}

// client is one open socket. Frames reach it through a bounded buffer; a
// socket whose buffer is full is not reading and is closed with 1008 rather
// than allowed to hold memory or stall the others.
type client struct {
	customer string
	send     chan frame
	slow     chan struct{}
	slowOnce sync.Once
}

type frame struct {
	data        []byte
	processedAt *crowdpass.Time
}

func (n *Notifier) offer(c *client, data []byte, processedAt *crowdpass.Time) {
	select {
	case c.send <- frame{data, processedAt}:
		n.frames.Inc()
	default:
		n.kick(c)
	}
}

// kick marks c as not reading, once: its writer closes it with 1008.
func (n *Notifier) kick(c *client) {
	c.slowOnce.Do(func() {
		n.kicked.Inc()
		close(c.slow)
	})
}
