// Package rush is the flash-sale simulation: a crowd of buyers pressing Buy
// at once against a running CrowdPass, an audit of the result in
// PostgreSQL, and a report.
package rush

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/coder/websocket"
	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/auth"
	"github.com/crowdpass/crowdpass/postgres"
)

// Auditor reads the outcome of the sale from the source of truth.
type Auditor interface {
	Audit(ctx context.Context) ([]postgres.Violation, error)
	EventSales(ctx context.Context, event uuid.UUID) (postgres.Sales, error)
}

// Config configures a rush. Zero values take the defaults.
type Config struct {
	// Target is the base URL of a running deployment (default http://127.0.0.1:8080).
	Target string
	// WSTarget is the base URL of the notifier's /ws, where that role runs
	// apart from the API (default Target).
	WSTarget string
	// Buyers is how many people press Buy (default 1,000,000); each buys one ticket.
	Buyers int
	// Tickets is the event's capacity (default 50,000), split over Categories (default 4).
	Tickets, Categories int
	// Concurrency is how many requests are in flight at once (default 256:
	// on the 2-core reference machine the system is saturated from about
	// 256 on, and more in flight only queue; docs/benchmarks.md has the sweep).
	Concurrency int
	// DoubleClick is the share of buyers who send their request twice at once.
	DoubleClick float64
	// Watchers is how many buyers keep a WebSocket open to time their
	// notification (default 2,000). They are spread evenly over the first
	// Tickets buyers, the ones who can get a ticket, so that their outcomes
	// sample the whole sale rather than its first second.
	Watchers int
	// Retries bounds the resends of one purchase after a timeout, a 503 or a
	// request_in_progress (default 10).
	Retries int
	// RequestTimeout bounds one request (default 10s); DecideTimeout bounds
	// the wait for the last accepted order to be decided (default 10m).
	RequestTimeout, DecideTimeout time.Duration
	// Secret signs the buyers' and the operator's tokens (JWT_SECRET).
	Secret []byte
	// Bare measures the generator alone against a built-in handler that
	// answers 202 without work; nothing is audited.
	Bare bool
	// Baseline, if positive, first sends that many purchases to the built-in
	// 202 handler with the same concurrency, so that the report can give the
	// ratio to the generator's own ceiling measured in the same run.
	Baseline int
	Progress io.Writer
	Terminal bool
}

func (c Config) withDefaults() Config {
	c.Target = strings.TrimRight(cmp.Or(c.Target, "http://127.0.0.1:8080"), "/")
	c.WSTarget = strings.TrimRight(cmp.Or(c.WSTarget, c.Target), "/")
	c.Buyers = cmp.Or(c.Buyers, 1_000_000)
	c.Tickets = cmp.Or(c.Tickets, 50_000)
	c.Categories = cmp.Or(c.Categories, 4)
	c.Concurrency = cmp.Or(c.Concurrency, 256)
	c.Watchers = min(cmp.Or(c.Watchers, 2000), c.Buyers)
	c.Retries = cmp.Or(c.Retries, 10)
	c.RequestTimeout = cmp.Or(c.RequestTimeout, 10*time.Second)
	c.DecideTimeout = cmp.Or(c.DecideTimeout, 10*time.Minute)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return c
}

// Validate checks a configuration before anything is sent.
func (c Config) Validate() error {
	switch {
	case c.Buyers < 0 || c.Tickets < 0 || c.Concurrency < 0 || c.Watchers < 0 || c.Categories < 0:
		return errors.New("buyers, tickets, concurrency, watchers and categories must not be negative")
	case c.Categories > crowdpass.MaxCategories:
		return fmt.Errorf("at most %d categories", crowdpass.MaxCategories)
	case c.Tickets > 0 && c.Categories > c.Tickets:
		return errors.New("more categories than tickets")
	case c.DoubleClick < 0 || c.DoubleClick > 1:
		return errors.New("the double-click share must be between 0 and 1")
	case c.Concurrency > 8000:
		return errors.New("concurrency above 8000 would pass this machine's 20,000 open files")
	}
	return nil
}

