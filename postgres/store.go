package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/db"
)

// Store reads and writes the source of truth.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time

	rulesMu sync.RWMutex
	rules   map[uuid.UUID]categoryRule
}

// NewStore returns a store on pool; now is its clock (time.Now if nil).
func NewStore(pool *pgxpool.Pool, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{pool: pool, now: now, rules: map[uuid.UUID]categoryRule{}}
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// CreateEvent validates spec and creates the event with its categories.
func (s *Store) CreateEvent(ctx context.Context, spec crowdpass.EventSpec) (crowdpass.Event, error) {
	if err := spec.Validate(); err != nil {
		return crowdpass.Event{}, err
	}
	opens := crowdpass.NewTime(s.now())
	if spec.OpensAt != nil {
		opens = crowdpass.NewTime(spec.OpensAt.Time)
	}
	var closes *time.Time
	if spec.ClosesAt != nil {
		t := crowdpass.NewTime(spec.ClosesAt.Time).Time
		closes = &t
	}
	limit := crowdpass.DefaultMaxPerCustomer
	if spec.MaxPerCustomer != nil {
		limit = *spec.MaxPerCustomer
	}
	var event crowdpass.Event
	// The statements run within ctx's deadline, and one that passes rolls
	// the event back; the commit, once sent, is waited for apart from it
	// (at most commitTimeout), so that a caller whose time ran out never
	// reports as not created an event that was.
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return crowdpass.Event{}, translate(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		defer cancel()
		_ = tx.Rollback(ctx) // a no-op after the commit
	}()
	err = func() error {
		q := db.New(tx)
		row, err := q.EventInsert(ctx, db.EventInsertParams{
			ID:             uuid.Must(uuid.NewV7()),
			Name:           spec.Name,
			OpensAt:        opens.Time,
			ClosesAt:       closes,
			MaxPerCustomer: int32(limit),
		})
		if err != nil {
			return fmt.Errorf("inserting event: %w", err)
		}
		cats := make([]db.TicketCategory, 0, len(spec.Categories))
		for i, c := range spec.Categories {
			cat, err := q.TicketCategoryInsert(ctx, db.TicketCategoryInsertParams{
				ID:         uuid.Must(uuid.NewV7()),
				EventID:    row.ID,
				Position:   int32(i),
				Name:       c.Name,
				Capacity:   int32(c.Capacity),
				PriceCents: c.PriceCents,
			})
			if err != nil {
				return fmt.Errorf("inserting category %q: %w", c.Name, err)
			}
			cats = append(cats, cat)
		}
		event = eventFromRows(row, cats)
		return nil
	}()
	if err == nil {
		commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
		err = tx.Commit(commitCtx)
		cancel()
	}
	if err != nil {
		return crowdpass.Event{}, translate(err)
	}
	return event, nil
}

// commitTimeout bounds the wait for a commit already sent, or a rollback.
const commitTimeout = 30 * time.Second

// Event returns an event with its categories' current stock.
func (s *Store) Event(ctx context.Context, id uuid.UUID) (crowdpass.Event, error) {
	q := db.New(s.pool)
	row, err := q.EventGet(ctx, id)
	if err != nil {
		return crowdpass.Event{}, translate(err)
	}
	cats, err := q.TicketCategoryListByEvent(ctx, id)
	if err != nil {
		return crowdpass.Event{}, translate(err)
	}
	return eventFromRows(row, cats), nil
}

// ListenEventsCreated calls created with the id of each event committed from
// the moment it calls listening on (the events_created notifications of
// migration 00005), until ctx is done or its connection fails; it returns
// why. It holds a connection of its own, outside the pool, so that a
// listener never takes a worker's connection.
func (s *Store) ListenEventsCreated(ctx context.Context, listening func(), created func(uuid.UUID)) error {
	setupCtx, cancel := context.WithTimeout(ctx, listenSetupTimeout)
	defer cancel()
	cfg := s.pool.Config().ConnConfig.Copy()
	// The wait for a notification has no deadline: TCP keepalives tell a
	// connection that died without a word (a partition, a failover) within
	// about 20 s, where the default would take many minutes. A server
	// stopped but running (SIGSTOP) still answers them.
	cfg.DialFunc = (&net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 10 * time.Second, Interval: 3 * time.Second, Count: 3,
	}}).DialContext
	conn, err := pgx.ConnectConfig(setupCtx, cfg)
	if err != nil {
		return fmt.Errorf("connecting to listen for new events: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), listenSetupTimeout)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(setupCtx, "LISTEN events_created"); err != nil {
		return fmt.Errorf("listening for new events: %w", err)
	}
	listening()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if id, err := uuid.Parse(n.Payload); err == nil {
			created(id)
		}
	}
}

// listenSetupTimeout bounds connecting, LISTEN and closing for
// ListenEventsCreated.
const listenSetupTimeout = 5 * time.Second

