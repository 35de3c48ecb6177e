package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/crowdpass/crowdpass"
	"github.com/crowdpass/crowdpass/db"
)

// PublishOutbox claims up to max unpublished rows with ids from from on
// (0: all), oldest first, hands them
// to publish and marks published the ids publish returns, all in one
// transaction: the rows stay locked while they are published, so two relays
// never publish one row at once, and a relay that dies before the commit
// leaves them unpublished, to be published again. It returns the rows claimed.
func (s *Store) PublishOutbox(ctx context.Context, from int64, max int, publish func(context.Context, []crowdpass.OutboxMessage) []int64) (int, error) {
	claimed := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := db.New(tx)
		rows, err := q.OutboxClaim(ctx, db.OutboxClaimParams{MinID: from, MaxRows: int32(max)})
		if err != nil {
			return fmt.Errorf("claiming outbox rows: %w", err)
		}
		claimed = len(rows)
		if claimed == 0 {
			return nil
		}
		msgs := make([]crowdpass.OutboxMessage, len(rows))
		for i, r := range rows {
			msgs[i] = crowdpass.OutboxMessage{ID: r.ID, AggregateID: r.AggregateID, EventType: r.EventType, Payload: r.Payload}
		}
		published := publish(ctx, msgs)
		if len(published) == 0 {
			return nil
		}
		if err := q.OutboxAsyncCommit(ctx); err != nil {
			return fmt.Errorf("marking outbox rows published: %w", err)
		}
		if _, err := q.OutboxMarkPublished(ctx, published); err != nil {
			return fmt.Errorf("marking outbox rows published: %w", err)
		}
		return nil
	})
	return claimed, translate(err)
}

// DeletePublishedOutbox deletes up to max rows published before the given time.
func (s *Store) DeletePublishedOutbox(ctx context.Context, before time.Time, max int) (int64, error) {
	n, err := db.New(s.pool).OutboxDeletePublished(ctx, db.OutboxDeletePublishedParams{PublishedBefore: before, MaxRows: int32(max)})
	return n, translate(err)
}

// OutboxBacklog returns the unpublished rows and the creation time of the oldest.
func (s *Store) OutboxBacklog(ctx context.Context) (rows int64, oldest time.Time, err error) {
	b, err := db.New(s.pool).OutboxBacklog(ctx)
	return b.Rows, b.Oldest, translate(err)
}

// ListenOutbox calls wake for every outbox notification, with the lowest
// outbox id the notifying commit wrote (0 if unknown), until ctx is done or
// the connection fails. It holds one connection of its own.
func (s *Store) ListenOutbox(ctx context.Context, wake func(from int64)) error {
	pooled, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquiring a connection to listen on: %w", err)
	}
	// The connection leaves the pool: it carries the LISTEN.
	conn := pooled.Hijack()
	defer conn.Close(context.Background())
	if err := db.New(conn).OutboxListen(ctx); err != nil {
		return fmt.Errorf("listening for outbox rows: %w", err)
	}
	wake(0) // rows may have come while we were not listening
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("waiting for outbox notifications: %w", err)
		}
		from, err := strconv.ParseInt(n.Payload, 10, 64)
		if err != nil {
			from = 0 // an older or a foreign notification: look at every row
		}
		wake(from)
	}
}

// OutboxAfter returns up to max outbox rows with ids after after, published
// or not, oldest first.
func (s *Store) OutboxAfter(ctx context.Context, after int64, max int) ([]crowdpass.OutboxMessage, error) {
	rows, err := db.New(s.pool).OutboxAfter(ctx, db.OutboxAfterParams{AfterID: after, MaxRows: int32(max)})
	if err != nil {
		return nil, fmt.Errorf("reading the outbox: %w", err)
	}
	msgs := make([]crowdpass.OutboxMessage, len(rows))
	for i, r := range rows {
		msgs[i] = crowdpass.OutboxMessage{ID: r.ID, AggregateID: r.AggregateID, EventType: r.EventType, Payload: r.Payload}
	}
	return msgs, nil
}

// OutboxOrdersAfter returns the ids of up to max outbox rows after after,
// oldest first, with the orders they announce.
func (s *Store) OutboxOrdersAfter(ctx context.Context, after int64, max int) (ids []int64, orders []uuid.UUID, err error) {
	rows, err := db.New(s.pool).OutboxOrdersAfter(ctx, db.OutboxOrdersAfterParams{AfterID: after, MaxRows: int32(max)})
	if err != nil {
		return nil, nil, fmt.Errorf("reading the outbox: %w", err)
	}
	for _, r := range rows {
		ids, orders = append(ids, r.ID), append(orders, r.AggregateID)
	}
	return ids, orders, nil
}

// OutboxLastID returns the highest outbox id (0 for an empty outbox).
func (s *Store) OutboxLastID(ctx context.Context) (int64, error) {
	id, err := db.New(s.pool).OutboxLastID(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading the outbox's last id: %w", err)
	}
	return id, nil
}
