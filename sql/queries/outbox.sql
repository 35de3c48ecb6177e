-- OutboxClaim locks a batch of unpublished rows from min_id on, oldest
-- first, skipping rows another relay holds: two relays never publish one row
-- at the same time. Ids commit out of order, so no "last id seen" cursor
-- could be trusted; min_id is the lowest id a commit just announced (or 0).
-- It spares the scan the published rows below it, which linger in the
-- partial index as dead entries until a vacuum: thousands during one sale.
-- name: OutboxClaim :many
SELECT id, aggregate_id, event_type, payload
FROM outbox
WHERE published_at IS NULL AND id >= @min_id::bigint
ORDER BY id
LIMIT @max_rows
FOR UPDATE SKIP LOCKED;

-- OutboxAsyncCommit lets the claiming transaction commit without waiting
-- for its WAL to reach the disk. It only marks rows the broker confirmed: a
-- mark lost in a database crash means those outcomes are published again,
-- which at-least-once delivery allows, and the deciding transactions' own
-- flushes no longer queue behind the relays'.
-- name: OutboxAsyncCommit :exec
SELECT set_config('synchronous_commit', 'off', true);

-- name: OutboxMarkPublished :execrows
UPDATE outbox SET published_at = now() WHERE id = ANY(@ids::bigint[]);

-- name: OutboxDeletePublished :execrows
DELETE FROM outbox
WHERE id IN (
    SELECT o.id FROM outbox o WHERE o.published_at < @published_before::timestamptz ORDER BY o.id LIMIT @max_rows
);

-- name: OutboxBacklog :one
SELECT count(*)::bigint AS rows, coalesce(min(created_at), now())::timestamptz AS oldest
FROM outbox
WHERE published_at IS NULL;

-- name: OutboxListen :exec
LISTEN crowdpass_outbox;

-- OutboxAfter reads outcome rows after an id, published or not, oldest
-- first: a notifier that was cut from the broker reads what it may have
-- missed.
-- name: OutboxAfter :many
SELECT id, aggregate_id, event_type, payload
FROM outbox
WHERE id > @after_id::bigint
ORDER BY id
LIMIT @max_rows;

-- name: OutboxLastID :one
SELECT coalesce(max(id), 0)::bigint AS last_id FROM outbox;

-- OutboxOrdersAfter lists the orders announced by outbox rows after
-- after_id, oldest first: the API's filter of orders that exist follows
-- the outbox's tail with it (every decided order has its row).
-- name: OutboxOrdersAfter :many
SELECT id, aggregate_id FROM outbox WHERE id > @after_id ORDER BY id LIMIT @max_rows;
