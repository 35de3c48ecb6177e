package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/problem"
)

// orderBody is the wire shape of POST /orders. Pointers tell a missing
// field from a zero one.
type orderBody struct {
	EventID    *string `json:"event_id"`
	CategoryID *string `json:"category_id"`
	Quantity   *int64  `json:"quantity"`
}

// validate checks the fields; maxPerCustomer, if not nil, tells an event's
// max_per_customer where it is known without waiting. The quantity's bound
// is checked against it only when another field is wrong, so that the one
// 422 lists every problem; otherwise postOrder checks it against the event
// it looks up anyway.
func (b orderBody) validate(maxPerCustomer func(event uuid.UUID) (int, bool)) (crowdpass.OrderPayload, error) {
	var p crowdpass.OrderPayload
	var fields []crowdpass.FieldError
	parseID := func(name string, v *string, dst *uuid.UUID) {
		if v == nil {
			fields = append(fields, crowdpass.FieldError{Field: name, Message: "is required"})
			return
		}
		id, err := crowdpass.ParseID(*v)
		if err != nil {
			fields = append(fields, crowdpass.FieldError{Field: name, Message: "must be a UUID"})
			return
		}
		*dst = id
	}
	parseID("event_id", b.EventID, &p.EventID)
	parseID("category_id", b.CategoryID, &p.CategoryID)
	switch {
	case b.Quantity == nil:
		fields = append(fields, crowdpass.FieldError{Field: "quantity", Message: "is required"})
	case *b.Quantity < 1 || *b.Quantity > crowdpass.MaxPerCustomerCap:
		fields = append(fields, crowdpass.FieldError{Field: "quantity", Message: "must be between 1 and the event's max_per_customer"})
	default:
		p.Quantity = int(*b.Quantity)
		if len(fields) > 0 && p.EventID != uuid.Nil && maxPerCustomer != nil {
			if limit, ok := maxPerCustomer(p.EventID); ok && p.Quantity > limit {
				fields = append(fields, quantityOverLimit(limit))
			}
		}
	}
	if len(fields) > 0 {
		return p, &crowdpass.Error{Code: crowdpass.EValidation, Message: "the order has invalid fields", Fields: fields}
	}
	return p, nil
}

func quantityOverLimit(limit int) crowdpass.FieldError {
	return crowdpass.FieldError{Field: "quantity", Message: "must be between 1 and the event's max_per_customer (" + strconv.Itoa(limit) + ")"}
}

// accepted is the 202 body of POST /orders.
type accepted struct {
	OrderID    uuid.UUID             `json:"order_id"`
	Status     crowdpass.OrderStatus `json:"status"`
	EventID    uuid.UUID             `json:"event_id"`
	CategoryID uuid.UUID             `json:"category_id"`
	Quantity   int                   `json:"quantity"`
	AcceptedAt crowdpass.Time        `json:"accepted_at"`
}

// acceptedAnswer is the 202 for an accepted order, byte for byte wherever
// it is built: when the order is queued, and again from its outcome
// (Recent.Decided).
func acceptedAnswer(a accepted) crowdpass.Answer {
	body, _ := json.Marshal(a)
	return crowdpass.Answer{Status: http.StatusAccepted, Body: append(body, '\n')}
}

