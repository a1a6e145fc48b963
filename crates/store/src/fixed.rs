//! The statements every write and every relay pass runs, written out so
//! that Postgres parses and plans each once per connection.
//!
//! diesel keeps a prepared statement only for a query it can prove has
//! fixed text, and it proves that for neither raw SQL (`sql_query`) nor any
//! `UPDATE`. Left to it, the three statements below were prepared anew on
//! every call: a named statement parsed, planned, bound, executed and closed
//! for one use, an extra round trip each, on the hottest path of a write.
//! Each type here walks its text and binds by hand and never calls
//! `unsafe_to_cache_prepared`, so diesel caches it by its text.

use diesel::{
    pg::Pg,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    sql_types::{BigInt, Bool, Jsonb, Nullable, Text, Untyped},
};
use serde_json::Value;

/// A `products` row, in schema order (what `ProductRow` reads by name).
const PRODUCT_COLUMNS: &str = "id, sku, name, description, category, price_cents, currency, \
     featured, attributes, version, created_at, updated_at";

/// What the `products` triggers read of the transaction: the request that
/// made the change (its events carry it) and whether the writer wakes its
/// own relay (the notify trigger then stays quiet). `''` leaves either
/// unset.
pub(crate) struct Marks<'a> {
    correlation_id: &'a str,
    relay_woken: &'static str,
}

impl<'a> Marks<'a> {
    pub(crate) fn new(correlation_id: Option<&'a str>, wakes_own_relay: bool) -> Self {
        Self {
            correlation_id: correlation_id.unwrap_or_default(),
            relay_woken: if wakes_own_relay { "on" } else { "" },
        }
    }

    /// Whether there is anything to mark.
    pub(crate) fn is_empty(&self) -> bool {
        self.correlation_id.is_empty() && self.relay_woken.is_empty()
    }

    /// The two `set_config` calls, as select-list items.
    fn walk<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        out.push_sql("set_config('catalog.correlation_id', ");
        out.push_bind_param::<Text, _>(&self.correlation_id)?;
        out.push_sql(", true) AS correlation_id, set_config('catalog.relay_woken', ");
        out.push_bind_param::<Text, _>(&self.relay_woken)?;
        out.push_sql(", true) AS relay_woken");
        Ok(())
    }
}

/// Marks the transaction (see [`Marks`]).
pub(crate) struct MarkTransaction<'a>(pub Marks<'a>);

impl QueryFragment<Pg> for MarkTransaction<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        out.push_sql("SELECT ");
        self.0.walk(&mut out)
    }
}

/// Locks a product's row for the transaction's update and returns it,
/// marking the transaction as [`MarkTransaction`] does in the same
/// statement (one round trip fewer per write).
pub(crate) struct LockProduct<'a> {
    pub id: i64,
    pub marks: Marks<'a>,
}

impl QueryFragment<Pg> for LockProduct<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        out.push_sql("SELECT ");
        self.marks.walk(&mut out)?;
        out.push_sql(", ");
        out.push_sql(PRODUCT_COLUMNS);
        out.push_sql(" FROM products WHERE id = ");
        out.push_bind_param::<BigInt, _>(&self.id)?;
        out.push_sql(" FOR UPDATE");
        Ok(())
    }
}

/// Writes a product's mutable fields; returns the row as it is now, or
/// nothing when no column changed (the version trigger skips the row).
pub(crate) struct UpdateProduct<'a> {
    pub id: i64,
    pub name: &'a str,
    pub description: &'a str,
    pub category: &'a str,
    pub price_cents: i64,
    pub currency: &'a str,
    pub featured: bool,
    pub attributes: &'a Value,
}

impl QueryFragment<Pg> for UpdateProduct<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        out.push_sql("UPDATE products SET name = ");
        out.push_bind_param::<Text, _>(&self.name)?;
        out.push_sql(", description = ");
        out.push_bind_param::<Text, _>(&self.description)?;
        out.push_sql(", category = ");
        out.push_bind_param::<Text, _>(&self.category)?;
        out.push_sql(", price_cents = ");
        out.push_bind_param::<BigInt, _>(&self.price_cents)?;
        out.push_sql(", currency = ");
        out.push_bind_param::<Text, _>(&self.currency)?;
        out.push_sql(", featured = ");
        out.push_bind_param::<Bool, _>(&self.featured)?;
        out.push_sql(", attributes = ");
        out.push_bind_param::<Jsonb, _>(self.attributes)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<BigInt, _>(&self.id)?;
        out.push_sql(" RETURNING ");
        out.push_sql(PRODUCT_COLUMNS);
        Ok(())
    }
}

/// A patch that needs nothing of the current row (every field but
/// `attributes`, whose merge must read it) as one statement on its own:
/// marks the transaction as [`MarkTransaction`] does, keeps each absent
/// field (`NULL`) as it is, and checks `If-Match` in the `WHERE`, which
/// Postgres checks again on the newest row version if it waited for a
/// concurrent writer's lock. One round trip for the whole write, where
/// `BEGIN`, [`LockProduct`], [`UpdateProduct`] and `COMMIT` take four.
///
/// Returns the row as it is now; nothing when there is no such row, the
/// version did not match, or no column changed (the version trigger skips
/// the row): the caller then takes the locking path, which tells these
/// apart.
pub(crate) struct PatchInPlace<'a> {
    pub id: i64,
    pub expected: Option<i64>,
    pub marks: Marks<'a>,
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub category: Option<&'a str>,
    pub price_cents: Option<i64>,
    pub currency: Option<&'a str>,
    pub featured: Option<bool>,
}

