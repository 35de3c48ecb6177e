-- The contract's invariants, each counting its violations; rush's audit and
-- the tests run them. They read across tables, so they live together here.

-- name: AuditRemainingOutOfRange :one
SELECT count(*) FROM ticket_categories WHERE remaining < 0 OR remaining > capacity;

-- Each is written as aggregates joined once, so that it stays a few hash
-- joins on a sale of millions of orders rather than a subquery per row.

-- name: AuditSoldNotConfirmed :one
SELECT count(*) FROM ticket_categories c
LEFT JOIN (SELECT category_id, sum(quantity) AS sold FROM orders WHERE status = 'confirmed' GROUP BY category_id) o
  ON o.category_id = c.id
WHERE c.capacity - c.remaining <> coalesce(o.sold, 0);

-- name: AuditSoldNotTicketed :one
SELECT count(*) FROM ticket_categories c
LEFT JOIN (SELECT category_id, count(*) AS issued FROM tickets GROUP BY category_id) t ON t.category_id = c.id
WHERE c.capacity - c.remaining <> coalesce(t.issued, 0);

-- name: AuditOrderTicketsMismatch :one
SELECT count(*) FROM orders o
LEFT JOIN (SELECT order_id, count(*) AS issued FROM tickets GROUP BY order_id) t ON t.order_id = o.id
WHERE coalesce(t.issued, 0) <> CASE WHEN o.status = 'confirmed' THEN o.quantity ELSE 0 END;

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
LEFT JOIN (SELECT aggregate_id, count(*) AS outcomes FROM outbox WHERE aggregate_type = 'order' GROUP BY aggregate_id) x
  ON x.aggregate_id = o.id
WHERE o.status <> 'pending' AND coalesce(x.outcomes, 0) <> 1;

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
