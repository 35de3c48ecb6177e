-- DecisionRecord writes a decided batch in one statement, so that the
-- worker's commit follows its decision by a single round trip: the orders
-- with their verdicts (an order that exists already, a redelivery, is left
-- out), the conditional decrement of each category's stock (a row whose
-- remaining cannot cover its take is left alone, so stock never goes below
-- zero whatever the caller computed), the tickets, the outcome rows in
-- outbox, and the relays' wake-up, sent when the transaction commits and
-- carrying the lowest outbox id written, from which a relay claims.
-- It returns the ids of the orders it inserted and how many categories
-- covered their take; the caller rolls back unless both are complete.
-- name: DecisionRecord :one
WITH inserted AS (
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
    RETURNING id
), taken AS (
    UPDATE ticket_categories c
    SET remaining = c.remaining - d.take
    FROM (SELECT unnest(@take_category_ids::uuid[]) AS id, unnest(@takes::integer[]) AS take) d
    WHERE c.id = d.id AND d.take > 0 AND c.remaining >= d.take
    RETURNING c.id
), issued AS (
    INSERT INTO tickets (id, order_id, category_id, seat)
    SELECT unnest(@ticket_ids::uuid[]), unnest(@ticket_order_ids::uuid[]), unnest(@ticket_category_ids::uuid[]), unnest(@seats::integer[])
    RETURNING id
), announced AS (
    INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
    SELECT 'order', unnest(@ids::uuid[]), unnest(@event_types::text[]), unnest(@payloads::jsonb[])
    RETURNING id
)
SELECT
    coalesce((SELECT array_agg(id) FROM inserted), '{}')::uuid[] AS inserted,
    (SELECT count(*) FROM taken)::integer AS categories_taken,
    (SELECT count(*) FROM issued)::integer AS tickets_issued,
    (SELECT count(*) FROM announced)::integer AS outcomes_written,
    pg_notify('crowdpass_outbox', coalesce((SELECT min(id) FROM announced)::text, ''))::text AS woke;

-- DecisionLocksCheck takes, without waiting, the locks a decision's writes
-- take, and fails at once (55P03) where something holds the tables against
-- writes (a LOCK TABLE, a migration, an index build). The worker runs it,
-- in a transaction of its own, before it takes orders from the queue.
-- name: DecisionLocksCheck :exec
LOCK TABLE ticket_categories, orders, tickets, outbox IN ROW EXCLUSIVE MODE NOWAIT;

-- DecisionEventsLockCheck does the same for events, whose rows a decision's
-- inserts lock for their foreign keys.
-- name: DecisionEventsLockCheck :exec
LOCK TABLE events IN ROW SHARE MODE NOWAIT;

-- DecisionLocksHeldIdle counts the other sessions holding locks a decision
-- waits for (on ticket_categories, orders or tickets; any mode but ACCESS
-- SHARE) while idle in a transaction for over a second: a worker stopped
-- mid-decision (SIGSTOP, a frozen VM), which every decision then waits for
-- until the server ends its session (idle_in_transaction_session_timeout).
-- Sessions of other roles are not seen without pg_read_all_stats.
-- name: DecisionLocksHeldIdle :one
SELECT count(*)::bigint AS sessions
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.granted
  AND l.mode <> 'AccessShareLock'
  AND l.relation IN ('ticket_categories'::regclass, 'orders'::regclass, 'tickets'::regclass)
  AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND a.state_change < now() - interval '1 second'
  AND a.pid <> pg_backend_pid();