// postOrder runs the contract's checks in its order: auth (middleware), the
// key, media type, size, shape, fields, catalog, then the idempotency step
// (this process's memory and key holds, then the gate, which also checks
// the window and takes the stock in the same atomic call), then the durable
// publish.
func (s *Server) postOrder(w http.ResponseWriter, r *http.Request) {
	customer := principal(r).Customer
	key, err := idempotencyKey(r.Header)
	if err != nil {
		problem.WriteError(w, err)
		return
	}
	raw, err := readJSONBody(w, r)
	if err != nil {
		problem.WriteError(w, err)
		return
	}
	body, err := decodeOrder(raw)
	if err != nil {
		problem.WriteError(w, err)
		return
	}
	payload, err := body.validate(s.catalog.maxPerCustomer)
	if err != nil {
		problem.WriteError(w, err)
		return
	}
	if !s.catalog.isLoaded() {
		problem.WriteError(w, crowdpass.Errorf(crowdpass.EUnavailable, "the event catalog is not loaded yet"))
		return
	}
	event, err := s.findEvent(r.Context(), payload.EventID)
	if err != nil {
		problem.WriteError(w, err)
		return
	}
	// The quantity's bound is a field check (422), which the contract puts
	// before the catalog's 404s; it needs the event, not the category.
	if payload.Quantity > event.MaxPerCustomer {
		problem.WriteError(w, &crowdpass.Error{Code: crowdpass.EValidation, Message: "the order has invalid fields",
			Fields: []crowdpass.FieldError{quantityOverLimit(event.MaxPerCustomer)}})
		return
	}
	category, ok := event.Category(payload.CategoryID)
	if !ok {
		problem.WriteError(w, crowdpass.Errorf(crowdpass.ENotFound, "category %s is not a category of event %s", payload.CategoryID, event.ID))
		return
	}

	now := s.cfg.Now()
	adm := crowdpass.Admission{
		OrderID:     crowdpass.OrderID(customer, key),
		CustomerID:  customer,
		Fingerprint: payload.Fingerprint(),
		CategoryID:  category.ID,
		Quantity:    payload.Quantity,
		Window:      event.SaleState(now),
		SoldOut:     s.catalog.soldOutAnswer(category),
		AcceptedAt:  crowdpass.NewTime(now),
		// Where Redis lost the gate's stock, it starts again from here.
		Remaining: category.Remaining, RemainingKnown: true,
	}
	windowErr := func() error {
		if adm.Window == crowdpass.ESaleNotOpen {
			return crowdpass.Errorf(crowdpass.ESaleNotOpen, "the sale opens at %s", event.OpensAt)
		}
		return crowdpass.Errorf(crowdpass.ESaleClosed, "the sale closed at %s", event.ClosesAt)
	}

	// This process keeps a key's requests apart itself, one at a time: a
	// double click waits for its first click and is then answered as a
	// retry, instead of request_in_progress and a second's wait. The gate
	// keeps apart the requests of different processes; without it (Redis
	// down), and when Redis fails or comes back mid-request, this is what
	// keeps one process from queueing a key twice.
	deadline := time.Now().Add(s.cfg.InProgressWait)
	held := false
	defer func() {
		if held {
			s.keys.release(adm.OrderID)
		}
	}()
	// decideAnew is set when a refusal this process remembers meets another
	// attempt of the same payload in Redis (Redis lost the key, and another
	// process admitted it since): that attempt's order may be queued, so
	// the gate decides, as for any retry, and never replays the sold_out.
	decideAnew := false
	for !held {
		if rec, ok := s.remembered(customer, adm.OrderID, decideAnew); ok {
			if s.answerRemembered(r.Context(), w, adm, rec) {
				return
			}
			decideAnew = true
			continue
		}
		if held, err = s.keys.take(r.Context(), adm.OrderID, adm.Fingerprint, deadline); err != nil {
			problem.WriteError(w, err)
			return
		}
		// Not held: the holder finished, or was admitted; look again.
	}
	// Answered between the look above and the hold, by the request that
	// held the key then (the gate can have missed it: Redis was down, or
	// lost the key). Memory answers without the hold.
	if rec, ok := s.remembered(customer, adm.OrderID, decideAnew); ok && s.answerRemembered(r.Context(), w, adm, rec) {
		return
	}
	// A key Redis forgot (a flush, or IDEMPOTENCY_TTL) whose order exists
	// gets that order's 202, or a mismatch, never a second order or a
	// sold_out.
	rec, stored, err := s.storedOrder(r.Context(), customer, adm.OrderID)
	if err != nil {
		problem.WriteError(w, err)
		return
	}
	if stored {
		s.cfg.Recent.addDecided(adm.OrderID, rec)
		if s.answerRemembered(r.Context(), w, adm, rec) {
			return
		}
	}
	owner, gated, acceptedAt := "", !s.redisDown.Load(), adm.AcceptedAt
	var admitted crowdpass.AdmissionResult
	// From before an admission can take stock until its order is queued or
	// the stock given back, the reconcile must not take the gate's stock
	// for drift: the order is in neither the queue nor remaining.
	inFlight := false
	defer func() {
		if inFlight {
			s.inFlight.Add(-1)
		}
	}()
	if gated {
		// Named after this process, whose live mark tells a retry elsewhere
		// whether the attempt can still be publishing (gate.Admit).
		owner = s.process + "." + newOwner()
		// The admission runs to its end even if the client goes away: its
		// script may already be queued, and a half-known outcome would leave
		// the key in flight with its stock taken.
		admitCtx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.GateTimeout)
		var res crowdpass.AdmissionResult
		if adm.Window == "" && s.edge.short(category.ID, adm.Quantity, now) {
			s.metrics.refused.Inc()
			res, err = s.gate.Refuse(admitCtx, adm, owner)
		} else {
			s.admissions.Add(1)
			s.inFlight.Add(1)
			inFlight = true
			// Where Redis lost the category's stock, this process rebuilds it
			// (restock) and asks again; the catalog's remaining answers if
			// the stock is lost again meanwhile.
			asked := adm
			asked.AskStock = true
			res, err = s.gate.Admit(admitCtx, asked, owner)
			if err == nil && res.Verdict == crowdpass.StockUnknown {
				s.restock(admitCtx, category, res.Recovering)
				// A call of its own: the rebuild may have used most of the first's.
				againCtx, cancelAgain := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.GateTimeout)
				res, err = s.gate.Admit(againCtx, adm, owner)
				cancelAgain()
			}
			if err == nil && res.Verdict != crowdpass.Admitted {
				s.inFlight.Add(-1)
				inFlight = false
			}
		}
		if err == nil && res.Verdict == crowdpass.SoldOut && res.StockKnown {
			s.edge.observe(category.ID, res.Stock, now)
		}
		cancel()
		if err != nil {
			// Redis is a cache: without it, orders go the slow path and the
			// database's unique key keeps them exactly-once.
			if s.redisDown.CompareAndSwap(false, true) {
				s.edge.forgetAll()
				s.log.Warn("redis unreachable; admitting orders without the gate", "err", err)
			}
			gated = false
		} else {
			if !res.Recovering.IsZero() {
				res = s.afterRecovery(r.Context(), adm, res)
				if inFlight && res.Verdict != crowdpass.Admitted {
					s.inFlight.Add(-1)
					inFlight = false
				}
			}
			s.metrics.gate.WithLabelValues(verdictName(res.Verdict)).Inc()
			switch res.Verdict {
			case crowdpass.Replay:
				replay(w, adm.OrderID, res.Answer)
				return
			case crowdpass.Mismatch:
				problem.WriteError(w, errKeyMismatch)
				return
			case crowdpass.InProgress:
				problem.WriteError(w, errInProgress)
				return
			case crowdpass.OutsideWindow:
				problem.WriteError(w, windowErr())
				return
			case crowdpass.SoldOut:
				s.cfg.Recent.refuse(adm.OrderID, adm.Fingerprint, res.Answer)
				problem.WriteAnswer(w, res.Answer)
				return
			}
			admitted = res
			if res.TookOver {
				acceptedAt = res.AcceptedAt
			}
		}
	}
	if !gated {
		s.metrics.slowPath.Inc()
		if adm.Window != "" {
			problem.WriteError(w, windowErr())
			return
		}
	}
	s.keys.queueing(adm.OrderID)
	s.cfg.Recent.queue(adm.OrderID, category.ID, payload.Quantity, now, gated && admitted.Taken > 0)
	if !inFlight {
		s.admissions.Add(1)
		s.inFlight.Add(1)
		inFlight = true
	}

	req := crowdpass.OrderRequest{
		OrderID:        adm.OrderID,
		CustomerID:     customer,
		IdempotencyKey: key,
		EventID:        event.ID,
		CategoryID:     category.ID,
		Quantity:       payload.Quantity,
		AcceptedAt:     acceptedAt,
	}
	if err := s.enqueue(r.Context(), req); err != nil {
		// Not counted as queued any more, even if it may be: a rebuilt
		// stock may then admit one order too many, never one too few.
		s.cfg.Recent.unqueue(req.OrderID)
		if errors.Is(err, crowdpass.ErrUnconfirmed) {
			// The broker may have queued the order: it keeps the stock it took
			// and its attempt stays in flight, so that a retry waits for the
			// mark's deadline and then queues the same order again, with this
			// acceptance time (the workers decide it once), instead of the
			// ticket going to someone else or the key being answered sold_out.
			s.log.Warn("order not confirmed by the broker in time; it may be queued", "order_id", req.OrderID, "err", err)
			s.metrics.unconfirmed.Inc()
			s.holdReconcile(unconfirmedHold * s.cfg.PublishTimeout)
			problem.WriteError(w, errUnconfirmed)
			return
		}
		s.log.Warn("order not queued", "order_id", req.OrderID, "err", err)
		if gated {
			s.abort(adm, owner, admitted)
		}
		problem.WriteError(w, crowdpass.Errorf(crowdpass.EUnavailable, "the order could not be queued; nothing was created, retry with the same Idempotency-Key"))
		return
	}
	answer := acceptedAnswer(accepted{
		OrderID: req.OrderID, Status: crowdpass.StatusPending, EventID: req.EventID,
		CategoryID: req.CategoryID, Quantity: req.Quantity, AcceptedAt: req.AcceptedAt,
	})
	s.cfg.Recent.add(req.OrderID, crowdpass.KeyRecord{CustomerID: customer, Fingerprint: adm.Fingerprint, Answer: answer})
	if gated {
		// The order is queued whatever happens now; if the answer cannot be
		// stored, the in-flight mark expires and a retry is queued again,
		// which the workers recognise by its id.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.cfg.GateTimeout)
		if err := s.gate.Complete(ctx, adm, answer); err != nil {
			s.log.Warn("answer not stored", "order_id", req.OrderID, "err", err)
		}
		cancel()
	}
	w.Header().Set("Location", "/orders/"+req.OrderID.String())
	problem.WriteAnswer(w, answer)
}

