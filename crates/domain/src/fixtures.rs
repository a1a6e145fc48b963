//! Test fixtures: valid products, built in one place for every crate's
//! tests (compiled only for tests and with the `fixtures` feature).

use serde_json::json;

use crate::Product;

/// A valid product with the given id, version, category and featured flag.
#[allow(clippy::expect_used)]
pub fn product(id: i64, version: i64, category: &str, featured: bool) -> Product {
    serde_json::from_value(json!({
        "id": id, "sku": format!("SKU-{id}"), "name": "Thing", "description": "",
        "category": category, "price_cents": 100 * version, "currency": "USD",
        "featured": featured, "attributes": {}, "version": version,
        "created_at": "2026-11-26T09:00:00Z", "updated_at": "2026-11-26T09:00:00Z"
    }))
    .expect("the fixture is a valid product")
}
