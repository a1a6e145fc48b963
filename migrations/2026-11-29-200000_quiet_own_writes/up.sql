-- A writer that wakes its own relay after committing (write-api marks its
-- transactions with SET LOCAL catalog.relay_woken = 'on') needs no
-- notification: its relay is already looking, and a notification would only
-- send every listening relay on a pass that finds nothing. Every other
-- writer (psql, a batch job, a migration) still wakes the relays at once.
-- If a write-api instance dies between its commit and its relay's pass,
-- the other instances' relays find the rows at their next poll.
CREATE OR REPLACE FUNCTION catalog_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('catalog.relay_woken', true), '') <> 'on' THEN
        PERFORM pg_notify('catalog_outbox', '');
    END IF;
    RETURN NULL;
END
$$;
