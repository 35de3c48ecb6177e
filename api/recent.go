package api

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/internal/bloom"
	"github.com/crowdpass/crowdpass/internal/generations"
)

// Recent remembers the orders this process accepted lately, with their 202
// answers, so that an order accepted while Redis was down, or whose record
// Redis has lost, still reads as pending (GET /orders/{id}, a WebSocket
// subscribe) until a worker has decided it and PostgreSQL knows it. It also
// remembers the orders decided lately by any process, as their outcomes
// reach this process's notifier (Decided): a key whose record Redis lost is
// then answered with its order's 202 here too, never as new, never sold_out.
//
// It holds between size and 2×size orders accepted here, and as many
// decided (by any process), apart, so that outcomes never push out this
// process's own 202s: two generations each, the older dropped whole when
// the newer fills.
type Recent struct {
	mu      sync.RWMutex // read for every POST /orders, written per 202 and per outcome
	orders  *generations.Map[uuid.UUID, crowdpass.KeyRecord]
	decided *generations.Map[uuid.UUID, crowdpass.KeyRecord]
	refused refusals
	queued  queuedOrders
	// limitExceeded is told of this process's orders rejected
	// limit_exceeded (onLimitExceeded); set once the API runs, while a
	// notifier may already be passing outcomes on.
	limitExceeded atomic.Pointer[func(category uuid.UUID, tickets int)]
	// existing holds the id of every order in PostgreSQL, once
	// existingLoaded: those walked at start (Server.loadExisting) and
	// those decided since the filter was made. Redis forgets keys, and such
	// a key whose order exists is looked up in PostgreSQL only where this
	// says it may be.
	existing       atomic.Pointer[bloom.Filter]
	existingLoaded atomic.Bool
}

// queuedOrders are the orders this process queued whose outcome it has not
// seen: a gate stock Redis lost is rebuilt from remaining less those of
// them no worker has decided yet (Server.restock), as remaining does not
// count them, and a drift is corrected to the same, less only the recent
// ones (Server.reconcile). An outcome that never reaches this process
// leaves its order here, which does no harm: PostgreSQL is asked which are
// decided. An order that never reaches PostgreSQL (dead-lettered, or
// invalid) makes a rebuilt stock too low until the drift correction, which
// no longer counts it once it is old. One forgotten (past two generations)
// makes a rebuilt stock that much too high, which the workers correct by
// rejecting the surplus.
type queuedOrders struct {
	mu     sync.Mutex
	orders *generations.Map[uuid.UUID, queuedOrder]
}

type queuedOrder struct {
	category uuid.UUID
	quantity int32
	at       int64 // when it was queued, Unix ns
	took     bool  // its tickets were taken from the gate's stock
}

// refusals remembers the keys this process refused at the edge (sold_out),
// so that their answer is replayed, not decided anew, once Redis has lost
// them. A sale refuses far more keys than it accepts, so each is an order id
// and the index of its answer among the few distinct ones (a category's
// sold_out for one quantity): no pointer for the collector to scan.
type refusals struct {
	// mu is taken for every POST /orders and once more per refusal: a
	// plain mutex, cheaper than a RWMutex where writes are most of the use.
	mu      sync.Mutex
	keys    *generations.Map[uuid.UUID, uint32]
	answers []refusal
	byFP    map[string][]uint32 // indexes into answers, by fingerprint
}

type refusal struct {
	fingerprint string
	status      int
	body        string
}

// maxRefusals bounds the distinct refusal answers kept; past it, no new
// one is remembered.
const maxRefusals = 1 << 12

// NewRecent returns a Recent of the given size (default 1<<16: 65,536 to
// 131,072 orders accepted here and as many decided, a few hundred bytes
// each, tens of MB once full). A pending order needs it until a worker
// decides it, seconds at most unless PostgreSQL is down; a key whose record
// Redis lost is answered from it as long as it is held (postOrder's
// answerRemembered), which a sale of 50,000 orders covers.
func NewRecent(size int) *Recent {
	if size <= 0 {
		size = 1 << 16
	}
	return &Recent{
		orders:  generations.New[uuid.UUID, crowdpass.KeyRecord](size),
		decided: generations.New[uuid.UUID, crowdpass.KeyRecord](size),
		refused: refusals{keys: generations.New[uuid.UUID, uint32](4 * size), byFP: map[string][]uint32{}},
		queued:  queuedOrders{orders: generations.New[uuid.UUID, queuedOrder](2 * size)},
	}
}

// queue notes an order this process is queueing at the given time, and
// whether its tickets were taken from the gate's stock.
func (r *Recent) queue(id, category uuid.UUID, quantity int, at time.Time, took bool) {
	q := &r.queued
	q.mu.Lock()
	defer q.mu.Unlock()
	q.orders.Put(id, queuedOrder{category: category, quantity: int32(quantity), at: at.UnixNano(), took: took})
}

