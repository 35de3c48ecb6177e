package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/crowdpass/crowdpass"
)

// Publishing failures. Each means the message may not be queued: the caller
// treats the publish as failed.
var (
	ErrNotConnected = errors.New("not connected to the broker")
	ErrNacked       = errors.New("the broker refused the message")
	ErrUnroutable   = errors.New("the message was unroutable")
	ErrChannelLost  = errors.New("the channel closed before the broker confirmed")
	ErrBlocked      = errors.New("the broker is blocking publishes (a resource alarm)")
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	URL  string
	Name string
	// Channels is the number of confirming channels publishes are spread over (default 8).
	Channels int
	// Declare runs on every new connection, before publishing resumes.
	Declare            func(*amqp.Channel) error
	RetryMin, RetryMax time.Duration
	// StalledAfter is how long publishes may wait for a confirm, none
	// arriving meanwhile, before the publisher reads as not ready (default
	// 3s): a broker that stops reading or answering, its connection open,
	// would otherwise keep /readyz ok while every order waits out its
	// deadline.
	StalledAfter time.Duration
	Logger       *slog.Logger
}

// Publisher publishes with publisher confirms over a pool of channels on
// its own connection. Publishes are pipelined: many are in flight on each
// channel at once, and each caller waits only for its own confirm.
type Publisher struct {
	cfg PublisherConfig
	log *slog.Logger
	// redeclare asks the session to declare the topology again: a returned
	// message means a queue was deleted under us.
	redeclare chan struct{}
	mu        sync.RWMutex
	pool      []*confirmChannel
	next      atomic.Uint64
	ready     atomic.Bool
	// blocked is set while the broker holds publishes back (connection.blocked,
	// sent on a memory or disk alarm): a publish then fails at once instead of
	// hanging in a write the broker does not read.
	blocked atomic.Bool
	// unconfirmed counts the publishes written and not yet settled, and
	// progress is when a confirm last came, or the first of them was
	// written (since epoch, on the monotonic clock).
	unconfirmed atomic.Int64
	progress    atomic.Int64
	epoch       time.Time
	// inspecting counts the QueueDepth calls waiting for the broker, which
	// their callers may have stopped waiting for (maxInspecting at most).
	inspecting atomic.Int32
}

