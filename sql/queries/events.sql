-- name: EventInsert :one
INSERT INTO events (id, name, opens_at, closes_at, max_per_customer)
VALUES (@id, @name, @opens_at, sqlc.narg('closes_at'), @max_per_customer)
RETURNING *;

-- name: EventGet :one
SELECT * FROM events WHERE id = @id;

-- name: EventList :many
SELECT * FROM events ORDER BY created_at, id;

-- name: EventGetByName :one
SELECT * FROM events WHERE name = @name ORDER BY created_at, id LIMIT 1;
