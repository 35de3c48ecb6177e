package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/db"
)

// DecideOrders decides a batch of order requests in one transaction and
// returns a decision for each, in the same order.
//
// Each order is recorded exactly once: an order that already exists is left
// alone. Orders are served in the order given: an order is rejected
// limit_exceeded when the customer's confirmed tickets for the event plus it
// would pass the event's max_per_customer, sold_out when its category cannot
// cover it, and confirmed otherwise, with one ticket per seat. Every decided
// order gets its outcome row in outbox, in the same transaction.
//
// On error nothing was written and the whole batch may be tried again.
func (s *Store) DecideOrders(ctx context.Context, reqs []crowdpass.OrderRequest) ([]crowdpass.Decision, error) {
	decisions := make([]crowdpass.Decision, len(reqs))
	// Orders found decided before are learned from the insert's conflicts,
	// which is cheaper than looking every id up first: redeliveries are rare.
	// The transaction that met them is rolled back and the batch decided
	// again without them, as the other orders' verdicts may depend on them.
	before := map[uuid.UUID]bool{}
	for attempt := 0; ; attempt++ {
		for i, r := range reqs {
			decisions[i] = crowdpass.Decision{Request: r}
		}
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			return s.decide(ctx, db.New(tx), decisions, before)
		})
		var dup *decidedBeforeError
		if errors.As(err, &dup) && attempt < 3 {
			for _, id := range dup.ids {
				before[id] = true
			}
			continue
		}
		if err != nil {
			return nil, translate(err)
		}
		return decisions, nil
	}
}

// CanDecide reports whether a decision could write now, without waiting for
// any lock: nil where the database answers, nothing holds its tables
// against writes (a LOCK TABLE, a migration, an index build), and no
// session idle in a transaction holds locks a decision waits for (a worker
// stopped mid-decision). Its error is crowdpass.EUnavailable where the
// database is unreachable or the tables held, and anything else (missing
// privileges, say) otherwise.
func (s *Store) CanDecide(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		if err := q.DecisionLocksCheck(ctx); err != nil {
			return err
		}
		if err := q.DecisionEventsLockCheck(ctx); err != nil {
			return err
		}
		held, err := q.DecisionLocksHeldIdle(ctx)
		if err == nil && held > 0 {
			err = errHeldIdle
		}
		return err
	})
	// Class 42 (a missing privilege, say) is the check's own problem: a
	// decision may need less than a table lock.
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "42") {
		return fmt.Errorf("checking the decision's locks: %w", err)
	}
	if err != nil {
		return crowdpass.Errorf(crowdpass.EUnavailable, "the database cannot decide now: %v", err)
	}
	return nil
}

var errHeldIdle = errors.New("a session idle in a transaction holds locks a decision waits for")

// decidedBeforeError lists orders of a batch that turned out to exist.
type decidedBeforeError struct{ ids []uuid.UUID }

func (e *decidedBeforeError) Error() string {
	return fmt.Sprintf("%d orders of the batch were decided before", len(e.ids))
}

// holder is a customer of an event: the unit max_per_customer counts.
type holder struct {
	event    uuid.UUID
	customer string
}

func compareHolders(a, b holder) int {
	if c := bytes.Compare(a.event[:], b.event[:]); c != 0 {
		return c
	}
	return strings.Compare(a.customer, b.customer)
}