// NewPublisher returns a publisher; Run connects it.
func NewPublisher(cfg PublisherConfig) *Publisher {
	cfg.Name = cmp.Or(cfg.Name, "crowdpass-publisher")
	cfg.Channels = cmp.Or(max(cfg.Channels, 0), 8)
	cfg.RetryMin = cmp.Or(cfg.RetryMin, 100*time.Millisecond)
	cfg.RetryMax = cmp.Or(cfg.RetryMax, 5*time.Second)
	cfg.StalledAfter = cmp.Or(cfg.StalledAfter, 3*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Publisher{cfg: cfg, log: cfg.Logger, redeclare: make(chan struct{}, 1), epoch: time.Now()}
}

// Ready reports whether the publisher is connected and the broker takes
// its publishes: it does not block them, and confirms them (none has
// waited StalledAfter without any confirm coming meanwhile).
func (p *Publisher) Ready() bool {
	return p.ready.Load() && !p.blocked.Load() && !p.stalled()
}

func (p *Publisher) stalled() bool {
	return p.unconfirmed.Load() > 0 && p.since()-p.progress.Load() > int64(p.cfg.StalledAfter)
}

func (p *Publisher) since() int64 { return int64(time.Since(p.epoch)) }

// written notes a publish written; settled notes n settled, by a confirm
// (confirmed) or by the loss of their channel.
func (p *Publisher) written() {
	if p.unconfirmed.Add(1) == 1 {
		p.progress.Store(p.since())
	}
}

func (p *Publisher) settled(n int, confirmed bool) {
	if confirmed {
		p.progress.Store(p.since())
	}
	p.unconfirmed.Add(-int64(n))
}

// Run keeps the publisher connected until ctx is done, reconnecting after
// any loss. Cancel ctx only once no more publishes are wanted: in-flight
// ones fail with ErrChannelLost when the connection closes.
func (p *Publisher) Run(ctx context.Context) error {
	Reconnect(ctx, p.log.With("connection", p.cfg.Name), p.cfg.RetryMin, p.cfg.RetryMax, p.session, nil)
	return nil
}

func (p *Publisher) session(ctx context.Context, onConnected func()) error {
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	// Lingering pays while other publishes are under way to share a segment.
	conn, cut, err := dial(dialCtx, p.cfg.URL, p.cfg.Name, writeLinger, func() bool { return p.unconfirmed.Load() > 1 })
	cancel()
	if err != nil {
		return err
	}
	defer closeOrCut(conn, cut)
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 1))
	defer p.blocked.Store(false) // the next connection starts unblocked
	if p.cfg.Declare != nil {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("opening channel: %w", err)
		}
		if err := p.cfg.Declare(ch); err != nil {
			return err
		}
		ch.Close()
	}
	pool := make([]*confirmChannel, 0, p.cfg.Channels)
	var wg sync.WaitGroup
	defer func() {
		closeOrCut(conn, cut) // ends the dispatchers
		wg.Wait()
	}()
	for range p.cfg.Channels {
		cc, err := openConfirmChannel(p, conn, cut)
		if err != nil {
			return err
		}
		pool = append(pool, cc)
		wg.Go(func() {
			cc.dispatch()
			// A channel the broker closed takes the connection with it, so
			// that the pool is rebuilt whole rather than left a channel short.
			closeOrCut(conn, cut)
		})
	}
	p.mu.Lock()
	p.pool = pool
	p.mu.Unlock()
	p.ready.Store(true)
	onConnected()
	defer func() {
		p.ready.Store(false)
		p.mu.Lock()
		p.pool = nil
		p.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-closed:
			if err == nil {
				return errors.New("connection closed")
			}
			return err
		case b, ok := <-blocked:
			if !ok {
				blocked = nil
				continue
			}
			p.blocked.Store(b.Active)
			if b.Active {
				p.log.Warn("the broker blocks publishes", "connection", p.cfg.Name, "reason", b.Reason)
			} else {
				p.log.Info("the broker takes publishes again", "connection", p.cfg.Name)
			}
		case <-p.redeclare:
			if p.cfg.Declare == nil {
				continue
			}
			ch, err := conn.Channel()
			if err != nil {
				return fmt.Errorf("opening channel: %w", err)
			}
			err = p.cfg.Declare(ch)
			ch.Close()
			if err != nil {
				return err
			}
			p.log.Warn("a message was unroutable; topology declared again", "connection", p.cfg.Name)
		}
	}
}

// Publish publishes msg as mandatory, and waits for
// the broker's confirm or ctx's end. It returns nil only if the broker
// confirmed the message and did not return it as unroutable.
func (p *Publisher) Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	cc, err := p.channel()
	if err != nil {
		return err
	}
	w, err := cc.start(ctx, exchange, key, true, msg)
	if err == nil {
		err = w.wait(ctx)
	}
	if errors.Is(err, ErrUnroutable) {
		select {
		case p.redeclare <- struct{}{}:
		default:
		}
	}
	return err
}

