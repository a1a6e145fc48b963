//! Read queries: single products, keyset pages, featured, full-text search,
//! versions (for the cache auditor) and live stock.

use diesel::{
    prelude::*,
    sql_types::{BigInt, Text},
};
use diesel_async::RunQueryDsl;
use domain::{Availability, Product, ProductId, Version};

use crate::{
    Db, StoreError,
    models::{ProductRow, StockRow, into_products},
    schema::{products, stock},
};

/// One keyset page of products ordered by id.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Product>,
    /// The id to pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<ProductId>,
}

/// Counts one query by name; `/metrics` exports it as
/// `catalog_db_queries_total{query=...}`.
pub(crate) fn count_query(query: &'static str) {
    metrics::counter!("catalog_db_queries_total", "query" => query).increment(1);
}

impl Db {
    /// The product with this id, if it exists.
    pub async fn product(&self, id: ProductId) -> Result<Option<Product>, StoreError> {
        self.bounded(async {
            count_query("product");
            let mut conn = self.conn().await?;
            let row = products::table
                .find(id.get())
                .select(ProductRow::as_select())
                .first(&mut conn)
                .await
                .optional()?;
            row.map(Product::try_from).transpose()
        })
        .await
    }

    /// The products with these ids that exist, in no particular order.
    pub async fn products_by_ids(&self, ids: &[ProductId]) -> Result<Vec<Product>, StoreError> {
        self.bounded(async {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            count_query("products_by_ids");
            let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
            let mut conn = self.conn().await?;
            let rows = products::table
                .filter(products::id.eq_any(ids))
                .select(ProductRow::as_select())
                .load(&mut conn)
                .await?;
            into_products(rows)
        })
        .await
    }

    /// Up to `limit` products after `after` (exclusive), optionally of one
    /// category, ordered by id.
    pub async fn list(
        &self,
        category: Option<&str>,
        after: Option<ProductId>,
        limit: i64,
    ) -> Result<Page, StoreError> {
        self.bounded(async {
            count_query("list");
            // Two static query shapes rather than one boxed query: diesel
            // caches a static shape's prepared statement per connection, so
            // a page costs one round trip instead of a prepare and then an
            // execute. `after` absent is `id > 0` (ids are positive).
            let after = after.map_or(0, ProductId::get);
            let page = products::table
                .select(ProductRow::as_select())
                .filter(products::id.gt(after))
                .order(products::id.asc())
                // One extra row tells whether another page follows.
                .limit(limit + 1);
            let mut conn = self.conn().await?;
            let rows = match category {
                Some(category) => {
                    page.filter(products::category.eq(category))
                        .load(&mut conn)
                        .await?
                }
                None => page.load(&mut conn).await?,
            };
            let mut items = into_products(rows)?;
            let more = items.len() as i64 > limit;
            items.truncate(usize::try_from(limit).unwrap_or(0));
            let next_after = if more {
                items.last().map(|p| p.id)
            } else {
                None
            };
            Ok(Page { items, next_after })
        })
        .await
    }

    /// Up to `limit` featured products, ordered by id.
    pub async fn featured(&self, limit: i64) -> Result<Vec<Product>, StoreError> {
        self.bounded(async {
            count_query("featured");
            let mut conn = self.conn().await?;
            let rows = products::table
                .filter(products::featured.eq(true))
                .order(products::id.asc())
                .limit(limit)
                .select(ProductRow::as_select())
                .load(&mut conn)
                .await?;
            into_products(rows)
        })
        .await
    }

    /// Full-text matches of `q` over name, category and description, best
    /// first. `q` takes web-search syntax (`"exact phrase"`, `-exclude`, `or`)
    /// and never fails to parse.
    pub async fn search(&self, q: &str, limit: i64) -> Result<Vec<Product>, StoreError> {
        self.bounded(async {
            count_query("search");
            let mut conn = self.conn().await?;
            let rows: Vec<ProductRow> = diesel::sql_query(
                "SELECT id, sku, name, description, category, price_cents, currency, featured, \
                        attributes, version, created_at, updated_at \
                 FROM products, websearch_to_tsquery('english', $1) AS q \
                 WHERE search @@ q \
                 ORDER BY ts_rank(search, q) DESC, id \
                 LIMIT $2",
            )
            .bind::<Text, _>(q)
            .bind::<BigInt, _>(limit)
            .load(&mut conn)
            .await?;
            into_products(rows)
        })
        .await
    }

    /// The current version of each of these products that still exists.
    pub async fn versions(
        &self,
        ids: &[ProductId],
    ) -> Result<Vec<(ProductId, Version)>, StoreError> {
        self.bounded(async {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            count_query("versions");
            let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
            let mut conn = self.conn().await?;
            let rows: Vec<(i64, i64)> = products::table
                .filter(products::id.eq_any(ids))
                .select((products::id, products::version))
                .load(&mut conn)
                .await?;
            rows.into_iter()
                .map(|(id, v)| {
                    ProductId::new(id)
                        .map(|id| (id, Version(v)))
                        .map_err(|_| StoreError::bug(format!("row with id {id}")))
                })
                .collect()
        })
        .await
    }

    /// Stock on hand, read live.
    pub async fn availability(&self, id: ProductId) -> Result<Option<Availability>, StoreError> {
        self.bounded(async {
            count_query("availability");
            let mut conn = self.conn().await?;
            let row = stock::table
                .find(id.get())
                .select(StockRow::as_select())
                .first(&mut conn)
                .await
                .optional()?;
            row.map(Availability::try_from).transpose()
        })
        .await
    }
}
