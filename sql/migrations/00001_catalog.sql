-- +goose Up
CREATE TABLE events (
    id               uuid        PRIMARY KEY,
    name             text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    opens_at         timestamptz NOT NULL,
    closes_at        timestamptz,
    max_per_customer integer     NOT NULL DEFAULT 4 CHECK (max_per_customer BETWEEN 1 AND 1000),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_window CHECK (closes_at IS NULL OR closes_at > opens_at)
);

CREATE TABLE ticket_categories (
    id          uuid    PRIMARY KEY,
    event_id    uuid    NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    name        text    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    capacity    integer NOT NULL CHECK (capacity >= 0),
    remaining   integer NOT NULL,
    price_cents bigint  NOT NULL DEFAULT 0 CHECK (price_cents >= 0),
    CONSTRAINT ticket_categories_remaining CHECK (0 <= remaining AND remaining <= capacity),
    UNIQUE (event_id, name),
    UNIQUE (event_id, position)
);

-- +goose Down
DROP TABLE ticket_categories;
DROP TABLE events;