// channel picks the next confirming channel, round robin.
func (p *Publisher) channel() (*confirmChannel, error) {
	if p.blocked.Load() {
		return nil, ErrBlocked
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if len(p.pool) == 0 {
		return nil, ErrNotConnected
	}
	return p.pool[p.next.Add(1)%uint64(len(p.pool))], nil
}

// Message is one message of a batch.
type Message struct {
	Exchange, Key string
	// Mandatory makes an unroutable message a failure (ErrUnroutable).
	Mandatory  bool
	Publishing amqp.Publishing
}

// PublishBatch publishes every message on one channel without waiting in
// between, then waits for all the confirms; errs[i] is message i's outcome.
func (p *Publisher) PublishBatch(ctx context.Context, msgs []Message) (errs []error) {
	errs = make([]error, len(msgs))
	cc, err := p.channel()
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	waiters := make([]*waiter, len(msgs))
	for i, m := range msgs {
		waiters[i], errs[i] = cc.start(ctx, m.Exchange, m.Key, m.Mandatory, m.Publishing)
	}
	for i, w := range waiters {
		if w != nil {
			errs[i] = w.wait(ctx)
		}
	}
	return errs
}

// confirmChannel is one channel in confirm mode with its own dispatcher.
type confirmChannel struct {
	pub      *Publisher
	conn     *amqp.Connection
	cut      func() // closes the connection's socket at once
	ch       *amqp.Channel
	returns  chan amqp.Return
	confirms chan amqp.Confirmation

	// publishing is a slot taken to make taking a sequence number and
	// publishing one step; a caller waits for it only until its deadline.
	publishing chan struct{}

	mu      sync.Mutex
	pending map[uint64]*waiter
	byID    map[string][]*waiter
	dead    bool
}

type waiter struct {
	id       string
	returned bool
	done     chan error
}

func openConfirmChannel(pub *Publisher, conn *amqp.Connection, cut func()) (*confirmChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("opening channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("enabling confirms: %w", err)
	}
	cc := &confirmChannel{
		pub:  pub,
		conn: conn,
		cut:  cut,
		ch:   ch,
		// Returns are unbuffered and confirms handled by the same goroutine:
		// the broker sends a message's return before its ack, the client
		// cannot hand over the ack before the return was taken, so a
		// returned message is always known as such when its ack arrives.
		returns:    ch.NotifyReturn(make(chan amqp.Return)),
		confirms:   ch.NotifyPublish(make(chan amqp.Confirmation, 1024)),
		pending:    map[uint64]*waiter{},
		byID:       map[string][]*waiter{},
		publishing: make(chan struct{}, 1),
	}
	return cc, nil
}

// start publishes msg and returns the waiter its confirm will reach.
func (cc *confirmChannel) start(ctx context.Context, exchange, key string, mandatory bool, msg amqp.Publishing) (*waiter, error) {
	select {
	case cc.publishing <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting to publish: %w", ctx.Err())
	}
	defer func() { <-cc.publishing }()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("waiting to publish: %w", err)
	}
	w := &waiter{id: msg.MessageId, done: make(chan error, 1)}
	cc.mu.Lock()
	if cc.dead {
		cc.mu.Unlock()
		return nil, errChannelDead
	}
	seq := cc.ch.GetNextPublishSeqNo()
	cc.pending[seq] = w
	cc.byID[w.id] = append(cc.byID[w.id], w)
	cc.pub.written()
	cc.mu.Unlock()
	// A write the broker does not read (TCP flow control, a stalled broker)
	// cannot be interrupted, and the publishes of every channel queue behind
	// it on the connection. A write still blocked writeStall past the
	// caller's deadline cuts the connection: that write and every publish
	// pending on it fail with ErrChannelLost, and the session reconnects.
	// The grace keeps a deadline that merely falls inside a slow but moving
	// write from cutting a healthy connection, and every publish on it. The
	// socket is closed under amqp091-go: its own close would wait, as its
	// shutdown after a missed heartbeat does, for this channel, which the
	// blocked write holds.
	stop := func() bool { return true }
	if deadline, ok := ctx.Deadline(); ok {
		stop = time.AfterFunc(time.Until(deadline)+writeStall, cc.cut).Stop
	}
	err := cc.ch.PublishWithContext(ctx, exchange, key, mandatory, false, msg)
	stop()
	if err != nil {
		cc.settle(seq, nil)
		return nil, fmt.Errorf("publishing: %w", err)
	}
	return w, nil
}

// errChannelDead is a publish's failure on a channel already lost when it
// came: nothing was written, and the next channel may be a new one.
var errChannelDead = fmt.Errorf("%w (its channel was lost)", ErrNotConnected)

// writeStall is how long past its caller's deadline a publish's write may
// stay blocked before the connection is cut under it.
const writeStall = 5 * time.Second

