-- +goose Up
CREATE TABLE outbox (
    id             bigserial   PRIMARY KEY,
    aggregate_type text        NOT NULL CHECK (aggregate_type IN ('order')),
    aggregate_id   uuid        NOT NULL,
    event_type     text        NOT NULL CHECK (event_type IN ('order.confirmed', 'order.rejected')),
    payload        jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz
);

-- The relay only ever looks for unpublished rows; published ones are the
-- audit trail and stay out of this index.
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- +goose Down
DROP TABLE outbox;
