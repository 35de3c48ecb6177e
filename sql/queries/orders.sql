-- OrderInsertMany records decided orders and returns the ids it inserted;
-- an order that exists already (a redelivery) is left out of the answer.
-- name: OrderInsertMany :many
INSERT INTO orders (id, customer_id, idempotency_key, event_id, category_id, quantity, status, reason, created_at, processed_at)
SELECT
    unnest(@ids::uuid[]),
    unnest(@customer_ids::text[]),
    unnest(@idempotency_keys::text[]),
    unnest(@event_ids::uuid[]),
    unnest(@category_ids::uuid[]),
    unnest(@quantities::integer[]),
    unnest(@statuses::text[]),
    NULLIF(unnest(@reasons::text[]), ''),
    unnest(@created_ats::timestamptz[]),
    @processed_at::timestamptz
ON CONFLICT DO NOTHING
RETURNING id;

-- OrderRedecideMany corrects the status of orders decided optimistically in
-- the same transaction, when their category turned out not to cover them.
-- name: OrderRedecideMany :execrows
UPDATE orders o
SET status = d.status, reason = NULLIF(d.reason, '')
FROM (
    SELECT unnest(@ids::uuid[]) AS id, unnest(@statuses::text[]) AS status, unnest(@reasons::text[]) AS reason
) d
WHERE o.id = d.id;

-- OrderLockCustomers takes a transaction-scoped advisory lock per (event,
-- customer) key, in the order given; callers pass them sorted so that two
-- workers never deadlock. Whoever decides an order of a customer holds it.
-- name: OrderLockCustomers :exec
SELECT pg_advisory_xact_lock(k) FROM unnest(@keys::bigint[]) AS k;

-- OrderConfirmedTickets sums each customer's confirmed tickets for an event.
-- The correlated subquery keeps it an index lookup per customer whatever the
-- planner believes about the table's size.
-- name: OrderConfirmedTickets :many
SELECT c.event_id::uuid AS event_id, c.customer_id::text AS customer_id,
    (SELECT coalesce(sum(o.quantity), 0) FROM orders o
     WHERE o.event_id = c.event_id AND o.customer_id = c.customer_id AND o.status = 'confirmed')::integer AS tickets
FROM (SELECT unnest(@event_ids::uuid[]) AS event_id, unnest(@customer_ids::text[]) AS customer_id) c;

-- name: OrderGet :one
SELECT * FROM orders WHERE id = @id;
