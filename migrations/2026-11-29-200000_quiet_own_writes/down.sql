CREATE OR REPLACE FUNCTION catalog_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('catalog_outbox', '');
    RETURN NULL;
END
$$;
