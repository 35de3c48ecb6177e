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

CREATE INDEX orders_event_customer ON orders (event_id, customer_id);

CREATE TABLE tickets (
    id          uuid    PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id    uuid    NOT NULL REFERENCES orders (id),
    category_id uuid    NOT NULL REFERENCES ticket_categories (id),
    seat        integer NOT NULL CHECK (seat >= 1),
    CONSTRAINT tickets_category_seat UNIQUE (category_id, seat)
);

CREATE INDEX tickets_order ON tickets (order_id);

-- customer_allowances is the bookkeeping behind max_per_customer: one row per
-- (event, customer) holding the tickets of that customer's confirmed orders.
-- The worker locks the row while it decides, so concurrent orders of one
-- customer, on any category of the event, are counted one after the other.
CREATE TABLE customer_allowances (
    event_id    uuid    NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    customer_id text    NOT NULL,
    confirmed   integer NOT NULL DEFAULT 0 CHECK (confirmed >= 0),
    PRIMARY KEY (event_id, customer_id)
);

-- +goose Down
DROP TABLE customer_allowances;
DROP TABLE tickets;
DROP TABLE orders;
