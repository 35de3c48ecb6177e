-- The contract's invariants, each counting its violations; rush's audit and
-- the tests run them. They read across tables, so they live together here.

-- name: AuditRemainingOutOfRange :one
SELECT count(*) FROM ticket_categories WHERE remaining < 0 OR remaining > capacity;

-- name: AuditSoldNotConfirmed :one
SELECT count(*) FROM ticket_categories c
WHERE c.capacity - c.remaining <> (
    SELECT coalesce(sum(o.quantity), 0) FROM orders o WHERE o.category_id = c.id AND o.status = 'confirmed');

-- name: AuditSoldNotTicketed :one
SELECT count(*) FROM ticket_categories c
WHERE c.capacity - c.remaining <> (SELECT count(*) FROM tickets t WHERE t.category_id = c.id);

-- name: AuditOrderTicketsMismatch :one
SELECT count(*) FROM orders o
WHERE (SELECT count(*) FROM tickets t WHERE t.order_id = o.id)
      <> CASE WHEN o.status = 'confirmed' THEN o.quantity ELSE 0 END;

-- name: AuditSeatTwice :one
SELECT count(*) FROM (SELECT category_id, seat FROM tickets GROUP BY category_id, seat HAVING count(*) > 1) d;

-- name: AuditSeatOutOfRange :one
SELECT count(*) FROM tickets t JOIN ticket_categories c ON c.id = t.category_id
WHERE t.seat < 1 OR t.seat > c.capacity;

-- name: AuditKeyTwice :one
SELECT count(*) FROM (
    SELECT customer_id, idempotency_key FROM orders GROUP BY customer_id, idempotency_key HAVING count(*) > 1) d;

-- name: AuditDecidedWithoutOneOutcome :one
SELECT count(*) FROM orders o
WHERE o.status <> 'pending'
  AND (SELECT count(*) FROM outbox x WHERE x.aggregate_type = 'order' AND x.aggregate_id = o.id) <> 1;

-- name: AuditOverLimit :one
SELECT count(*) FROM (
    SELECT o.event_id, o.customer_id
    FROM orders o JOIN events e ON e.id = o.event_id
    WHERE o.status = 'confirmed'
    GROUP BY o.event_id, o.customer_id, e.max_per_customer
    HAVING sum(o.quantity) > e.max_per_customer) d;

-- name: AuditUnpublished :one
SELECT count(*) FROM outbox WHERE published_at IS NULL;

-- AuditEventSales sums an event's sale: tickets sold against capacity,
-- orders by outcome, and when the last ticket and the last outcome were decided.
-- name: AuditEventSales :one
SELECT
    (SELECT coalesce(sum(capacity), 0) FROM ticket_categories c WHERE c.event_id = @event_id)::bigint AS capacity,
    (SELECT coalesce(sum(capacity - remaining), 0) FROM ticket_categories c WHERE c.event_id = @event_id)::bigint AS sold,
    count(*) FILTER (WHERE o.status = 'confirmed')::bigint AS confirmed,
    count(*) FILTER (WHERE o.status = 'rejected')::bigint AS rejected,
    count(*)::bigint AS orders,
    coalesce(max(o.processed_at) FILTER (WHERE o.status = 'confirmed'), 'epoch')::timestamptz AS last_sold_at,
    coalesce(max(o.processed_at), 'epoch')::timestamptz AS last_decided_at
FROM orders o
WHERE o.event_id = @event_id;
