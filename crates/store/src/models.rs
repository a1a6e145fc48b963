//! Row types and their conversion into domain types.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use domain::{Availability, Product, ProductId, Version};
use serde_json::Value;

use crate::{
    StoreError,
    schema::{products, stock},
};

/// One `products` row, in schema order.
#[derive(Debug, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
pub(crate) struct ProductRow {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price_cents: i64,
    pub currency: String,
    pub featured: bool,
    pub attributes: Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<ProductRow> for Product {
    type Error = StoreError;

    fn try_from(row: ProductRow) -> Result<Self, StoreError> {
        let id = ProductId::new(row.id)
            .map_err(|_| StoreError::bug(format!("row with id {}", row.id)))?;
        let attributes = match row.attributes {
            Value::Object(map) => map,
            _ => return Err(StoreError::bug(format!("product {id}: attributes"))),
        };
        Ok(Product {
            id,
            sku: row.sku,
            name: row.name,
            description: row.description,
            category: row.category,
            price_cents: row.price_cents,
            currency: row.currency,
            featured: row.featured,
            attributes,
            version: Version(row.version),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub(crate) fn into_products(rows: Vec<ProductRow>) -> Result<Vec<Product>, StoreError> {
    rows.into_iter().map(Product::try_from).collect()
}

/// One `stock` row.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = stock, check_for_backend(diesel::pg::Pg))]
pub(crate) struct StockRow {
    pub product_id: i64,
    pub quantity: i64,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<StockRow> for Availability {
    type Error = StoreError;

    fn try_from(row: StockRow) -> Result<Self, StoreError> {
        Ok(Availability {
            product_id: ProductId::new(row.product_id)
                .map_err(|_| StoreError::bug(format!("stock row {}", row.product_id)))?,
            stock: row.quantity,
            updated_at: row.updated_at,
        })
    }
}