// afterRecovery waits until Redis has recovered from losing its keys and
// looks at the key again, for res, an answer given anew during the
// recovery (an admission, a sold_out stored, or the replay of a refusal
// another process gave anew): a process that answered the key before the
// loss writes its answer back meanwhile, in the place of this one
// (remember.lua, refusal.lua), and that answer stands, a replay: also
// where it is this same refusal, marked written back. An admission that
// gave way gives its tickets back; its order was not queued. Where the key
// holds this answer still, or cannot be read, res stands: as it would
// have without the loss. The wait (at most the gate's Recovery) does not
// end with the request: an admission's order must not be queued before
// the look.
func (s *Server) afterRecovery(ctx context.Context, adm crowdpass.Admission, res crowdpass.AdmissionResult) crowdpass.AdmissionResult {
	s.metrics.recoveryWaits.Inc()
	time.Sleep(time.Until(res.Recovering))
	lookCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.GateTimeout)
	defer cancel()
	rec, err := s.gate.Lookup(lookCtx, adm.OrderID)
	if err != nil || rec.InFlight || rec.Answer.Status == 0 || (res.Verdict == crowdpass.SoldOut && !rec.WrittenBack &&
		rec.Answer.Status == res.Answer.Status && bytes.Equal(rec.Answer.Body, res.Answer.Body)) {
		return res
	}
	if res.Verdict == crowdpass.Admitted && res.Taken > 0 {
		if _, err := s.gate.GiveBack(lookCtx, adm.CategoryID, res.Taken); err != nil {
			s.log.Warn("tickets of an admission that gave way not given back; the reconcile corrects the stock", "order_id", adm.OrderID, "err", err)
		}
	}
	if rec.Fingerprint != adm.Fingerprint {
		return crowdpass.AdmissionResult{Verdict: crowdpass.Mismatch}
	}
	return crowdpass.AdmissionResult{Verdict: crowdpass.Replay, Answer: rec.Answer}
}

