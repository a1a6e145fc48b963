//! Write transactions. Each change and its outbox event commit together, so
//! an event exists if and only if its change does; `version` rises by exactly
//! one per change, inside the same transaction.

use chrono::Utc;
use diesel::{dsl::sql, prelude::*, sql_types::Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use domain::{
    Availability, ChangeEvent, NewProduct, Product, ProductId, ProductPatch, Stock, Version,
};
use serde_json::Value;

use crate::{
    Db, OutboxMessage, StoreError,
    models::{ProductRow, StockRow},
    products::count_query,
    schema::{outbox, products, stock},
};

/// `clock_timestamp()` rather than `now()`: `now()` is the transaction's start,
/// and a transaction that waited for a row lock would stamp an update earlier
/// than the one it waited for.
fn clock() -> diesel::expression::SqlLiteral<Timestamptz> {
    sql::<Timestamptz>("clock_timestamp()")
}

/// A committed change and the outbox rows it wrote, which the caller hands
/// to the relay to publish right away.
#[derive(Debug, Clone)]
pub struct Written<T> {
    pub value: T,
    pub events: Vec<OutboxMessage>,
}

/// Writes events into the outbox, in the caller's transaction, and returns
/// the rows.
async fn enqueue(
    conn: &mut AsyncPgConnection,
    events: &[ChangeEvent],
) -> Result<Vec<OutboxMessage>, StoreError> {
    let rows = events
        .iter()
        .map(|e| {
            let payload =
                serde_json::to_string(e).map_err(|e| StoreError::Internal(e.to_string()))?;
            Ok((
                outbox::event_id.eq(e.event_id),
                outbox::routing_key.eq(e.kind.routing_key()),
                outbox::payload.eq(payload),
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // Chunks keep each statement under Postgres' 65535 bind parameters.
    let mut written = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(5000) {
        let batch: Vec<OutboxMessage> = diesel::insert_into(outbox::table)
            .values(chunk)
            .returning(OutboxMessage::as_returning())
            .get_results(conn)
            .await?;
        written.extend(batch);
    }
    Ok(written)
}

/// Locks and returns the current row, checking `If-Match`.
async fn lock_current(
    conn: &mut AsyncPgConnection,
    id: ProductId,
    expected: Option<Version>,
) -> Result<Product, StoreError> {
    let row = products::table
        .find(id.get())
        .select(ProductRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let current = Product::try_from(row)?;
    match expected {
        Some(v) if v != current.version => Err(StoreError::PreconditionFailed {
            current: current.version,
        }),
        _ => Ok(current),
    }
}

/// Inserts products and their stock rows; returns them in input order.
async fn insert_products(
    conn: &mut AsyncPgConnection,
    new: &[NewProduct],
) -> Result<Vec<Product>, StoreError> {
    let mut created = Vec::with_capacity(new.len());
    // 9 parameters per row: 500 rows stay well under the bind limit.
    for chunk in new.chunks(500) {
        let values: Vec<_> = chunk
            .iter()
            .map(|p| {
                (
                    products::sku.eq(p.sku.as_str()),
                    products::name.eq(p.name.as_str()),
                    products::description.eq(p.description.as_str()),
                    products::category.eq(p.category.as_str()),
                    products::price_cents.eq(p.price_cents.get()),
                    products::currency.eq(p.currency.as_str()),
                    products::featured.eq(p.featured),
                    products::attributes.eq(Value::Object(p.attributes.as_map().clone())),
                )
            })
            .collect();
        let rows: Vec<ProductRow> = diesel::insert_into(products::table)
            .values(values)
            .returning(ProductRow::as_returning())
            .get_results(conn)
            .await?;
        // RETURNING order is not promised; align by the unique sku.
        let mut by_sku: std::collections::HashMap<String, ProductRow> =
            rows.into_iter().map(|r| (r.sku.clone(), r)).collect();
        for p in chunk {
            let row = by_sku
                .remove(p.sku.as_str())
                .ok_or_else(|| StoreError::Internal("insert returned fewer rows".into()))?;
            created.push(Product::try_from(row)?);
        }
    }
    let stock_rows: Vec<_> = created
        .iter()
        .zip(new)
        .map(|(p, n)| {
            (
                stock::product_id.eq(p.id.get()),
                stock::quantity.eq(n.stock.get()),
            )
        })
        .collect();
    for chunk in stock_rows.chunks(5000) {
        diesel::insert_into(stock::table)
            .values(chunk)
            .execute(conn)
            .await?;
    }
    Ok(created)
}

impl Db {
    /// Creates one product (version 1) with its stock and its event.
    pub async fn create(&self, new: &NewProduct) -> Result<Written<Product>, StoreError> {
        self.bounded(async {
            count_query("create");
            let mut conn = self.conn().await?;
            conn.transaction::<_, StoreError, _>(async |conn| {
                let product = insert_products(conn, std::slice::from_ref(new))
                    .await?
                    .pop()
                    .ok_or_else(|| StoreError::Internal("insert returned no row".into()))?;
                let events = enqueue(
                    conn,
                    &[ChangeEvent::upserted(None, &product, product.updated_at)],
                )
                .await?;
                Ok(Written {
                    value: product,
                    events,
                })
            })
            .await
        })
        .await
    }

    /// Creates many products in one transaction: all or nothing.
    pub async fn create_bulk(
        &self,
        new: &[NewProduct],
    ) -> Result<Written<Vec<Product>>, StoreError> {
        self.bounded(async {
            count_query("create_bulk");
            let mut conn = self.conn().await?;
            conn.transaction::<_, StoreError, _>(async |conn| {
                let products = insert_products(conn, new).await?;
                let events: Vec<_> = products
                    .iter()
                    .map(|p| ChangeEvent::upserted(None, p, p.updated_at))
                    .collect();
                let events = enqueue(conn, &events).await?;
                Ok(Written {
                    value: products,
                    events,
                })
            })
            .await
        })
        .await
    }

    /// Applies a merge patch; `expected` is the `If-Match` version.
    pub async fn update(
        &self,
        id: ProductId,
        patch: &ProductPatch,
        expected: Option<Version>,
    ) -> Result<Written<Product>, StoreError> {
        self.bounded(async {
            count_query("update");
            let mut conn = self.conn().await?;
            conn.transaction::<_, StoreError, _>(async |conn| {
                let before = lock_current(conn, id, expected).await?;
                let f = patch.apply(&before)?;
                let row: ProductRow = diesel::update(products::table.find(id.get()))
                    .set((
                        products::name.eq(f.name.as_str()),
                        products::description.eq(f.description.as_str()),
                        products::category.eq(f.category.as_str()),
                        products::price_cents.eq(f.price_cents.get()),
                        products::currency.eq(f.currency.as_str()),
                        products::featured.eq(f.featured),
                        products::attributes.eq(Value::Object(f.attributes.into_inner())),
                        products::version.eq(products::version + 1),
                        products::updated_at.eq(clock()),
                    ))
                    .returning(ProductRow::as_returning())
                    .get_result(conn)
                    .await?;
                let after = Product::try_from(row)?;
                let events = enqueue(
                    conn,
                    &[ChangeEvent::upserted(
                        Some(&before),
                        &after,
                        after.updated_at,
                    )],
                )
                .await?;
                Ok(Written {
                    value: after,
                    events,
                })
            })
            .await
        })
        .await
    }

    /// Deletes a product (and its stock); its event fences at last version + 1.
    pub async fn delete(
        &self,
        id: ProductId,
        expected: Option<Version>,
    ) -> Result<Written<()>, StoreError> {
        self.bounded(async {
            count_query("delete");
            let mut conn = self.conn().await?;
            conn.transaction::<_, StoreError, _>(async |conn| {
                let last = lock_current(conn, id, expected).await?;
                diesel::delete(products::table.find(id.get()))
                    .execute(conn)
                    .await?;
                let events = enqueue(conn, &[ChangeEvent::deleted(&last, Utc::now())]).await?;
                Ok(Written { value: (), events })
            })
            .await
        })
        .await
    }

    /// Sets stock on hand. Stock is never cached, so no event is written and
    /// the product's version does not move.
    pub async fn set_stock(&self, id: ProductId, units: Stock) -> Result<Availability, StoreError> {
        self.bounded(async {
            count_query("set_stock");
            let mut conn = self.conn().await?;
            let row: Option<StockRow> = diesel::update(stock::table.find(id.get()))
                .set((
                    stock::quantity.eq(units.get()),
                    stock::updated_at.eq(clock()),
                ))
                .returning(StockRow::as_returning())
                .get_result(&mut conn)
                .await
                .optional()?;
            row.ok_or(StoreError::NotFound)?.try_into()
        })
        .await
    }
}
