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

-- OrderIDsAfter lists order ids above after, in id order: one page of a
-- walk over every order (the API's filter of orders that exist).
-- name: OrderIDsAfter :many
SELECT id FROM orders WHERE id > @after ORDER BY id LIMIT @page_size;

-- OrderCountEstimate is the planner's estimate of the number of orders,
-- read without a scan, to size the API's filter of orders that exist.
-- name: OrderCountEstimate :one
SELECT greatest(reltuples, 0)::bigint AS orders FROM pg_catalog.pg_class WHERE oid = 'orders'::regclass;