// Percentiles of a latency distribution, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// Report is what a rush measured and found.
type Report struct {
	Target            string      `json:"target"`
	EventID           string      `json:"event_id,omitempty"`
	Buyers            int         `json:"buyers"`
	Tickets           int         `json:"tickets"`
	Requests          int64       `json:"requests"`
	Seconds           float64     `json:"seconds"`
	RequestsPerSecond float64     `json:"requests_per_second"`
	Latency           Percentiles `json:"post_orders_latency"`
	// LatencyAccepted is the share of Latency answered 202 for the first
	// time: the path that waits for the broker's confirm.
	LatencyAccepted Percentiles      `json:"post_orders_latency_accepted"`
	Answers         map[string]int64 `json:"answers"`
	Accepted        int64            `json:"accepted_orders"`
	Unanswered      int64            `json:"buyers_without_answer"`

	SecondsToLastTicket  float64     `json:"seconds_to_last_ticket_sold,omitempty"`
	SecondsToLastOutcome float64     `json:"seconds_to_last_outcome_delivered,omitempty"`
	OrdersPerTicket      float64     `json:"orders_in_postgres_per_ticket,omitempty"`
	Sold                 int64       `json:"tickets_sold"`
	Oversold             int64       `json:"oversold"`
	NeverDecided         int64       `json:"accepted_never_decided"`
	Notification         Percentiles `json:"notification_latency"`
	WatchersNotified     int64       `json:"watchers_notified"`
	WatchersAccepted     int64       `json:"watchers_accepted"`
	Violations           []string    `json:"violations"`

	// BareRequestsPerSecond is the generator's ceiling against the built-in
	// 202 handler in the same run; RatioToBare is this run's rate over it.
	BareRequestsPerSecond float64 `json:"bare_requests_per_second,omitempty"`
	RatioToBare           float64 `json:"ratio_to_bare,omitempty"`
}

// Failed reports whether the audit found anything wrong.
func (r Report) Failed() bool {
	return len(r.Violations) > 0 || r.Oversold > 0 || r.NeverDecided > 0
}

type run struct {
	cfg    Config
	client *http.Client
	auth   *auth.Authority
	id     string
	event  crowdpass.Event
	bodies [][]byte // one purchase's body per category of the event, built once
	// tokens are the buyers' tokens, signed before the clock starts: a
	// buyer's app holds its token before the sale opens, and the bare
	// ceiling signs none, so signing inside the run charged the system
	// about 2 µs of the shared CPU per buyer that the ceiling did not.
	tokens []string
	start  time.Time

	shards [statShards]*stats

	mu       sync.Mutex
	notified *hdrhistogram.Histogram
	answers  map[string]int64 // what happened outside a buyer's requests

	requests, accepted, unanswered, sent atomic.Int64
	watchersNotified, watchersAccepted   atomic.Int64
	lastOutcome                          atomic.Int64 // unix nanos
}

// Run rushes the target and audits the result through a (nil for Bare).
func Run(ctx context.Context, cfg Config, a Auditor) (Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	var bare float64
	if cfg.Baseline > 0 && !cfg.Bare {
		base := cfg
		base.Bare, base.Baseline, base.Buyers, base.Progress = true, 0, cfg.Baseline, io.Discard
		rep, err := Run(ctx, base, nil)
		if err != nil {
			return Report{}, fmt.Errorf("measuring the generator's ceiling: %w", err)
		}
		bare = rep.RequestsPerSecond
		fmt.Fprintf(cfg.Progress, "rush: the generator alone against a bare 202 handler: %.0f req/s\n", bare)
	}
	rep, err := run1(ctx, cfg, a)
	if bare > 0 {
		rep.BareRequestsPerSecond = math.Round(bare)
		rep.RatioToBare = math.Round(rep.RequestsPerSecond/bare*1000) / 1000
	}
	return rep, err
}

