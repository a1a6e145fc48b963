-- The search document was a stored generated column, which Postgres
-- recomputes on every UPDATE of the row: each price change ran the English
-- stemmer over the name and up to 5,000 characters of description again.
-- It is now kept by a trigger that recomputes it only when a column it is
-- made of changed, and still by the database, so no writer (API, psql, a
-- batch job) can forget it or set it.
ALTER TABLE products ALTER COLUMN search DROP EXPRESSION;

CREATE FUNCTION catalog_product_search() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT'
       OR NEW.name IS DISTINCT FROM OLD.name
       OR NEW.category IS DISTINCT FROM OLD.category
       OR NEW.description IS DISTINCT FROM OLD.description THEN
        NEW.search :=
            setweight(to_tsvector('english', NEW.name), 'A') ||
            setweight(to_tsvector('english', replace(NEW.category, '-', ' ')), 'B') ||
            setweight(to_tsvector('english', NEW.description), 'C');
    ELSE
        NEW.search := OLD.search;
    END IF;
    RETURN NEW;
END
$$;

-- BEFORE triggers run in name order: this one, then products_version
-- (which skips an update that changes nothing, the search document aside).
CREATE TRIGGER products_search
    BEFORE INSERT OR UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION catalog_product_search();
