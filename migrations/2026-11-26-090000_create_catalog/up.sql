-- Products: the source of truth every cache is fenced against.
CREATE TABLE products (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku          TEXT        NOT NULL UNIQUE CHECK (sku ~ '^[A-Za-z0-9._-]{1,64}$'),
    name         TEXT        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description  TEXT        NOT NULL DEFAULT '' CHECK (char_length(description) <= 5000),
    category     TEXT        NOT NULL CHECK (category ~ '^[a-z0-9-]{1,64}$'),
    price_cents  BIGINT      NOT NULL CHECK (price_cents BETWEEN 0 AND 1000000000000),
    currency     TEXT        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    featured     BOOLEAN     NOT NULL DEFAULT false,
    attributes   JSONB       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    -- Raised by exactly 1 in the same transaction as every change; the cache's
    -- compare-and-set and every fence compare this number.
    version      BIGINT      NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Full-text search document; name weighs most, then category, then
    -- description. Kept by Postgres itself, so no write can forget it.
    search       TSVECTOR    GENERATED ALWAYS AS (
                     setweight(to_tsvector('english', name), 'A') ||
                     setweight(to_tsvector('english', replace(category, '-', ' ')), 'B') ||
                     setweight(to_tsvector('english', description), 'C')
                 ) STORED
);

-- Keyset pages of one category, ordered by id.
CREATE INDEX products_category_id ON products (category, id);
-- Featured pages: a small partial index instead of a boolean scan.
CREATE INDEX products_featured_id ON products (id) WHERE featured;
CREATE INDEX products_search ON products USING GIN (search);

-- Stock changes often and is never cached, so it lives apart from the product
-- row: a stock update neither bumps the version nor invalidates anything.
CREATE TABLE stock (
    product_id  BIGINT      PRIMARY KEY REFERENCES products (id) ON DELETE CASCADE,
    quantity    BIGINT      NOT NULL CHECK (quantity >= 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Transactional outbox: each change commits its event here in the same
-- transaction; the relay publishes rows to RabbitMQ and deletes them once the
-- broker has confirmed them.
CREATE TABLE outbox (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     UUID        NOT NULL UNIQUE,
    routing_key  TEXT        NOT NULL,
    -- The exact message body, as published.
    payload      TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