func run1(ctx context.Context, cfg Config, a Auditor) (Report, error) {
	r := &run{
		cfg: cfg, id: randomHex(4),
		notified: hdrhistogram.New(1, 60_000_000, 3),
		answers:  map[string]int64{},
		client:   &http.Client{Timeout: cfg.RequestTimeout},
	}
	for i := range r.shards {
		r.shards[i] = &stats{
			latency: hdrhistogram.New(1, 60_000_000, 3), accepted: hdrhistogram.New(1, 60_000_000, 3),
			answers: map[string]int64{},
		}
	}
	defer r.client.CloseIdleConnections()
	if cfg.Bare {
		stop, target, err := bareServer()
		if err != nil {
			return Report{}, err
		}
		defer stop()
		r.cfg.Target = target
		r.cfg.Watchers = 0
	} else {
		var err error
		if r.auth, err = auth.New(cfg.Secret, nil); err != nil {
			return Report{}, err
		}
		if err := r.createEvent(ctx); err != nil {
			return Report{}, err
		}
		if err := r.signTokens(ctx); err != nil {
			return Report{}, err
		}
	}

	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	var watchers sync.WaitGroup
	for k := range r.cfg.Watchers {
		if err := r.watch(watchCtx, &watchers, k*r.watchStride()); err != nil {
			stopWatching()
			watchers.Wait()
			return Report{}, fmt.Errorf("opening watcher socket %d: %w", k, err)
		}
	}

	r.start = time.Now()
	progressDone := r.progress(ctx)
	var next atomic.Int64
	var buyers sync.WaitGroup
	for g := range r.cfg.Concurrency {
		buyers.Go(func() {
			b, err := r.newBuyer(g)
			if err != nil {
				r.count("error")
				return
			}
			defer b.close()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= r.cfg.Buyers {
					return
				}
				r.buy(ctx, b, i)
			}
		})
	}
	buyers.Wait()
	elapsed := time.Since(r.start)
	r.tokens = nil // a million of them: 180 MB the audit does not need
	progressDone()

	rep := r.report(elapsed)
	if cfg.Bare || a == nil {
		stopWatching()
		watchers.Wait()
		return rep, ctx.Err()
	}
	err := r.audit(ctx, a, &rep)
	stopWatching()
	watchers.Wait()
	r.mu.Lock()
	rep.Notification = percentiles(r.notified)
	r.mu.Unlock()
	rep.WatchersNotified, rep.WatchersAccepted = r.watchersNotified.Load(), r.watchersAccepted.Load()
	if last := r.lastOutcome.Load(); last > 0 {
		rep.SecondsToLastOutcome = time.Unix(0, last).Sub(r.start).Seconds()
	}
	return rep, err
}

// signTokens signs every buyer's token, on every core.
func (r *run) signTokens(ctx context.Context) error {
	r.tokens = make([]string, r.cfg.Buyers)
	g, ctx := errgroup.WithContext(ctx)
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		g.Go(func() error {
			for n, i := 0, w; i < len(r.tokens); n, i = n+1, i+workers {
				if n%4096 == 0 && ctx.Err() != nil {
					return ctx.Err()
				}
				token, err := r.auth.Issue(r.customer(i), false, time.Hour)
				if err != nil {
					return fmt.Errorf("signing buyer %d's token: %w", i, err)
				}
				r.tokens[i] = token
			}
			return nil
		})
	}
	return g.Wait()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// watchStride is the distance between two watching buyers.
func (r *run) watchStride() int {
	return max(1, min(r.cfg.Tickets, r.cfg.Buyers)/max(r.cfg.Watchers, 1))
}

// watching reports whether buyer i keeps a socket open.
func (r *run) watching(i int) bool {
	stride := r.watchStride()
	return i%stride == 0 && i/stride < r.cfg.Watchers
}

func (r *run) customer(i int) string { return fmt.Sprintf("rush-%s-%d", r.id, i) }