// lockKey is the holder's advisory lock key. Two holders sharing a key only
// wait for each other; it is never a question of correctness.
func (h holder) lockKey() int64 {
	sum := sha256.Sum256(append(h.event[:], h.customer...))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

func compareUUIDs(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }

type stock struct{ capacity, remaining int }

type verdict struct {
	status crowdpass.OrderStatus
	reason crowdpass.Reason
}

// plan decides reqs in order against what each holder has confirmed and
// against the categories' stock. It returns a verdict per request
// and the tickets taken per category.
func plan(reqs []crowdpass.OrderRequest, limits map[uuid.UUID]int, confirmed map[holder]int, stocks map[uuid.UUID]stock) ([]verdict, map[uuid.UUID]int) {
	held := maps.Clone(confirmed)
	if held == nil {
		held = map[holder]int{}
	}
	taken := make(map[uuid.UUID]int)
	verdicts := make([]verdict, len(reqs))
	for i, r := range reqs {
		h := holder{r.EventID, r.CustomerID}
		switch {
		case held[h]+r.Quantity > limits[r.CategoryID]:
			verdicts[i] = verdict{crowdpass.StatusRejected, crowdpass.ReasonLimitExceeded}
		case stocks[r.CategoryID].remaining-taken[r.CategoryID] < r.Quantity:
			verdicts[i] = verdict{crowdpass.StatusRejected, crowdpass.ReasonSoldOut}
		default:
			verdicts[i] = verdict{status: crowdpass.StatusConfirmed}
			held[h] += r.Quantity
			taken[r.CategoryID] += r.Quantity
		}
	}
	return verdicts, taken
}

// decide runs in the batch's transaction, in five round trips whatever the
// batch's size: lock the customers, count their confirmed tickets, lock the
// categories' rows, write everything (DecisionRecord), commit. Decisions
// are made in Go between the third and the fourth, against exact stock.
func (s *Store) decide(ctx context.Context, q *db.Queries, decisions []crowdpass.Decision, before map[uuid.UUID]bool) error {
	rules, err := s.categoryRules(ctx, q, decisions)
	if err != nil {
		return err
	}

	// Set aside the requests that can never be decided and the duplicates.
	candidates := make([]int, 0, len(decisions))
	seen := make(map[uuid.UUID]bool, len(decisions))
	for i := range decisions {
		d := &decisions[i]
		r := d.Request
		if err := r.Validate(); err != nil {
			d.Invalid = err
			continue
		}
		if rule, ok := rules[r.CategoryID]; !ok || rule.event != r.EventID {
			d.Invalid = crowdpass.Errorf(crowdpass.EValidation, "category %s is not a category of event %s", r.CategoryID, r.EventID)
			continue
		}
		if !seen[r.OrderID] && !before[r.OrderID] {
			seen[r.OrderID] = true
			candidates = append(candidates, i)
		}
	}
	if len(candidates) == 0 {
		return nil
	}

	// Lock the customers: from now on nobody else can decide their orders.
	holders := make([]holder, 0, len(candidates))
	limits := make(map[uuid.UUID]int, len(rules))
	for _, i := range candidates {
		r := decisions[i].Request
		holders = append(holders, holder{r.EventID, r.CustomerID})
		limits[r.CategoryID] = rules[r.CategoryID].maxPerCustomer
	}
	slices.SortFunc(holders, compareHolders)
	holders = slices.Compact(holders)
	keys := make([]int64, len(holders))
	for i, h := range holders {
		keys[i] = h.lockKey()
	}
	slices.Sort(keys)
	if err := q.OrderLockCustomers(ctx, slices.Compact(keys)); err != nil {
		return fmt.Errorf("locking customers: %w", err)
	}
	held := db.OrderConfirmedTicketsParams{}
	for _, h := range holders {
		held.EventIds = append(held.EventIds, h.event)
		held.CustomerIds = append(held.CustomerIds, h.customer)
	}
	heldRows, err := q.OrderConfirmedTickets(ctx, held)
	if err != nil {
		return fmt.Errorf("counting customers' tickets: %w", err)
	}
	confirmed := make(map[holder]int, len(heldRows))
	for _, row := range heldRows {
		confirmed[holder{row.EventID, row.CustomerID}] = int(row.Tickets)
	}

	reqs := make([]crowdpass.OrderRequest, len(candidates))
	for k, i := range candidates {
		reqs[k] = decisions[i].Request
	}

	// Now the hot rows, in id order so that workers never deadlock.
	var cats []uuid.UUID
	for _, r := range reqs {
		cats = append(cats, r.CategoryID)
	}
	slices.SortFunc(cats, compareUUIDs)
	cats = slices.Compact(cats)
	stockRows, err := q.TicketCategoryLockMany(ctx, cats)
	if err != nil {
		return fmt.Errorf("locking ticket categories: %w", err)
	}
	stocks := make(map[uuid.UUID]stock, len(stockRows))
	for _, c := range stockRows {
		stocks[c.ID] = stock{capacity: int(c.Capacity), remaining: int(c.Remaining)}
	}
	verdicts, taken := plan(reqs, limits, confirmed, stocks)

	// Everything is known: one statement writes it all, and the commit
	// follows. processed_at is taken here, a round trip before the commit.
	processedAt := crowdpass.NewTime(s.now())
	rec := db.DecisionRecordParams{ProcessedAt: processedAt.Time}
	// Seats follow on from those sold: capacity - remaining of them.
	next := make(map[uuid.UUID]int, len(stocks))
	for id, st := range stocks {
		next[id] = st.capacity - st.remaining + 1
	}
	orders := make([]crowdpass.Order, len(reqs))
	for k, r := range reqs {
		rec.Ids = append(rec.Ids, r.OrderID)
		rec.CustomerIds = append(rec.CustomerIds, r.CustomerID)
		rec.IdempotencyKeys = append(rec.IdempotencyKeys, r.IdempotencyKey)
		rec.EventIds = append(rec.EventIds, r.EventID)
		rec.CategoryIds = append(rec.CategoryIds, r.CategoryID)
		rec.Quantities = append(rec.Quantities, int32(r.Quantity))
		rec.Statuses = append(rec.Statuses, string(verdicts[k].status))
		rec.Reasons = append(rec.Reasons, string(verdicts[k].reason))
		rec.CreatedAts = append(rec.CreatedAts, r.AcceptedAt.Time)
		order := crowdpass.Order{
			ID:          r.OrderID,
			Status:      verdicts[k].status,
			Reason:      verdicts[k].reason,
			EventID:     r.EventID,
			CategoryID:  r.CategoryID,
			Quantity:    r.Quantity,
			Tickets:     []crowdpass.Ticket{},
			AcceptedAt:  r.AcceptedAt,
			ProcessedAt: &processedAt,
			CustomerID:  r.CustomerID,
		}
		if order.Status == crowdpass.StatusConfirmed {
			for range r.Quantity {
				id := uuid.Must(uuid.NewV7())
				seat := next[r.CategoryID]
				next[r.CategoryID]++
				order.Tickets = append(order.Tickets, crowdpass.Ticket{ID: id, Seat: seat})
				rec.TicketIds = append(rec.TicketIds, id)
				rec.TicketOrderIds = append(rec.TicketOrderIds, r.OrderID)
				rec.TicketCategoryIds = append(rec.TicketCategoryIds, r.CategoryID)
				rec.Seats = append(rec.Seats, int32(seat))
			}
		}
		orders[k] = order
		decisions[candidates[k]].Order = &orders[k]
	}
	for _, id := range cats {
		if n := taken[id]; n > 0 {
			rec.TakeCategoryIds = append(rec.TakeCategoryIds, id)
			rec.Takes = append(rec.Takes, int32(n))
		}
	}
	if rec.EventTypes, rec.Payloads, err = outcomePayloads(orders); err != nil {
		return err
	}
	row, err := q.DecisionRecord(ctx, rec)
	if err != nil {
		return fmt.Errorf("recording decisions: %w", err)
	}
	if len(row.Inserted) != len(reqs) {
		fresh := make(map[uuid.UUID]bool, len(row.Inserted))
		for _, id := range row.Inserted {
			fresh[id] = true
		}
		dup := &decidedBeforeError{}
		for _, r := range reqs {
			if !fresh[r.OrderID] {
				dup.ids = append(dup.ids, r.OrderID)
			}
		}
		return dup
	}
	if int(row.CategoriesTaken) != len(rec.TakeCategoryIds) {
		return fmt.Errorf("taking tickets: %d of %d categories could not cover their take", len(rec.TakeCategoryIds)-int(row.CategoriesTaken), len(rec.TakeCategoryIds))
	}
	return nil
}

type categoryRule struct {
	event          uuid.UUID
	maxPerCustomer int
}

// categoryRules returns which event each category of the batch belongs to
// and that event's limit. Neither ever changes, so they are cached for good;
// an unknown category is looked up each time, as it may yet be created.
func (s *Store) categoryRules(ctx context.Context, q *db.Queries, decisions []crowdpass.Decision) (map[uuid.UUID]categoryRule, error) {
	rules := make(map[uuid.UUID]categoryRule)
	var missing []uuid.UUID
	s.rulesMu.RLock()
	for _, d := range decisions {
		id := d.Request.CategoryID
		if rule, ok := s.rules[id]; ok {
			rules[id] = rule
		} else {
			missing = append(missing, id)
		}
	}
	s.rulesMu.RUnlock()
	if len(missing) == 0 {
		return rules, nil
	}
	slices.SortFunc(missing, compareUUIDs)
	rows, err := q.TicketCategoryRulesMany(ctx, slices.Compact(missing))
	if err != nil {
		return nil, fmt.Errorf("reading category rules: %w", err)
	}
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	for _, r := range rows {
		rule := categoryRule{event: r.EventID, maxPerCustomer: int(r.MaxPerCustomer)}
		s.rules[r.ID] = rule
		rules[r.ID] = rule
	}
	return rules, nil
}
