package postgres

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

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
	for i, r := range reqs {
		decisions[i].Request = r
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return s.decide(ctx, db.New(tx), decisions)
	})
	if err != nil {
		return nil, translate(err)
	}
	return decisions, nil
}

type allowanceKey struct {
	event    uuid.UUID
	customer string
}

func compareAllowanceKeys(a, b allowanceKey) int {
	if c := bytes.Compare(a.event[:], b.event[:]); c != 0 {
		return c
	}
	return strings.Compare(a.customer, b.customer)
}

func compareUUIDs(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }

type stock struct{ capacity, remaining int }

func (s *Store) decide(ctx context.Context, q *db.Queries, decisions []crowdpass.Decision) error {
	// Read the rules without locks: categories and limits never change.
	catIDs := make([]uuid.UUID, 0, len(decisions))
	for _, d := range decisions {
		catIDs = append(catIDs, d.Request.CategoryID)
	}
	slices.SortFunc(catIDs, compareUUIDs)
	catIDs = slices.Compact(catIDs)
	rules, err := q.TicketCategoryRulesMany(ctx, catIDs)
	if err != nil {
		return fmt.Errorf("reading category rules: %w", err)
	}
	limits := make(map[uuid.UUID]db.TicketCategoryRulesManyRow, len(rules))
	for _, r := range rules {
		limits[r.ID] = r
	}

	// Sort out the requests that can never be decided and duplicates within the batch.
	candidates := make([]int, 0, len(decisions))
	seen := make(map[uuid.UUID]bool, len(decisions))
	for i := range decisions {
		d := &decisions[i]
		r := d.Request
		if err := r.Validate(); err != nil {
			d.Invalid = err
			continue
		}
		if rule, ok := limits[r.CategoryID]; !ok || rule.EventID != r.EventID {
			d.Invalid = crowdpass.Errorf(crowdpass.EValidation, "category %s is not a category of event %s", r.CategoryID, r.EventID)
			continue
		}
		if seen[r.OrderID] {
			continue
		}
		seen[r.OrderID] = true
		candidates = append(candidates, i)
	}
	if len(candidates) == 0 {
		return nil
	}

	// Claim the orders: those that exist already were decided before.
	claim := db.OrderClaimManyParams{}
	for _, i := range candidates {
		r := decisions[i].Request
		claim.Ids = append(claim.Ids, r.OrderID)
		claim.CustomerIds = append(claim.CustomerIds, r.CustomerID)
		claim.IdempotencyKeys = append(claim.IdempotencyKeys, r.IdempotencyKey)
		claim.EventIds = append(claim.EventIds, r.EventID)
		claim.CategoryIds = append(claim.CategoryIds, r.CategoryID)
		claim.Quantities = append(claim.Quantities, int32(r.Quantity))
		claim.CreatedAts = append(claim.CreatedAts, r.AcceptedAt.Time)
	}
	claimedIDs, err := q.OrderClaimMany(ctx, claim)
	if err != nil {
		return fmt.Errorf("claiming orders: %w", err)
	}
	claimed := make(map[uuid.UUID]bool, len(claimedIDs))
	for _, id := range claimedIDs {
		claimed[id] = true
	}
	candidates = slices.DeleteFunc(candidates, func(i int) bool { return !claimed[decisions[i].Request.OrderID] })
	if len(candidates) == 0 {
		return nil
	}

	// Lock what the customers hold, then the stock, each in a fixed order so
	// that concurrent workers never deadlock. The hot category rows come last
	// to hold their locks for as short a time as possible.
	keys := make([]allowanceKey, 0, len(candidates))
	cats := make([]uuid.UUID, 0, len(candidates))
	for _, i := range candidates {
		r := decisions[i].Request
		keys = append(keys, allowanceKey{r.EventID, r.CustomerID})
		cats = append(cats, r.CategoryID)
	}
	slices.SortFunc(keys, compareAllowanceKeys)
	keys = slices.Compact(keys)
	slices.SortFunc(cats, compareUUIDs)
	cats = slices.Compact(cats)

	lockAllowances := db.CustomerAllowanceLockManyParams{}
	for _, k := range keys {
		lockAllowances.EventIds = append(lockAllowances.EventIds, k.event)
		lockAllowances.CustomerIds = append(lockAllowances.CustomerIds, k.customer)
	}
	allowanceRows, err := q.CustomerAllowanceLockMany(ctx, lockAllowances)
	if err != nil {
		return fmt.Errorf("locking customer allowances: %w", err)
	}
	held := make(map[allowanceKey]int, len(allowanceRows))
	for _, a := range allowanceRows {
		held[allowanceKey{a.EventID, a.CustomerID}] = int(a.Confirmed)
	}

	stockRows, err := q.TicketCategoryLockMany(ctx, cats)
	if err != nil {
		return fmt.Errorf("locking ticket categories: %w", err)
	}
	stocks := make(map[uuid.UUID]*stock, len(stockRows))
	for _, c := range stockRows {
		stocks[c.ID] = &stock{capacity: int(c.Capacity), remaining: int(c.Remaining)}
	}

	// Decide, earliest first.
	processedAt := crowdpass.NewTime(s.now())
	taken := make(map[uuid.UUID]int, len(cats))
	added := make(map[allowanceKey]int, len(keys))
	var tickets db.TicketInsertManyParams
	var decide db.OrderDecideManyParams
	decided := make([]crowdpass.Order, 0, len(candidates))
	for _, i := range candidates {
		r := decisions[i].Request
		key := allowanceKey{r.EventID, r.CustomerID}
		st := stocks[r.CategoryID]
		order := crowdpass.Order{
			ID:          r.OrderID,
			Status:      crowdpass.StatusConfirmed,
			EventID:     r.EventID,
			CategoryID:  r.CategoryID,
			Quantity:    r.Quantity,
			Tickets:     []crowdpass.Ticket{},
			AcceptedAt:  r.AcceptedAt,
			ProcessedAt: &processedAt,
			CustomerID:  r.CustomerID,
		}
		switch {
		case held[key]+r.Quantity > int(limits[r.CategoryID].MaxPerCustomer):
			order.Status, order.Reason = crowdpass.StatusRejected, crowdpass.ReasonLimitExceeded
		case st == nil || st.remaining < r.Quantity:
			order.Status, order.Reason = crowdpass.StatusRejected, crowdpass.ReasonSoldOut
		default:
			first := st.capacity - st.remaining + 1
			for seat := first; seat < first+r.Quantity; seat++ {
				id := uuid.Must(uuid.NewV7())
				order.Tickets = append(order.Tickets, crowdpass.Ticket{ID: id, Seat: seat})
				tickets.Ids = append(tickets.Ids, id)
				tickets.OrderIds = append(tickets.OrderIds, r.OrderID)
				tickets.CategoryIds = append(tickets.CategoryIds, r.CategoryID)
				tickets.Seats = append(tickets.Seats, int32(seat))
			}
			st.remaining -= r.Quantity
			taken[r.CategoryID] += r.Quantity
			held[key] += r.Quantity
			added[key] += r.Quantity
		}
		decide.Ids = append(decide.Ids, order.ID)
		decide.Statuses = append(decide.Statuses, string(order.Status))
		decide.Reasons = append(decide.Reasons, string(order.Reason))
		decided = append(decided, order)
		decisions[i].Order = &decided[len(decided)-1]
	}

	if len(taken) > 0 {
		take := db.TicketCategoryTakeManyParams{}
		for _, id := range cats {
			if n := taken[id]; n > 0 {
				take.Ids = append(take.Ids, id)
				take.Takes = append(take.Takes, int32(n))
			}
		}
		n, err := q.TicketCategoryTakeMany(ctx, take)
		if err != nil {
			return fmt.Errorf("taking tickets: %w", err)
		}
		if int(n) != len(take.Ids) {
			return fmt.Errorf("taking tickets: %d of %d categories could not cover their take", len(take.Ids)-int(n), len(take.Ids))
		}
		add := db.CustomerAllowanceAddManyParams{}
		for _, k := range keys {
			if n := added[k]; n > 0 {
				add.EventIds = append(add.EventIds, k.event)
				add.CustomerIds = append(add.CustomerIds, k.customer)
				add.Tickets = append(add.Tickets, int32(n))
			}
		}
		if _, err := q.CustomerAllowanceAddMany(ctx, add); err != nil {
			return fmt.Errorf("counting customers' tickets: %w", err)
		}
		if _, err := q.TicketInsertMany(ctx, tickets); err != nil {
			return fmt.Errorf("issuing tickets: %w", err)
		}
	}

	decide.ProcessedAt = &processedAt.Time
	n, err := q.OrderDecideMany(ctx, decide)
	if err != nil {
		return fmt.Errorf("recording decisions: %w", err)
	}
	if int(n) != len(decide.Ids) {
		return fmt.Errorf("recording decisions: %d of %d orders were no longer pending", len(decide.Ids)-int(n), len(decide.Ids))
	}

	types, payloads, err := outcomePayloads(decided)
	if err != nil {
		return err
	}
	if _, err := q.OutboxInsertMany(ctx, db.OutboxInsertManyParams{
		AggregateIds: decide.Ids,
		EventTypes:   types,
		Payloads:     payloads,
	}); err != nil {
		return fmt.Errorf("writing outcomes to the outbox: %w", err)
	}
	return nil
}