// unqueue forgets an order, decided or not queued after all, and returns
// it if it was held.
func (r *Recent) unqueue(id uuid.UUID) (queuedOrder, bool) {
	q := &r.queued
	q.mu.Lock()
	defer q.mu.Unlock()
	o, ok := q.orders.Get(id)
	q.orders.Delete(id)
	return o, ok
}

// onLimitExceeded sets what is told the category and quantity of each order
// this process queued, with tickets taken from the gate, that a worker
// rejected limit_exceeded (Server.giveBack).
func (r *Recent) onLimitExceeded(f func(category uuid.UUID, tickets int)) {
	r.limitExceeded.Store(&f)
}

// queuedIn lists the orders of a category this process queued, since the
// given time if it is not zero, and has not seen decided, with their
// quantities.
func (r *Recent) queuedIn(category uuid.UUID, since time.Time) (ids []uuid.UUID, quantities []int32) {
	var after int64
	if !since.IsZero() {
		after = since.UnixNano()
	}
	q := &r.queued
	q.mu.Lock()
	defer q.mu.Unlock()
	for id, o := range q.orders.All() {
		if o.category == category && o.at >= after {
			ids, quantities = append(ids, id), append(quantities, o.quantity)
		}
	}
	return ids, quantities
}

// refuse remembers that the key of order id was refused with answer.
func (r *Recent) refuse(id uuid.UUID, fingerprint string, answer crowdpass.Answer) {
	rs := &r.refused
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, i := range rs.byFP[fingerprint] { // no copy of the body made to look
		if a := rs.answers[i]; a.status == answer.Status && a.body == string(answer.Body) {
			rs.keys.Put(id, i)
			return
		}
	}
	if len(rs.answers) >= maxRefusals {
		return
	}
	i := uint32(len(rs.answers))
	rs.answers = append(rs.answers, refusal{fingerprint: fingerprint, status: answer.Status, body: string(answer.Body)})
	rs.byFP[fingerprint] = append(rs.byFP[fingerprint], i)
	rs.keys.Put(id, i)
}

// forgetRefusal forgets the refusal of the key of order id.
func (r *Recent) forgetRefusal(id uuid.UUID) {
	rs := &r.refused
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.keys.Delete(id)
}

// refusal finds the answer the key of order id was refused with.
func (r *Recent) refusal(id uuid.UUID) (fingerprint string, answer crowdpass.Answer, ok bool) {
	rs := &r.refused
	rs.mu.Lock()
	i, ok := rs.keys.Get(id)
	var a refusal
	if ok {
		a = rs.answers[i]
	}
	rs.mu.Unlock()
	if !ok {
		return "", crowdpass.Answer{}, false
	}
	return a.fingerprint, crowdpass.Answer{Status: a.status, Body: []byte(a.body)}, true
}

func (r *Recent) add(id uuid.UUID, rec crowdpass.KeyRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.orders.Put(id, rec)
}

// Decided remembers a decided order by its outcome: as decided, for reads
// while PostgreSQL cannot answer (an outcome is a committed fact), and with
// the 202 its acceptance was answered with, rebuilt from the outcome's
// fields. It goes with the orders decided elsewhere, never into this
// process's own, which it must not push out; get joins the two. An order
// this process accepted keeps its own 202, the one it gave.
func (r *Recent) Decided(out crowdpass.Outcome) {
	if q, ok := r.unqueue(out.ID); ok && q.took && out.Reason == crowdpass.ReasonLimitExceeded {
		if f := r.limitExceeded.Load(); f != nil {
			(*f)(q.category, int(q.quantity))
		}
	}
	r.mu.RLock()
	_, known := r.decided.Get(out.ID)
	r.mu.RUnlock()
	if known {
		return
	}
	if f := r.existing.Load(); f != nil {
		f.Add(out.ID)
	}
	order := out.Order
	order.CustomerID = out.CustomerID
	rec := decidedRecord(order)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decided.Put(out.ID, rec)
}

// addDecided remembers a decided order read elsewhere than from its
// outcome (PostgreSQL), with the orders decided elsewhere: this process's
// own 202s, the ones only it can write back, are not pushed out.
func (r *Recent) addDecided(id uuid.UUID, rec crowdpass.KeyRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decided.Put(id, rec)
}

// decidedRecord is what is known of a key whose order is decided: its 202,
// rebuilt from the order's fields byte for byte, and the order.
func decidedRecord(order crowdpass.Order) crowdpass.KeyRecord {
	if order.Tickets == nil {
		order.Tickets = []crowdpass.Ticket{} // as GET /orders/{id} shows a rejected order
	}
	return crowdpass.KeyRecord{
		CustomerID:  order.CustomerID,
		Fingerprint: crowdpass.OrderPayload{EventID: order.EventID, CategoryID: order.CategoryID, Quantity: order.Quantity}.Fingerprint(),
		Answer: acceptedAnswer(accepted{
			OrderID: order.ID, Status: crowdpass.StatusPending, EventID: order.EventID,
			CategoryID: order.CategoryID, Quantity: order.Quantity, AcceptedAt: order.AcceptedAt,
		}),
		Decided:   &order,
		FromOrder: true,
	}
}

