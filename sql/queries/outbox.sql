-- name: OutboxInsertMany :execrows
INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
SELECT 'order', unnest(@aggregate_ids::uuid[]), unnest(@event_types::text[]), unnest(@payloads::jsonb[]);

-- name: OutboxListByAggregate :many
SELECT * FROM outbox WHERE aggregate_type = 'order' AND aggregate_id = @aggregate_id ORDER BY id;