// createEvent creates the sale through POST /events, as an operator would,
// and waits until the API sells it.
func (r *run) createEvent(ctx context.Context) error {
	spec := map[string]any{"name": "Rush " + r.id, "max_per_customer": 4}
	var cats []map[string]any
	for i := range r.cfg.Categories {
		capacity := r.cfg.Tickets / r.cfg.Categories
		if i < r.cfg.Tickets%r.cfg.Categories {
			capacity++
		}
		cats = append(cats, map[string]any{"name": fmt.Sprintf("Category %d", i+1), "capacity": capacity, "price_cents": 10000})
	}
	spec["categories"] = cats
	body, _ := json.Marshal(spec)
	token, err := r.auth.Issue("rush-operator", true, time.Hour)
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.Target+"/events", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("creating the event at %s (is it running? make run): %w", r.cfg.Target, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("creating the event: %s %s (does JWT_SECRET match the server's?)", resp.Status, data)
	}
	if err := json.Unmarshal(data, &r.event); err != nil {
		return fmt.Errorf("reading the event: %w", err)
	}
	for _, cat := range r.event.Categories {
		r.bodies = append(r.bodies, fmt.Appendf(nil, `{"event_id":%q,"category_id":%q,"quantity":1}`, r.event.ID, cat.ID))
	}
	// Every API instance loads the catalog and rebuilds its gate within about a second.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := r.client.Get(r.cfg.Target + "/events/" + r.event.ID.String())
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			return errors.New("the event never appeared in the API's catalog")
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Second):
	}
	return nil
}

// watch opens buyer i's socket and times the outcomes that arrive on it.
func (r *run) watch(ctx context.Context, wg *sync.WaitGroup, i int) error {
	token, err := r.auth.Issue(r.customer(i), false, time.Hour)
	if err != nil {
		return err
	}
	wsURL := r.cfg.WSTarget + "/ws?access_token=" + token
	if strings.HasPrefix(wsURL, "http") { // http → ws, https → wss
		wsURL = "ws" + strings.TrimPrefix(wsURL, "http")
	}
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(dialCtx, wsURL, &websocket.DialOptions{HTTPClient: r.client})
	if err != nil {
		return err
	}
	wg.Go(func() {
		defer conn.CloseNow()
		seen := false
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			arrived := time.Now()
			var f struct {
				Type        string         `json:"type"`
				ProcessedAt crowdpass.Time `json:"processed_at"`
			}
			if json.Unmarshal(data, &f) != nil || !strings.HasPrefix(f.Type, "order.") || f.ProcessedAt.IsZero() {
				continue
			}
			r.mu.Lock()
			_ = r.notified.RecordValue(max(arrived.Sub(f.ProcessedAt.Time).Microseconds(), 1))
			r.mu.Unlock()
			for {
				last := r.lastOutcome.Load()
				if arrived.UnixNano() <= last || r.lastOutcome.CompareAndSwap(last, arrived.UnixNano()) {
					break
				}
			}
			if !seen {
				seen = true
				r.watchersNotified.Add(1)
			}
		}
	})
	return nil
}

// buyer is one goroutine of the crowd: it presses Buy for one person after
// another over its own keep-alive connections, a second one for the double
// click.
type buyer struct {
	clicks [2]*conn
	stats  *stats
}

// stats are the latencies and answers recorded by a share of the buyers;
// sharding them keeps the generator's goroutines from queueing on one lock.
type stats struct {
	mu       sync.Mutex
	latency  *hdrhistogram.Histogram
	accepted *hdrhistogram.Histogram // first-time 202s
	answers  map[string]int64
}

const statShards = 16

func (r *run) newBuyer(g int) (*buyer, error) {
	b := &buyer{stats: r.shards[g%statShards]}
	for i := range b.clicks {
		c, err := newConn(r.cfg.Target, r.cfg.RequestTimeout)
		if err != nil {
			return nil, err
		}
		b.clicks[i] = c
	}
	return b, nil
}

func (b *buyer) close() {
	for _, c := range b.clicks {
		c.close()
	}
}

