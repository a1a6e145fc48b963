DROP TRIGGER products_search ON products;
DROP FUNCTION catalog_product_search();
ALTER TABLE products DROP COLUMN search;
ALTER TABLE products ADD COLUMN search TSVECTOR GENERATED ALWAYS AS (
    setweight(to_tsvector('english', name), 'A') ||
    setweight(to_tsvector('english', replace(category, '-', ' ')), 'B') ||
    setweight(to_tsvector('english', description), 'C')
) STORED;
CREATE INDEX products_search ON products USING GIN (search);
