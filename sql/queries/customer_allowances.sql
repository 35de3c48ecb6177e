-- CustomerAllowanceLockMany creates the missing rows and locks all of them,
-- returning what each customer already holds. The caller passes the pairs
-- sorted and without duplicates, so concurrent workers lock in one order.
-- name: CustomerAllowanceLockMany :many
INSERT INTO customer_allowances AS a (event_id, customer_id)
SELECT unnest(@event_ids::uuid[]), unnest(@customer_ids::text[])
ON CONFLICT (event_id, customer_id) DO UPDATE SET confirmed = a.confirmed
RETURNING a.event_id, a.customer_id, a.confirmed;

-- name: CustomerAllowanceAddMany :execrows
UPDATE customer_allowances a
SET confirmed = a.confirmed + d.tickets
FROM (
    SELECT unnest(@event_ids::uuid[]) AS event_id, unnest(@customer_ids::text[]) AS customer_id,
           unnest(@tickets::integer[]) AS tickets
) d
WHERE a.event_id = d.event_id AND a.customer_id = d.customer_id;
