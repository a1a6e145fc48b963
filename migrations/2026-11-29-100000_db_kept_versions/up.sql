-- The database keeps every product's version and writes every change's
-- event, whoever makes the change: write-api, an operator in psql, a batch
-- job, a migration. So no writer can forget to version a change or to
-- invalidate the caches.

-- The outbox row now holds the event's fields; the relay builds the message
-- from them (one serializer, in Rust) and adds the WAL position it reads when
-- it publishes. `payload` stays for rows written before this migration.
ALTER TABLE outbox
    ALTER COLUMN payload DROP NOT NULL,
    ALTER COLUMN event_id SET DEFAULT gen_random_uuid(),
    ADD COLUMN product_id  BIGINT,
    ADD COLUMN version     BIGINT,
    ADD COLUMN occurred_at TIMESTAMPTZ,
    -- The category before and after (one entry when unchanged).
    ADD COLUMN categories  TEXT[],
    -- Featured before or after: the featured list is concerned.
    ADD COLUMN featured    BOOLEAN,
    -- The row after the change; NULL for a delete.
    ADD COLUMN product     JSONB,
    ADD CONSTRAINT outbox_has_an_event CHECK (
        payload IS NOT NULL
        OR (product_id IS NOT NULL AND version IS NOT NULL
            AND occurred_at IS NOT NULL AND categories IS NOT NULL
            AND featured IS NOT NULL)
    );

-- BEFORE: the version. An insert starts at 1. An update that changes a
-- column of the product raises it by exactly one and stamps updated_at; one
-- that changes nothing is skipped altogether (no new row version, no event).
-- `version` and `updated_at` themselves are the database's: a value a
-- client sets is overwritten.
CREATE FUNCTION catalog_product_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.version := 1;
        RETURN NEW;
    END IF;
    IF (NEW.id, NEW.sku, NEW.name, NEW.description, NEW.category, NEW.price_cents,
        NEW.currency, NEW.featured, NEW.attributes, NEW.created_at)
       IS NOT DISTINCT FROM
       (OLD.id, OLD.sku, OLD.name, OLD.description, OLD.category, OLD.price_cents,
        OLD.currency, OLD.featured, OLD.attributes, OLD.created_at) THEN
        RETURN NULL;
    END IF;
    NEW.version := OLD.version + 1;
    -- clock_timestamp(), not now(): a transaction that waited for the row
    -- lock must not stamp its change earlier than the one it waited for.
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END
$$;

CREATE TRIGGER products_version
    BEFORE INSERT OR UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION catalog_product_version();

-- AFTER: the event, in the same transaction as the change. The writer may
-- name itself for the logs: SET LOCAL catalog.correlation_id = '...'.
CREATE FUNCTION catalog_product_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    correlation TEXT := nullif(current_setting('catalog.correlation_id', true), '');
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- A delete fences at the last version + 1.
        INSERT INTO outbox (routing_key, product_id, version, occurred_at,
                            categories, featured, product, correlation_id)
        VALUES ('product.deleted', OLD.id, OLD.version + 1, clock_timestamp(),
                ARRAY[OLD.category], OLD.featured, NULL, correlation);
        RETURN OLD;
    END IF;
    INSERT INTO outbox (routing_key, product_id, version, occurred_at,
                        categories, featured, product, correlation_id)
    VALUES (
        CASE TG_OP WHEN 'INSERT' THEN 'product.created' ELSE 'product.updated' END,
        NEW.id, NEW.version, NEW.updated_at,
        CASE WHEN TG_OP = 'UPDATE' AND OLD.category <> NEW.category
             THEN ARRAY[OLD.category, NEW.category]
             ELSE ARRAY[NEW.category] END,
        NEW.featured OR (TG_OP = 'UPDATE' AND OLD.featured),
        to_jsonb(NEW) - 'search',
        correlation);
    RETURN NEW;
END
$$;

CREATE TRIGGER products_event
    AFTER INSERT OR UPDATE OR DELETE ON products
    FOR EACH ROW EXECUTE FUNCTION catalog_product_event();

-- Wakes the relays listening for new outbox rows (once per transaction:
-- Postgres folds identical notifications), so a change made anywhere goes
-- out at once instead of at the next poll.
CREATE FUNCTION catalog_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('catalog_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER products_outbox_notify
    AFTER INSERT OR UPDATE OR DELETE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_outbox_notify();