// wait waits for a started publish's confirm or ctx's end; if ctx ends
// first the dispatcher settles the confirm when it comes, and wait fails
// with crowdpass.ErrUnconfirmed: the message left, and may be queued.
func (w *waiter) wait(ctx context.Context) error {
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("waiting for the broker's confirm: %w: %w", crowdpass.ErrUnconfirmed, ctx.Err())
	}
}

// settle removes a pending publish and, if ack is not nil, tells its waiter.
func (cc *confirmChannel) settle(seq uint64, result func(*waiter) error) {
	cc.mu.Lock()
	w, ok := cc.pending[seq]
	if ok {
		delete(cc.pending, seq)
		ws := cc.byID[w.id]
		for i, x := range ws {
			if x == w {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(cc.byID, w.id)
		} else {
			cc.byID[w.id] = ws
		}
		cc.pub.settled(1, result != nil)
	}
	cc.mu.Unlock()
	if ok && result != nil {
		w.done <- result(w)
	}
}

// dispatch hands confirms and returns to the waiting publishers until the
// channel closes, then fails whatever is still pending.
func (cc *confirmChannel) dispatch() {
	for {
		select {
		case r, ok := <-cc.returns:
			if !ok {
				cc.returns = nil
				continue
			}
			cc.mu.Lock()
			for _, w := range cc.byID[r.MessageId] {
				if !w.returned {
					w.returned = true
					break
				}
			}
			cc.mu.Unlock()
		case c, ok := <-cc.confirms:
			if !ok {
				cc.fail()
				return
			}
			cc.settle(c.DeliveryTag, func(w *waiter) error {
				switch {
				case !c.Ack:
					return ErrNacked
				case w.returned:
					return ErrUnroutable
				}
				return nil
			})
		}
	}
}

func (cc *confirmChannel) fail() {
	cc.mu.Lock()
	cc.dead = true
	pending := cc.pending
	cc.pending, cc.byID = map[uint64]*waiter{}, map[string][]*waiter{}
	cc.pub.settled(len(pending), false)
	cc.mu.Unlock()
	for _, w := range pending {
		w.done <- ErrChannelLost
	}
}

// QueueDepth returns the messages ready in a queue (not those delivered and
// unacknowledged), on a channel of its own. The client's calls take no
// context, so they run apart and QueueDepth returns at ctx's end all the
// same: a broker that stops answering holds a goroutine until the
// heartbeat drops the connection, never the caller. Past maxInspecting such
// calls, a new one fails at once with ErrBusy rather than pile up more.
func (p *Publisher) QueueDepth(ctx context.Context, queue string) (int, error) {
	p.mu.RLock()
	var conn *amqp.Connection
	if len(p.pool) > 0 {
		conn = p.pool[0].conn
	}
	p.mu.RUnlock()
	if conn == nil {
		return 0, ErrNotConnected
	}
	if p.inspecting.Add(1) > maxInspecting {
		p.inspecting.Add(-1)
		return 0, ErrBusy
	}
	type depth struct {
		n   int
		err error
	}
	done := make(chan depth, 1)
	go func() {
		defer p.inspecting.Add(-1)
		n, err := queueDepth(conn, queue)
		done <- depth{n, err}
	}()
	select {
	case d := <-done:
		return d.n, cmp.Or(d.err, ctx.Err())
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// ErrBusy is QueueDepth's answer while maxInspecting earlier calls still
// wait for the broker.
var ErrBusy = errors.New("broker: earlier queue inspections are still waiting for the broker")

// maxInspecting bounds the QueueDepth calls waiting for the broker at once:
// a few callers (the reconcile, the dashboard) call it now and then.
const maxInspecting = 4

func queueDepth(conn *amqp.Connection, queue string) (int, error) {
	ch, err := conn.Channel()
	if err != nil {
		return 0, fmt.Errorf("opening channel: %w", err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("inspecting %s: %w", queue, err)
	}
	return q.Messages, nil
}