// buy is one person's purchase intent: one key, resent on a timeout, a 503
// or a request_in_progress, sent twice at once by a double-clicker.
func (r *run) buy(ctx context.Context, b *buyer, i int) {
	var token string
	if r.tokens != nil {
		token = r.tokens[i]
	}
	key := randomHex(12)
	body := []byte(`{}`) // the bare handler's
	if len(r.bodies) > 0 {
		body = r.bodies[i%len(r.bodies)]
	}
	r.sent.Add(1)
	status := [2]int{}
	if r.cfg.DoubleClick > 0 && mrand.Float64() < r.cfg.DoubleClick {
		var wg sync.WaitGroup
		wg.Go(func() { status[1] = r.purchase(ctx, b.clicks[1], b.stats, token, key, body) })
		status[0] = r.purchase(ctx, b.clicks[0], b.stats, token, key, body)
		wg.Wait()
	} else {
		status[0] = r.purchase(ctx, b.clicks[0], b.stats, token, key, body)
	}
	if status[0] == 0 && status[1] == 0 {
		r.unanswered.Add(1)
	}
	if status[0] == http.StatusAccepted || status[1] == http.StatusAccepted {
		r.accepted.Add(1)
		if r.watching(i) {
			r.watchersAccepted.Add(1)
		}
	}
}

// purchase sends one click, resending as a real app would; it returns the
// final status, 0 if nothing answered.
func (r *run) purchase(ctx context.Context, c *conn, st *stats, token, key string, body []byte) int {
	backoff := 50 * time.Millisecond
	for attempt := 0; attempt <= r.cfg.Retries && ctx.Err() == nil; attempt++ {
		start := time.Now()
		a, err := c.post(ctx, token, key, body)
		elapsed := time.Since(start)
		r.requests.Add(1)
		st.record(a, err, elapsed)
		retry := err != nil || a.status == http.StatusServiceUnavailable ||
			(a.status == http.StatusConflict && a.code == string(crowdpass.ERequestInProgress))
		if !retry {
			return a.status
		}
		wait := max(backoff, a.retryAfter)
		backoff = min(2*backoff, 2*time.Second)
		select {
		case <-ctx.Done():
			return a.status
		case <-time.After(wait + time.Duration(mrand.Int64N(int64(wait)/2+1))):
		}
	}
	return 0
}

func (st *stats) record(a answer, err error, elapsed time.Duration) {
	label := "error"
	if err == nil {
		label = strconv.Itoa(a.status)
		if a.code != "" {
			label += " " + a.code
		}
		if a.replayed {
			label += " (replayed)"
		}
	}
	st.mu.Lock()
	if err == nil {
		_ = st.latency.RecordValue(max(elapsed.Microseconds(), 1))
		if a.status == http.StatusAccepted && !a.replayed {
			_ = st.accepted.RecordValue(max(elapsed.Microseconds(), 1))
		}
	}
	st.answers[label]++
	st.mu.Unlock()
}

func (r *run) count(label string) {
	r.mu.Lock()
	r.answers[label]++
	r.mu.Unlock()
}

func (r *run) report(elapsed time.Duration) Report {
	latency, accepted := hdrhistogram.New(1, 60_000_000, 3), hdrhistogram.New(1, 60_000_000, 3)
	answers := map[string]int64{}
	r.mu.Lock()
	for k, v := range r.answers {
		answers[k] += v
	}
	r.mu.Unlock()
	for _, st := range r.shards {
		st.mu.Lock()
		latency.Merge(st.latency)
		accepted.Merge(st.accepted)
		for k, v := range st.answers {
			answers[k] += v
		}
		st.mu.Unlock()
	}
	return Report{
		Target: r.cfg.Target, Buyers: r.cfg.Buyers, Tickets: r.cfg.Tickets,
		EventID:  uuidString(r.event.ID),
		Requests: r.requests.Load(), Seconds: elapsed.Seconds(),
		RequestsPerSecond: float64(r.requests.Load()) / elapsed.Seconds(),
		Latency:           percentiles(latency),
		LatencyAccepted:   percentiles(accepted),
		Answers:           answers, Accepted: r.accepted.Load(), Unanswered: r.unanswered.Load(),
		Violations: []string{},
	}
}

