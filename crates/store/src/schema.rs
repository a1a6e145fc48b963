//! Diesel table definitions, matching `migrations/` (see `diesel.toml`).
//!
//! `products.search` (the generated tsvector) is deliberately absent: only the
//! full-text query in `products.rs` reads it, in SQL.

diesel::table! {
    products (id) {
        id -> Int8,
        sku -> Text,
        name -> Text,
        description -> Text,
        category -> Text,
        price_cents -> Int8,
        currency -> Text,
        featured -> Bool,
        attributes -> Jsonb,
        version -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    stock (product_id) {
        product_id -> Int8,
        quantity -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        event_id -> Uuid,
        routing_key -> Text,
        payload -> Nullable<Text>,
        created_at -> Timestamptz,
        correlation_id -> Nullable<Text>,
        product_id -> Nullable<Int8>,
        version -> Nullable<Int8>,
        occurred_at -> Nullable<Timestamptz>,
        categories -> Nullable<Array<Text>>,
        featured -> Nullable<Bool>,
        product -> Nullable<Jsonb>,
    }
}

diesel::joinable!(stock -> products (product_id));
diesel::allow_tables_to_appear_in_same_query!(products, stock, outbox);
