-- +goose Up
CREATE TABLE orders (
    id              uuid        PRIMARY KEY,
    customer_id     text        NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 255),
    idempotency_key text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    event_id        uuid        NOT NULL REFERENCES events (id),
    category_id     uuid        NOT NULL REFERENCES ticket_categories (id),
    quantity        integer     NOT NULL CHECK (quantity >= 1),
    status          text        NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected')),
    reason          text        CHECK (reason IN ('sold_out', 'limit_exceeded')),
    created_at      timestamptz NOT NULL,
    processed_at    timestamptz,
    CONSTRAINT orders_customer_key UNIQUE (customer_id, idempotency_key),
    CONSTRAINT orders_reason CHECK ((status = 'rejected') = (reason IS NOT NULL)),
    CONSTRAINT orders_processed CHECK ((status = 'pending') = (processed_at IS NULL))
);

-- max_per_customer is enforced from the orders themselves: the worker takes a
-- transaction-scoped advisory lock per (event, customer) and sums that
-- customer's confirmed orders through this index. The lock is held by whoever
-- decides an order of the customer, so the sum cannot change under it, and
-- it costs no row writes on the hot path.
CREATE INDEX orders_event_customer ON orders (event_id, customer_id) INCLUDE (quantity) WHERE status = 'confirmed';

CREATE TABLE tickets (
    id          uuid    PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id    uuid    NOT NULL REFERENCES orders (id),
    category_id uuid    NOT NULL REFERENCES ticket_categories (id),
    seat        integer NOT NULL CHECK (seat >= 1),
    CONSTRAINT tickets_category_seat UNIQUE (category_id, seat)
);

CREATE INDEX tickets_order ON tickets (order_id);

-- +goose Down
DROP TABLE tickets;
DROP TABLE orders;