// Unsold returns a category's remaining less the tickets of the given
// orders (ids and quantities, in the same order) that are not decided yet,
// both read in one snapshot.
func (s *Store) Unsold(ctx context.Context, category uuid.UUID, orders []uuid.UUID, quantities []int32) (int, error) {
	n, err := db.New(s.pool).TicketCategoryUnsold(ctx, db.TicketCategoryUnsoldParams{
		OrderIds: orders, Quantities: quantities, CategoryID: category,
	})
	if err != nil {
		return 0, translate(err)
	}
	return int(n), nil
}

// EventByName returns the oldest event with the given name.
func (s *Store) EventByName(ctx context.Context, name string) (crowdpass.Event, error) {
	row, err := db.New(s.pool).EventGetByName(ctx, name)
	if err != nil {
		return crowdpass.Event{}, translate(err)
	}
	return s.Event(ctx, row.ID)
}

// Events returns every event with its categories, as the API's catalog cache
// holds them.
func (s *Store) Events(ctx context.Context) ([]crowdpass.Event, error) {
	q := db.New(s.pool)
	rows, err := q.EventList(ctx)
	if err != nil {
		return nil, translate(err)
	}
	cats, err := q.TicketCategoryList(ctx)
	if err != nil {
		return nil, translate(err)
	}
	byEvent := make(map[uuid.UUID][]db.TicketCategory, len(rows))
	for _, c := range cats {
		byEvent[c.EventID] = append(byEvent[c.EventID], c)
	}
	events := make([]crowdpass.Event, 0, len(rows))
	for _, r := range rows {
		events = append(events, eventFromRows(r, byEvent[r.ID]))
	}
	return events, nil
}

// OrderIDs lists up to limit order ids above after, in id order.
func (s *Store) OrderIDs(ctx context.Context, after uuid.UUID, limit int) ([]uuid.UUID, error) {
	ids, err := db.New(s.pool).OrderIDsAfter(ctx, db.OrderIDsAfterParams{After: after, PageSize: int32(limit)})
	if err != nil {
		return nil, translate(err)
	}
	return ids, nil
}

// OrderCountEstimate is the planner's estimate of how many orders exist
// (0 before the table was ever analyzed).
func (s *Store) OrderCountEstimate(ctx context.Context) (int64, error) {
	n, err := db.New(s.pool).OrderCountEstimate(ctx)
	if err != nil {
		return 0, translate(err)
	}
	return n, nil
}

// Order returns an order with its tickets.
func (s *Store) Order(ctx context.Context, id uuid.UUID) (crowdpass.Order, error) {
	q := db.New(s.pool)
	row, err := q.OrderGet(ctx, id)
	if err != nil {
		return crowdpass.Order{}, translate(err)
	}
	tickets, err := q.TicketListByOrder(ctx, id)
	if err != nil {
		return crowdpass.Order{}, translate(err)
	}
	return orderFromRows(row, tickets), nil
}

func eventFromRows(e db.Event, cats []db.TicketCategory) crowdpass.Event {
	event := crowdpass.Event{
		ID:             e.ID,
		Name:           e.Name,
		OpensAt:        crowdpass.NewTime(e.OpensAt),
		MaxPerCustomer: int(e.MaxPerCustomer),
		Categories:     make([]crowdpass.Category, 0, len(cats)),
	}
	if e.ClosesAt != nil {
		t := crowdpass.NewTime(*e.ClosesAt)
		event.ClosesAt = &t
	}
	for _, c := range cats {
		event.Categories = append(event.Categories, crowdpass.Category{
			ID:         c.ID,
			Name:       c.Name,
			Capacity:   int(c.Capacity),
			Remaining:  int(c.Remaining),
			PriceCents: c.PriceCents,
		})
	}
	return event
}

func orderFromRows(o db.Order, tickets []db.Ticket) crowdpass.Order {
	order := crowdpass.Order{
		ID:         o.ID,
		Status:     crowdpass.OrderStatus(o.Status),
		EventID:    o.EventID,
		CategoryID: o.CategoryID,
		Quantity:   int(o.Quantity),
		Tickets:    make([]crowdpass.Ticket, 0, len(tickets)),
		AcceptedAt: crowdpass.NewTime(o.CreatedAt),
		CustomerID: o.CustomerID,
	}
	if o.Reason != nil {
		order.Reason = crowdpass.Reason(*o.Reason)
	}
	if o.ProcessedAt != nil {
		t := crowdpass.NewTime(*o.ProcessedAt)
		order.ProcessedAt = &t
	}
	for _, t := range tickets {
		order.Tickets = append(order.Tickets, crowdpass.Ticket{ID: t.ID, Seat: int(t.Seat)})
	}
	return order
}

// outcomePayloads encodes each decided order as its outbox payload.
func outcomePayloads(orders []crowdpass.Order) (types []string, payloads [][]byte, err error) {
	types = make([]string, len(orders))
	payloads = make([][]byte, len(orders))
	for i, o := range orders {
		out := crowdpass.NewOutcome(o)
		types[i] = out.Type
		if payloads[i], err = json.Marshal(out); err != nil {
			return nil, nil, fmt.Errorf("encoding outcome of order %s: %w", o.ID, err)
		}
	}
	return types, payloads, nil
}
