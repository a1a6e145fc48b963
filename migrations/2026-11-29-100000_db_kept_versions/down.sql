DROP TRIGGER products_outbox_notify ON products;
DROP FUNCTION catalog_outbox_notify();
DROP TRIGGER products_event ON products;
DROP FUNCTION catalog_product_event();
DROP TRIGGER products_version ON products;
DROP FUNCTION catalog_product_version();
DELETE FROM outbox WHERE payload IS NULL;
ALTER TABLE outbox
    DROP CONSTRAINT outbox_has_an_event,
    DROP COLUMN product,
    DROP COLUMN featured,
    DROP COLUMN categories,
    DROP COLUMN occurred_at,
    DROP COLUMN version,
    DROP COLUMN product_id,
    ALTER COLUMN event_id DROP DEFAULT,
    ALTER COLUMN payload SET NOT NULL;