// mayExist reports whether order id may be in PostgreSQL: false for
// certain where it is not (an order this process knows of from the walk at
// start, or from an outcome since), and false too until that walk is done.
func (r *Recent) mayExist(id uuid.UUID) bool {
	return r.existingLoaded.Load() && r.existing.Load().MayContain(id)
}

// expectExisting makes the filter of orders that exist, for n of them at
// a false-positive rate of 0.1% (1.8 bytes each), and returns it; made
// already, it returns that one.
func (r *Recent) expectExisting(n int) *bloom.Filter {
	r.existing.CompareAndSwap(nil, bloom.New(n, 0.001))
	return r.existing.Load()
}

// get finds an order accepted here, with its outcome if seen, else one
// decided by any process.
func (r *Recent) get(id uuid.UUID) (crowdpass.KeyRecord, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rec, ok := r.orders.Get(id)
	if !ok {
		return r.decided.Get(id)
	}
	if other, ok := r.decided.Get(id); ok { // its outcome, kept apart
		rec.Decided = other.Decided
	}
	return rec, true
}

// answers lists the answers this process gave that it still remembers,
// for Redis to have them back after it lost its keys: first the 202s of
// orders it has not seen decided (known nowhere else: other processes
// learn decided orders from their notifiers), then its other 202s, then
// its refusals. Refusals do not keep their customer, which no answer
// depends on.
func (r *Recent) answers() []crowdpass.KeyAnswer {
	// Copies, made under the locks the hot path takes, and read without.
	r.mu.RLock()
	orders := r.orders.Clone()
	r.mu.RUnlock()
	r.queued.mu.Lock()
	queued := r.queued.orders.Clone()
	r.queued.mu.Unlock()
	rs := &r.refused
	rs.mu.Lock()
	refused, answers := rs.keys.Clone(), slices.Clone(rs.answers)
	rs.mu.Unlock()

	var out, decided []crowdpass.KeyAnswer
	for id, rec := range orders.All() {
		a := crowdpass.KeyAnswer{OrderID: id, CustomerID: rec.CustomerID, Fingerprint: rec.Fingerprint, Answer: rec.Answer}
		if _, ok := queued.Get(id); ok {
			out = append(out, a)
		} else {
			decided = append(decided, a)
		}
	}
	out = append(out, decided...)
	bodies := make([][]byte, len(answers)) // shared by every key refused alike
	for i, a := range answers {
		bodies[i] = []byte(a.body)
	}
	for id, i := range refused.All() {
		a := answers[i]
		out = append(out, crowdpass.KeyAnswer{OrderID: id, Fingerprint: a.fingerprint, Answer: crowdpass.Answer{Status: a.status, Body: bodies[i]}})
	}
	return out
}

// Lookuper finds an order's record by its id, as the gate does.
type Lookuper interface {
	Lookup(ctx context.Context, order uuid.UUID) (crowdpass.KeyRecord, error)
}

// Pending looks an order up among the recent ones, then in next (the
// gate; may be nil). It is what the notifier's subscribe and GET
// /orders/{id} use for orders not yet in PostgreSQL.
func (r *Recent) Pending(next Lookuper) PendingLookup {
	return PendingLookup{recent: r, next: next}
}

// PendingLookup finds an accepted, undecided order; see Recent.Pending.
type PendingLookup struct {
	recent *Recent
	next   Lookuper
}

// Remembered finds the order among the recent ones only.
func (p PendingLookup) Remembered(order uuid.UUID) (crowdpass.KeyRecord, bool) {
	return p.recent.get(order)
}

// Lookup returns the order's record, or crowdpass.ErrNotFound. An order
// next does not hold, or holds in flight (admitted anew since the loss),
// while Redis recovers from losing its keys (see
// crowdpass.AdmissionResult.Recovering) is looked up again once the
// recovery is over, or ctx is: the process that accepted it may be
// writing its 202 back meanwhile.
func (p PendingLookup) Lookup(ctx context.Context, order uuid.UUID) (crowdpass.KeyRecord, error) {
	if rec, ok := p.recent.get(order); ok {
		return rec, nil
	}
	if p.next == nil {
		return crowdpass.KeyRecord{}, crowdpass.ErrNotFound
	}
	rec, err := p.next.Lookup(ctx, order)
	r, ok := p.next.(recoverer)
	if !ok || !(errors.Is(err, crowdpass.ErrNotFound) || err == nil && rec.InFlight) {
		return rec, err
	}
	until, rerr := r.Recovering(ctx)
	if rerr != nil || until.IsZero() {
		return rec, err
	}
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return rec, err
	case <-t.C:
	}
	return p.next.Lookup(ctx, order)
}

// recoverer tells whether Redis is recovering from losing its keys, and
// until when (gate.Redis.Recovering).
type recoverer interface {
	Recovering(ctx context.Context) (time.Time, error)
}
