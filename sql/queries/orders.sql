-- OrderClaimMany records orders as pending and returns the ids it inserted.
-- An order that already exists (a redelivery, a duplicate, or another worker
-- deciding it right now: the unique index makes us wait for its commit) is
-- left out of the answer, so the caller decides each order exactly once.
-- name: OrderClaimMany :many
INSERT INTO orders (id, customer_id, idempotency_key, event_id, category_id, quantity, status, created_at)
SELECT
    unnest(@ids::uuid[]),
    unnest(@customer_ids::text[]),
    unnest(@idempotency_keys::text[]),
    unnest(@event_ids::uuid[]),
    unnest(@category_ids::uuid[]),
    unnest(@quantities::integer[]),
    'pending',
    unnest(@created_ats::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING id;

-- name: OrderDecideMany :execrows
UPDATE orders o
SET status = d.status, reason = NULLIF(d.reason, ''), processed_at = @processed_at
FROM (
    SELECT unnest(@ids::uuid[]) AS id, unnest(@statuses::text[]) AS status, unnest(@reasons::text[]) AS reason
) d
WHERE o.id = d.id AND o.status = 'pending';

-- name: OrderGet :one
SELECT * FROM orders WHERE id = @id;
