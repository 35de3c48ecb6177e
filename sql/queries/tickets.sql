-- name: TicketInsertMany :execrows
INSERT INTO tickets (id, order_id, category_id, seat)
SELECT unnest(@ids::uuid[]), unnest(@order_ids::uuid[]), unnest(@category_ids::uuid[]), unnest(@seats::integer[]);

-- name: TicketListByOrder :many
SELECT * FROM tickets WHERE order_id = @order_id ORDER BY seat;