impl QueryFragment<Pg> for PatchInPlace<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        // MATERIALIZED, and joined: the marks are set before the join
        // yields the row, so before any trigger of the update runs.
        out.push_sql("WITH mark AS MATERIALIZED (SELECT ");
        self.marks.walk(&mut out)?;
        out.push_sql(") UPDATE products SET name = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.name)?;
        out.push_sql(", name), description = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.description)?;
        out.push_sql(", description), category = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.category)?;
        out.push_sql(", category), price_cents = COALESCE(");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.price_cents)?;
        out.push_sql(", price_cents), currency = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.currency)?;
        out.push_sql(", currency), featured = COALESCE(");
        out.push_bind_param::<Nullable<Bool>, _>(&self.featured)?;
        out.push_sql(", featured) FROM mark WHERE id = ");
        out.push_bind_param::<BigInt, _>(&self.id)?;
        out.push_sql(" AND version = COALESCE(");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.expected)?;
        out.push_sql(", version) RETURNING ");
        out.push_sql(PRODUCT_COLUMNS);
        Ok(())
    }
}

/// Claims up to `limit` unsent outbox rows (oldest first, skipping rows
/// another relay holds) by deleting them, returning each with the WAL
/// position now, which is at or after its commit.
///
/// The statement is prepared once and takes no parameters, so Postgres
/// plans it once, from the statistics of that moment, and keeps the plan
/// until the next `ANALYZE`. A queue table's statistics are wrong nearly
/// all the time (analyzed empty, thousands of rows a moment later), so the
/// text leaves the planner nothing to get wrong, and the relay's pool
/// forbids sequential scans ([`crate::PoolSettings::index_scans`]):
///
/// - The ids are collected into an array first (`= ANY(ARRAY(...))`), so
///   the `DELETE` is an index lookup of at most `limit` ids whatever the
///   statistics say. Written as a join (`id IN (SELECT ...)`) and planned
///   on an empty outbox, the claim became a `Nested Loop Semi Join` that
///   runs the subquery again for every row of the outbox: with 100,000
///   rows queued by a bulk reprice, no pass ended within the statement
///   timeout, and the relay stopped (seen with `EXPLAIN EXECUTE` on an
///   analyzed empty outbox).
/// - The limit is written into the text, not bound: with `LIMIT $1` the
///   generic plan cannot know it and guesses a tenth of the table. The
///   limit is a setting, fixed per process, so the statement is still
///   prepared once.
pub(crate) struct ClaimOutbox {
    pub limit: i64,
}

impl QueryFragment<Pg> for ClaimOutbox {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        out.push_sql(
            "DELETE FROM outbox WHERE id = ANY(ARRAY\
               (SELECT id FROM outbox ORDER BY id LIMIT ",
        );
        out.push_sql(&self.limit.max(1).to_string());
        out.push_sql(
            " FOR UPDATE SKIP LOCKED)) \
             RETURNING id, event_id, routing_key, payload, correlation_id, \
                       product_id, version, occurred_at, categories, featured, \
                       product, pg_current_wal_lsn()::text AS lsn",
        );
        Ok(())
    }
}

/// Rows come back by column name (`QueryableByName`); the statement cache
/// keys them by their text, not by a type.
macro_rules! untyped {
    ($($ty:ty),*) => {$(
        impl QueryId for $ty {
            type QueryId = ();
            const HAS_STATIC_QUERY_ID: bool = false;
        }
        impl Query for $ty {
            type SqlType = Untyped;
        }
    )*};
}

untyped!(
    MarkTransaction<'_>,
    LockProduct<'_>,
    UpdateProduct<'_>,
    PatchInPlace<'_>,
    ClaimOutbox
);

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::debug_query;

    #[test]
    fn the_texts_number_their_parameters_in_order() {
        let attributes = serde_json::json!({});
        let update = UpdateProduct {
            id: 1,
            name: "n",
            description: "d",
            category: "c",
            price_cents: 1,
            currency: "USD",
            featured: false,
            attributes: &attributes,
        };
        let text = debug_query::<Pg, _>(&update).to_string();
        assert!(
            text.starts_with(
                "UPDATE products SET name = $1, description = $2, category = $3, \
                 price_cents = $4, currency = $5, featured = $6, attributes = $7 WHERE id = $8"
            ),
            "{text}"
        );
        let mark = MarkTransaction(Marks::new(Some("r"), true));
        assert!(
            debug_query::<Pg, _>(&mark)
                .to_string()
                .contains("$2, true)")
        );
        // The limit is in the text, with nothing bound: no generic plan can
        // lose it (see `ClaimOutbox`).
        let claim = debug_query::<Pg, _>(&ClaimOutbox { limit: 5 }).to_string();
        assert!(claim.contains("LIMIT 5 FOR UPDATE SKIP LOCKED"), "{claim}");
        // An array of ids, not a join the planner could rescan per row.
        assert!(claim.contains("WHERE id = ANY(ARRAY(SELECT"), "{claim}");
        assert!(claim.ends_with("-- binds: []"), "{claim}");
        let at_least_one = debug_query::<Pg, _>(&ClaimOutbox { limit: 0 }).to_string();
        assert!(at_least_one.contains("LIMIT 1 FOR"), "{at_least_one}");
    }
}
