//! Write transactions. The database keeps the version and writes the event
//! (triggers, see `migrations/2026-11-29-100000_db_kept_versions`): each
//! change here is plain SQL, and its event commits with it, exactly as for a
//! change made in psql. What write-api adds on top: validation, `If-Match`,
//! and the correlation id the event carries.

use diesel::{dsl::sql, prelude::*, sql_types::Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use domain::{
    Availability, BulkPatchItem, NewProduct, Product, ProductId, ProductPatch, Stock, Version,
};
use serde_json::Value;

use crate::{
    Db, StoreError,
    fixed::Marks,
    models::{ProductRow, StockRow},
    products::count_query,
    schema::{products, stock},
};

/// `clock_timestamp()` rather than `now()`: `now()` is the transaction's start,
/// and a transaction that waited for a row lock would stamp an update earlier
/// than the one it waited for.
fn clock() -> diesel::expression::SqlLiteral<Timestamptz> {
    sql::<Timestamptz>("clock_timestamp()")
}

/// Names the transaction's events after the request that made them, and
/// tells the notify trigger whether the writer wakes its own relay (the
/// triggers read both).
async fn correlate(
    conn: &mut AsyncPgConnection,
    correlation_id: Option<&str>,
    wakes_own_relay: bool,
) -> Result<(), StoreError> {
    let marks = Marks::new(correlation_id, wakes_own_relay);
    if marks.is_empty() {
        return Ok(());
    }
    crate::fixed::MarkTransaction(marks).execute(conn).await?;
    Ok(())
}

/// Marks the transaction as [`correlate`] does, locks and returns the
/// current row, checking `If-Match`: one statement.
async fn lock_current(
    conn: &mut AsyncPgConnection,
    id: ProductId,
    expected: Option<Version>,
    correlation_id: Option<&str>,
    wakes_own_relay: bool,
) -> Result<Product, StoreError> {
    let row: ProductRow = crate::fixed::LockProduct {
        id: id.get(),
        marks: Marks::new(correlation_id, wakes_own_relay),
    }
    .get_result(conn)
    .await
    .optional()?
    .ok_or(StoreError::NotFound)?;
    let current = Product::try_from(row)?;
    match expected {
        Some(v) if v != current.version => Err(StoreError::PreconditionFailed {
            current: current.version,
            product: None,
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
                .ok_or_else(|| StoreError::bug("insert returned fewer rows"))?;
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

/// Writes patched fields to many rows in one statement (arrays unnested
/// into rows); the triggers version each changed row and skip the others.
async fn write_patched(
    conn: &mut AsyncPgConnection,
    patched: &[(ProductId, domain::input::PatchedFields)],
) -> Result<(), StoreError> {
    use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Text};
    let mut ids = Vec::with_capacity(patched.len());
    let mut names = Vec::with_capacity(patched.len());
    let mut descriptions = Vec::with_capacity(patched.len());
    let mut categories = Vec::with_capacity(patched.len());
    let mut prices = Vec::with_capacity(patched.len());
    let mut currencies = Vec::with_capacity(patched.len());
    let mut featured = Vec::with_capacity(patched.len());
    let mut attributes = Vec::with_capacity(patched.len());
    for (id, f) in patched {
        ids.push(id.get());
        names.push(f.name.as_str().to_owned());
        descriptions.push(f.description.as_str().to_owned());
        categories.push(f.category.as_str().to_owned());
        prices.push(f.price_cents.get());
        currencies.push(f.currency.as_str().to_owned());
        featured.push(f.featured);
        attributes.push(Value::Object(f.attributes.as_map().clone()));
    }
    diesel::sql_query(
        "UPDATE products AS p SET name = v.name, description = v.description, \
                category = v.category, price_cents = v.price_cents, currency = v.currency, \
                featured = v.featured, attributes = v.attributes \
         FROM unnest($1, $2, $3, $4, $5, $6, $7, $8) \
              AS v(id, name, description, category, price_cents, currency, featured, attributes) \
         WHERE p.id = v.id",
    )
    .bind::<Array<BigInt>, _>(ids)
    .bind::<Array<Text>, _>(names)
    .bind::<Array<Text>, _>(descriptions)
    .bind::<Array<Text>, _>(categories)
    .bind::<Array<BigInt>, _>(prices)
    .bind::<Array<Text>, _>(currencies)
    .bind::<Array<Bool>, _>(featured)
    .bind::<Array<Jsonb>, _>(attributes)
    .execute(conn)
    .await?;
    Ok(())
}

impl Db {
    /// Creates one product (version 1) with its stock; its event commits
    /// with it. `correlation_id` (here and in every write) names the request
    /// that made the change; the event carries it.
    pub async fn create(
        &self,
        new: &NewProduct,
        correlation_id: Option<&str>,
    ) -> Result<Product, StoreError> {
        let mut created = self
            .insert(std::slice::from_ref(new), correlation_id, "create")
            .await?;
        created
            .pop()
            .ok_or_else(|| StoreError::bug("insert returned no row"))
    }

    /// Creates many products in one transaction: all or nothing.
    pub async fn create_bulk(
        &self,
        new: &[NewProduct],
        correlation_id: Option<&str>,
    ) -> Result<Vec<Product>, StoreError> {
        self.insert(new, correlation_id, "create_bulk").await
    }

    async fn insert(
        &self,
        new: &[NewProduct],
        correlation_id: Option<&str>,
        query: &'static str,
    ) -> Result<Vec<Product>, StoreError> {
        self.bounded(async {
            count_query(query);
            let mut conn = self.conn().await?;
            conn.transaction::<_, StoreError, _>(async |conn| {
                correlate(conn, correlation_id, self.wakes_own_relay).await?;
                insert_products(conn, new).await
            })
            .await
        })
        .await
    }

    /// Applies a merge patch; `expected` is the `If-Match` version. A patch
    /// that changes nothing leaves the row, its version and the caches alone,
    /// and returns the product as it is.
    ///
    /// A patch without `attributes` is first tried as one statement
    /// ([`crate::fixed::PatchInPlace`]); if that changes no row, the
    /// transaction below (lock, apply, write) runs as for any other patch
    /// and answers `404`, `412` or the unchanged product.
    pub async fn update(
        &self,
        id: ProductId,
        patch: &ProductPatch,
        expected: Option<Version>,
        correlation_id: Option<&str>,
    ) -> Result<Product, StoreError> {
        self.bounded(async {
            count_query("update");
            let mut conn = self.conn().await?;
            if patch.attributes.is_none() {
                let row: Option<ProductRow> = crate::fixed::PatchInPlace {
                    id: id.get(),
                    expected: expected.map(|v| v.0),
                    marks: Marks::new(correlation_id, self.wakes_own_relay),
                    name: patch.name.as_ref().map(|n| n.as_str()),
                    description: patch.description.as_ref().map(|d| d.as_str()),
                    category: patch.category.as_ref().map(|c| c.as_str()),
                    price_cents: patch.price_cents.map(|p| p.get()),
                    currency: patch.currency.as_ref().map(|c| c.as_str()),
                    featured: patch.featured,
                }
                .get_result(&mut conn)
                .await
                .optional()?;
                if let Some(row) = row {
                    return Product::try_from(row);
                }
                // Unknown, another version, or nothing to change: the
                // locking path below says which, on one consistent row.
            }
            conn.transaction::<_, StoreError, _>(async |conn| {
                let before =
                    lock_current(conn, id, expected, correlation_id, self.wakes_own_relay).await?;
                let f = patch.apply(&before)?;
                // The trigger raises the version and stamps updated_at if a
                // column changed, and skips the row (no RETURNING) if not.
                let attributes = Value::Object(f.attributes.into_inner());
                let row: Option<ProductRow> = crate::fixed::UpdateProduct {
                    id: id.get(),
                    name: f.name.as_str(),
                    description: f.description.as_str(),
                    category: f.category.as_str(),
                    price_cents: f.price_cents.get(),
                    currency: f.currency.as_str(),
                    featured: f.featured,
                    attributes: &attributes,
                }
                .get_result(conn)
                .await
                .optional()?;
                row.map_or(Ok(before), Product::try_from)
            })
            .await
        })
        .await
    }

    /// Applies many merge patches in one transaction, all or nothing: every
    /// row is locked (in id order, so two bulk changes never deadlock),
    /// checked against its `if_match` and patched, then all are written by
    /// one statement. The first unknown id, then the first `if_match` that
    /// does not hold, in request order, fails the whole change. Returns each
    /// product's version afterwards, in request order (unchanged where the
    /// patch changed nothing). Ids must be distinct.
    pub async fn update_bulk(
        &self,
        items: &[BulkPatchItem],
        correlation_id: Option<&str>,
    ) -> Result<Vec<(ProductId, Version)>, StoreError> {
        self.bounded(async {
            count_query("update_bulk");
            let mut conn = self.conn().await?;
            conn.transaction::<_, StoreError, _>(async |conn| {
                correlate(conn, correlation_id, self.wakes_own_relay).await?;
                let mut ids: Vec<i64> = items.iter().map(|item| item.id.get()).collect();
                ids.sort_unstable();
                let rows: Vec<ProductRow> = products::table
                    .filter(products::id.eq_any(&ids))
                    .order(products::id.asc())
                    .select(ProductRow::as_select())
                    .for_update()
                    .load(conn)
                    .await?;
                let current: std::collections::HashMap<ProductId, Product> = rows
                    .into_iter()
                    .map(|r| Product::try_from(r).map(|p| (p.id, p)))
                    .collect::<Result<_, _>>()?;
                let mut patched = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let before = current
                        .get(&item.id)
                        .ok_or(StoreError::ProductNotFound(item.id))?;
                    if let Some(v) = item.if_match
                        && v != before.version
                    {
                        return Err(StoreError::PreconditionFailed {
                            current: before.version,
                            product: Some(item.id),
                        });
                    }
                    let fields = item
                        .patch
                        .apply(before)
                        .map_err(|e| e.within(&format!("items[{i}].patch")))?;
                    patched.push((item.id, fields));
                }
                write_patched(conn, &patched).await?;
                // Versions as they are now: raised by the trigger where a
                // column changed, kept where nothing did.
                let versions: std::collections::HashMap<i64, i64> = products::table
                    .filter(products::id.eq_any(&ids))
                    .select((products::id, products::version))
                    .load::<(i64, i64)>(conn)
                    .await?
                    .into_iter()
                    .collect();
                items
                    .iter()
                    .map(|item| {
                        let v = versions
                            .get(&item.id.get())
                            .ok_or_else(|| StoreError::bug("a locked row vanished"))?;
                        Ok((item.id, Version(*v)))
                    })
                    .collect()
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
        correlation_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            count_query("delete");
            let mut conn = self.conn().await?;
            conn.transaction::<_, StoreError, _>(async |conn| {
                lock_current(conn, id, expected, correlation_id, self.wakes_own_relay).await?;
                diesel::delete(products::table.find(id.get()))
                    .execute(conn)
                    .await?;
                Ok(())
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