// keyHolds are the keys whose requests this process is handling, one
// request per key at a time.
type keyHolds struct {
	mu      sync.Mutex
	keys    map[uuid.UUID]keyHold
	waiting prometheus.Gauge
}

type keyHold struct {
	fp       string        // the holder's payload fingerprint
	queueing bool          // the holder was admitted: its payload is the key's
	changed  chan struct{} // closed when the holder is admitted or releases; made by the first request that waits
}

// take holds the order's key for a request with payload fingerprint fp, and
// reports true, if no other request holds it. Otherwise it waits until the
// holder is admitted or releases the key, and reports false, so that the
// caller looks for the holder's answer and tries again. It fails with
// errKeyMismatch at once if the holder is queueing another payload's order,
// and with errInProgress if the deadline or ctx comes first.
func (k *keyHolds) take(ctx context.Context, order uuid.UUID, fp string, deadline time.Time) (bool, error) {
	k.mu.Lock()
	h, busy := k.keys[order]
	if !busy {
		if k.keys == nil {
			k.keys = map[uuid.UUID]keyHold{}
		}
		k.keys[order] = keyHold{fp: fp}
		k.mu.Unlock()
		return true, nil
	}
	if h.queueing && h.fp != fp {
		k.mu.Unlock()
		return false, errKeyMismatch
	}
	// A holder with another payload that is not queueing yet may still be
	// refused (a mismatch, a closed sale): the gate decides after it.
	if h.changed == nil {
		h.changed = make(chan struct{})
		k.keys[order] = h
	}
	k.mu.Unlock()
	k.waiting.Inc()
	defer k.waiting.Dec()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-h.changed:
		return false, nil
	case <-timer.C:
	case <-ctx.Done():
	}
	select {
	case <-h.changed: // as the wait ended
		return false, nil
	default:
		return false, errInProgress
	}
}

