package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/crowdpass/crowdpass/db"
)

// Violation is one invariant of the contract and how often it does not hold.
type Violation struct {
	Invariant string
	Count     int64
}

// Audit checks the contract's invariants and returns every one, with the
// count of its violations (zero when it holds). Unpublished outbox rows
// count too: the contract wants every outbox row published eventually.
func (s *Store) Audit(ctx context.Context) ([]Violation, error) {
	q := db.New(s.pool)
	checks := []struct {
		name string
		run  func(context.Context) (int64, error)
	}{
		{"0 <= remaining <= capacity", q.AuditRemainingOutOfRange},
		{"capacity - remaining = tickets of confirmed orders", q.AuditSoldNotConfirmed},
		{"capacity - remaining = ticket rows", q.AuditSoldNotTicketed},
		{"one ticket per unit of each confirmed order", q.AuditOrderTicketsMismatch},
		{"no seat twice", q.AuditSeatTwice},
		{"seats within capacity", q.AuditSeatOutOfRange},
		{"one order per (customer, key)", q.AuditKeyTwice},
		{"every decided order has exactly one outbox row", q.AuditDecidedWithoutOneOutcome},
		{"no customer over max_per_customer", q.AuditOverLimit},
		{"every outbox row published", q.AuditUnpublished},
	}
	out := make([]Violation, 0, len(checks))
	for _, c := range checks {
		n, err := c.run(ctx)
		if err != nil {
			return nil, fmt.Errorf("checking %q: %w", c.name, translate(err))
		}
		out = append(out, Violation{Invariant: c.name, Count: n})
	}
	return out, nil
}

// Sales is how an event's sale went, from PostgreSQL.
type Sales struct {
	Capacity, Sold, Confirmed, Rejected, Orders int64
	LastSoldAt, LastDecidedAt                   time.Time
}

// EventSales sums an event's sale.
func (s *Store) EventSales(ctx context.Context, event uuid.UUID) (Sales, error) {
	r, err := db.New(s.pool).AuditEventSales(ctx, event)
	if err != nil {
		return Sales{}, translate(err)
	}
	return Sales{r.Capacity, r.Sold, r.Confirmed, r.Rejected, r.Orders, r.LastSoldAt, r.LastDecidedAt}, nil
}
