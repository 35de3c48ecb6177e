-- name: TicketCategoryInsert :one
INSERT INTO ticket_categories (id, event_id, position, name, capacity, remaining, price_cents)
VALUES (@id, @event_id, @position, @name, @capacity, @capacity, @price_cents)
RETURNING *;

-- name: TicketCategoryListByEvent :many
SELECT * FROM ticket_categories WHERE event_id = @event_id ORDER BY position;

-- name: TicketCategoryList :many
SELECT * FROM ticket_categories ORDER BY event_id, position;

-- TicketCategoryRulesMany tells the worker, without taking any lock, which
-- categories exist, which event they belong to and that event's limit.
-- name: TicketCategoryRulesMany :many
SELECT c.id, c.event_id, e.max_per_customer
FROM ticket_categories c
JOIN events e ON e.id = c.event_id
WHERE c.id = ANY(@ids::uuid[]);

-- TicketCategoryLockMany takes the hot rows' locks in id order, so two
-- workers deciding overlapping categories can never deadlock on them. It is
-- NO KEY UPDATE, not UPDATE: the orders and tickets inserted in the same
-- transactions hold KEY SHARE locks on these rows through their foreign
-- keys, and FOR UPDATE would wait on those, deadlocking two workers.
-- name: TicketCategoryLockMany :many
SELECT id, capacity, remaining
FROM ticket_categories
WHERE id = ANY(@ids::uuid[])
ORDER BY id
FOR NO KEY UPDATE;

-- TicketCategoryUnsold reads, in one snapshot, a category's remaining less
-- the tickets of the given orders that no worker has decided yet (not in
-- orders): what an API's gate that lost the category's stock has left to
-- sell, the given orders being those it queued. Each id is looked up in
-- orders' primary key (a scalar subquery, which the planner keeps as one
-- probe per id instead of hashing the whole table).
-- name: TicketCategoryUnsold :one
SELECT (c.remaining - COALESCE((
    SELECT sum(q.quantity)
    FROM (SELECT unnest(@order_ids::uuid[]) AS order_id, unnest(@quantities::int[]) AS quantity) AS q
    WHERE (SELECT true FROM orders o WHERE o.id = q.order_id) IS NULL
), 0))::int AS unsold
FROM ticket_categories c
WHERE c.id = @category_id;