func uuidString(id uuid.UUID) string {
	if id == uuid.Nil {
		return ""
	}
	return id.String()
}

func percentiles(h *hdrhistogram.Histogram) Percentiles {
	ms := func(v int64) float64 { return math.Round(float64(v)/10) / 100 }
	return Percentiles{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), Max: ms(h.Max()),
	}
}

// audit waits for every accepted order to be decided and every outcome to
// be published, then checks the contract's invariants.
func (r *run) audit(ctx context.Context, a Auditor, rep *Report) error {
	deadline := time.Now().Add(r.cfg.DecideTimeout)
	var sales postgres.Sales
	for {
		var err error
		if sales, err = a.EventSales(ctx, r.event.ID); err != nil {
			return fmt.Errorf("reading the sale: %w", err)
		}
		if sales.Orders >= rep.Accepted || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	rep.Sold = sales.Sold
	rep.Oversold = max(sales.Sold-sales.Capacity, 0)
	rep.NeverDecided = max(rep.Accepted-sales.Orders, 0)
	if sales.Sold > 0 {
		rep.OrdersPerTicket = math.Round(float64(sales.Orders)/float64(sales.Sold)*1000) / 1000
		rep.SecondsToLastTicket = sales.LastSoldAt.Sub(r.start).Seconds()
	}
	// Give the relay and the notifiers a moment to deliver the last outcomes.
	outcomeDeadline := time.Now().Add(30 * time.Second)
	var violations []postgres.Violation
	for {
		var err error
		if violations, err = a.Audit(ctx); err != nil {
			return fmt.Errorf("auditing: %w", err)
		}
		pending := false
		for _, v := range violations {
			pending = pending || (v.Invariant == "every outbox row published" && v.Count > 0)
		}
		if (!pending && r.watchersNotified.Load() >= r.watchersAccepted.Load()) || time.Now().After(outcomeDeadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, v := range violations {
		if v.Count > 0 {
			rep.Violations = append(rep.Violations, fmt.Sprintf("%s: %d violations", v.Invariant, v.Count))
		}
	}
	return nil
}

// progress prints a line a second until stopped: a bar on a terminal,
// plain lines otherwise.
func (r *run) progress(ctx context.Context) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last, lastAt := int64(0), time.Now()
		for {
			select {
			case <-done:
				if r.cfg.Terminal {
					fmt.Fprintln(r.cfg.Progress)
				}
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				sent, reqs := r.sent.Load(), r.requests.Load()
				rate := float64(reqs-last) / now.Sub(lastAt).Seconds()
				last, lastAt = reqs, now
				frac := float64(sent) / float64(max(r.cfg.Buyers, 1))
				if r.cfg.Terminal {
					bar := strings.Repeat("#", int(frac*30)) + strings.Repeat(".", 30-int(frac*30))
					fmt.Fprintf(r.cfg.Progress, "\r[%s] %3.0f%%  %d/%d buyers  %d accepted  %.0f req/s ", bar, frac*100, sent, r.cfg.Buyers, r.accepted.Load(), rate)
				} else {
					fmt.Fprintf(r.cfg.Progress, "rush: %d/%d buyers, %d accepted, %.0f req/s\n", sent, r.cfg.Buyers, r.accepted.Load(), rate)
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// bareServer answers every POST /orders with a 202 and no work, to measure
// what the generator alone can send.
func bareServer() (stop func(), url string, err error) {
	body := []byte(`{"order_id":"00000000-0000-0000-0000-000000000000","status":"pending"}` + "\n")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		w.Write(body)
	}), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("listening for the bare handler: %w", err)
	}
	go srv.Serve(ln)
	return func() { srv.Close() }, "http://" + ln.Addr().String(), nil
}