// queueing marks the held key's request as admitted, its order about to be
// queued, and wakes the requests waiting for it: another payload is a
// mismatch now.
func (k *keyHolds) queueing(order uuid.UUID) {
	k.mu.Lock()
	h, ok := k.keys[order]
	if !ok {
		k.mu.Unlock()
		return
	}
	changed := h.changed
	h.queueing, h.changed = true, nil
	k.keys[order] = h
	k.mu.Unlock()
	if changed != nil {
		close(changed)
	}
}

func (k *keyHolds) release(order uuid.UUID) {
	k.mu.Lock()
	h := k.keys[order]
	delete(k.keys, order)
	k.mu.Unlock()
	if h.changed != nil {
		close(h.changed)
	}
}

// The problems answered from more than one place.
var (
	errKeyMismatch = crowdpass.Errorf(crowdpass.EKeyMismatch, "this Idempotency-Key was already used with another payload")
	errInProgress  = crowdpass.Errorf(crowdpass.ERequestInProgress, "the first request with this Idempotency-Key is still being handled")
	errNoSuchOrder = crowdpass.Errorf(crowdpass.ENotFound, "no such order") // nor another customer's
	errUnconfirmed = crowdpass.Errorf(crowdpass.EUnavailable, "the broker did not confirm the order in time, so it may be queued or not; "+
		"retry with the same Idempotency-Key: the retry resolves to this order, and nothing is created twice")
)

var replayedTrue = []string{"true"} // shared: see problem.WriteAnswer

// replay writes a key's stored answer again.
func replay(w http.ResponseWriter, order uuid.UUID, answer crowdpass.Answer) {
	if answer.Status == http.StatusAccepted {
		w.Header().Set("Location", "/orders/"+order.String())
	}
	w.Header()["Idempotent-Replayed"] = replayedTrue
	problem.WriteAnswer(w, answer)
}

// remembered returns the record Recent holds of the customer's key: an
// order this process accepted lately, one any process decided lately, or,
// unless noRefusal, a refusal this process answered at the edge lately.
func (s *Server) remembered(customer string, order uuid.UUID, noRefusal bool) (crowdpass.KeyRecord, bool) {
	rec, ok := s.cfg.Recent.get(order)
	if ok && rec.CustomerID == customer && rec.Answer.Status == http.StatusAccepted {
		return rec, true
	}
	if noRefusal {
		return crowdpass.KeyRecord{}, false
	}
	// The order id is the customer's and the key's: a refusal found by it
	// is this customer's.
	if fp, answer, ok := s.cfg.Recent.refusal(order); ok {
		return crowdpass.KeyRecord{CustomerID: customer, Fingerprint: fp, Answer: answer}, true
	}
	return crowdpass.KeyRecord{}, false
}

