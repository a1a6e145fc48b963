//! The product as stored and served, and its live availability.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::{ProductId, Version};

/// A product as committed in Postgres. This is the exact JSON every read
/// answers with and every event carries, so the cache can hold the serialized
/// bytes and serve them as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    pub id: ProductId,
    #[schema(example = "LAPTOP-42")]
    pub sku: String,
    #[schema(example = "Ultrabook 14")]
    pub name: String,
    pub description: String,
    #[schema(example = "laptops")]
    pub category: String,
    #[schema(example = 99900)]
    pub price_cents: i64,
    #[schema(example = "USD")]
    pub currency: String,
    pub featured: bool,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    pub version: Version,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Stock on hand: kept apart from the product because it changes often and is
/// never cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Availability {
    pub product_id: ProductId,
    pub stock: i64,
    pub updated_at: DateTime<Utc>,
}
