-- Every new event is announced on the channel events_created (its id as the
-- payload) when its transaction commits, categories and all: API processes
-- listen, so that an event created anywhere (another process, `crowdpass
-- event create`, a DBA) is in their catalogs within a round trip, rather
-- than at their next refresh or unknown-id lookup, which are bounded in rate.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION events_notify_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('events_created', NEW.id::text);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER events_created AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_notify_created();

-- +goose Down
DROP TRIGGER events_created ON events;
DROP FUNCTION events_notify_created();