// storedOrder finds the key's order in PostgreSQL where it may be there
// (Recent.mayExist): a new key, the rush's million, is known new without a
// read. The read is skipped while PostgreSQL cannot be read (the catalog
// is stale: the gate then decides, as before this lookup), and bounded by
// GateTimeout; a read that fails is an unavailable answer, never stored,
// rather than a decision that could contradict the order.
func (s *Server) storedOrder(ctx context.Context, customer string, id uuid.UUID) (crowdpass.KeyRecord, bool, error) {
	if !s.cfg.Recent.mayExist(id) || s.catalogAge() > 2*s.cfg.ReconcileInterval {
		return crowdpass.KeyRecord{}, false, nil
	}
	readCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.GateTimeout)
	defer cancel()
	order, err := s.store.Order(readCtx, id)
	switch {
	case errors.Is(err, crowdpass.ErrNotFound):
		s.metrics.existing.WithLabelValues("absent").Inc()
		return crowdpass.KeyRecord{}, false, nil
	case err != nil:
		s.metrics.existing.WithLabelValues("error").Inc()
		// Redis may hold the key (a retry of an order older than this
		// process's memory): the gate then answers from it. Else a
		// decision could contradict the order: unavailable, never stored.
		lookCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.GateTimeout)
		defer cancel()
		if _, lookErr := s.gate.Lookup(lookCtx, id); lookErr == nil {
			return crowdpass.KeyRecord{}, false, nil
		}
		s.log.Warn("the order of a key Redis does not hold could not be read", "order_id", id, "err", err)
		return crowdpass.KeyRecord{}, false, crowdpass.Errorf(crowdpass.EUnavailable, "the key's order could not be looked up; retry with the same Idempotency-Key")
	case order.CustomerID != customer: // a hash collision of two keys: not this key's
		return crowdpass.KeyRecord{}, false, nil
	}
	s.metrics.existing.WithLabelValues("found").Inc()
	return decidedRecord(order), true, nil
}

// answerRemembered answers a key whose order this process accepted, or saw
// decided, lately, or that it refused at the edge lately.
// Redis may have lost the key's record, or be unreachable: the order must
// then be neither queued again nor answered sold_out, and a refused key not
// decided anew (it could be admitted now). The remembered answer goes back
// into Redis where Redis lost it (Gate.Remember), and the key is answered as
// it was first used: its answer replayed, or a mismatch for another
// payload, as while Redis held the key. A 202 that Redis holds for the key
// stands, and is replayed. With Redis unreachable the memory answers alone.
// It answers nothing, and reports false, for a refusal that Redis holds an
// attempt in flight for: another process admitted the key after Redis lost
// it, and may have queued its order (then died, or not yet answered), so
// the key is the gate's to decide, which waits for that attempt or takes
// it over.
func (s *Server) answerRemembered(ctx context.Context, w http.ResponseWriter, adm crowdpass.Admission, rec crowdpass.KeyRecord) bool {
	res := crowdpass.AdmissionResult{Verdict: crowdpass.Replay, Answer: rec.Answer}
	if adm.Fingerprint != rec.Fingerprint {
		res = crowdpass.AdmissionResult{Verdict: crowdpass.Mismatch}
	}
	how := "redis_down"
	if !s.redisDown.Load() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.GateTimeout)
		held, stored, err := s.gate.Remember(ctx, adm, rec)
		cancel()
		switch {
		case err != nil:
			how = "error"
			s.log.Warn("remembered answer not stored again", "order_id", adm.OrderID, "err", err)
		case stored:
			how, res = "restored", held
		default:
			how, res = "held", held
		}
	}
	if res.Verdict == crowdpass.InProgress && rec.Answer.Status != http.StatusAccepted {
		// Forgotten too, so that it is never written back after another
		// loss (watchCanary): the key's order may exist by then.
		s.cfg.Recent.forgetRefusal(adm.OrderID)
		s.metrics.remembered.WithLabelValues("superseded").Inc()
		return false
	}
	s.metrics.remembered.WithLabelValues(how).Inc()
	switch {
	case res.Verdict == crowdpass.Mismatch:
		problem.WriteError(w, errKeyMismatch)
	case res.Verdict == crowdpass.InProgress:
		// This payload's own attempt, elsewhere, after Redis lost the key.
		problem.WriteError(w, errInProgress)
	case res.Answer.Status == 0:
		replay(w, adm.OrderID, rec.Answer) // never expected: the memory is the answer
	default:
		replay(w, adm.OrderID, res.Answer)
	}
	return true
}

// enqueue publishes and waits for the confirm, bounded by PublishTimeout
// even if the client goes away: an order is either confirmed or given back.
func (s *Server) enqueue(ctx context.Context, req crowdpass.OrderRequest) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.PublishTimeout)
	defer cancel()
	start := time.Now()
	err := s.queue.Enqueue(ctx, req)
	if err == nil {
		s.metrics.confirm.Observe(time.Since(start).Seconds())
	}
	return err
}

