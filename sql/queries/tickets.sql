-- name: TicketListByOrder :many
SELECT * FROM tickets WHERE order_id = @order_id ORDER BY seat;