// unconfirmedHold, in PUBLISH_TIMEOUTs, is how long the reconcile leaves
// the gate's stock alone after an unconfirmed publish: the broker may still
// be taking the message in, or a worker deciding it, out of both the
// queue's ready count and remaining. Past it, a message never queued gives
// its stock back at the next drained reconcile.
const unconfirmedHold = 2

// holdReconcile keeps the reconcile from correcting drift for d from now.
func (s *Server) holdReconcile(d time.Duration) {
	until := time.Now().Add(d).UnixNano()
	for {
		cur := s.unconfirmedUntil.Load()
		if cur >= until || s.unconfirmedUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

func (s *Server) abort(adm crowdpass.Admission, owner string, admitted crowdpass.AdmissionResult) {
	if admitted.Taken > 0 {
		s.edge.forget(adm.CategoryID) // stock comes back: the sold-out view is stale
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.GateTimeout)
	defer cancel()
	// A rebuild of the stock under way may count this order as queued (it
	// was, when the rebuild listed them): the stock is given back to what
	// the rebuild sets, not to a missing key, where it would be lost.
	s.restocking.wait(ctx, adm.CategoryID)
	if err := s.gate.Abort(ctx, adm, owner, admitted); err != nil {
		s.log.Warn("admission not undone; the in-flight mark expires and the gate is reconciled later", "order_id", adm.OrderID, "err", err)
	}
}

func verdictName(v crowdpass.Verdict) string {
	switch v {
	case crowdpass.Admitted:
		return "admitted"
	case crowdpass.Replay:
		return "replay"
	case crowdpass.Mismatch:
		return "mismatch"
	case crowdpass.InProgress:
		return "in_progress"
	case crowdpass.OutsideWindow:
		return "outside_window"
	case crowdpass.SoldOut:
		return "sold_out"
	}
	return "unknown"
}

// getOrder answers from the outcome this process saw, if it saw one, else
// from PostgreSQL, or, for an order accepted but not yet decided, from its
// 202: remembered by this process, or stored by the gate.
func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) {
	customer := principal(r).Customer
	id, err := crowdpass.ParseID(chi.URLParam(r, "id"))
	if err != nil {
		problem.WriteError(w, errNoSuchOrder)
		return
	}
	// An outcome this process saw is final, and what PostgreSQL holds:
	// answered without a read that a stalled database would hold up.
	if rec, ok := s.cfg.Recent.get(id); ok && rec.Decided != nil {
		if rec.CustomerID != customer {
			problem.WriteError(w, errNoSuchOrder)
			return
		}
		problem.WriteJSON(w, http.StatusOK, rec.Decided)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadTimeout)
	defer cancel()
	order, dbErr := s.store.Order(ctx, id)
	if dbErr == nil {
		if order.CustomerID != customer {
			problem.WriteError(w, errNoSuchOrder)
			return
		}
		problem.WriteJSON(w, http.StatusOK, order)
		return
	}
	lookupCtx, cancelLookup := context.WithTimeout(r.Context(), s.cfg.ReadTimeout)
	defer cancelLookup()
	rec, err := s.cfg.Recent.Pending(s.gate).Lookup(lookupCtx, id)
	if err == nil && rec.CustomerID != customer {
		problem.WriteError(w, errNoSuchOrder) // another's
		return
	}
	if err == nil && rec.Decided != nil {
		problem.WriteJSON(w, http.StatusOK, rec.Decided) // an outcome this process saw
		return
	}
	if err == nil && rec.Answer.Status == http.StatusAccepted {
		var a accepted
		if json.Unmarshal(rec.Answer.Body, &a) == nil {
			problem.WriteJSON(w, http.StatusOK, crowdpass.Order{
				ID: a.OrderID, Status: crowdpass.StatusPending, EventID: a.EventID, CategoryID: a.CategoryID,
				Quantity: a.Quantity, Tickets: []crowdpass.Ticket{}, AcceptedAt: a.AcceptedAt,
			})
			return
		}
	}
	if crowdpass.Code(dbErr) == crowdpass.ENotFound {
		problem.WriteError(w, errNoSuchOrder)
		return
	}
	s.log.Warn("order lookup failed", "order_id", id, "err", dbErr)
	problem.WriteError(w, crowdpass.Errorf(crowdpass.EUnavailable, "the order cannot be read right now"))
}
