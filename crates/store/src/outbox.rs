//! The relay's side of the outbox table: claim unsent rows without blocking
//! other relays, turn each into its event message, and clear the ones the
//! broker confirmed; and the notifications that wake a relay when a
//! transaction wrote rows.
//!
//! Rows are written by the `products` triggers (see the migration
//! `2026-11-29-100000_db_kept_versions`), whoever changed the product. The
//! message is built here from the row's fields, with `domain::ChangeEvent`'s
//! one serializer, plus the WAL position read when the rows are claimed:
//! the rows were committed before, so that position is at or after each
//! change's commit (what a reader needs to know whether a replica has it).

use std::future::Future;

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{Array, BigInt, Bool, Jsonb, Nullable, Text, Timestamptz},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use domain::{ChangeEvent, EventKind, Product, ProductId, Version};
use futures::StreamExt;
use uuid::Uuid;

use crate::{Db, StoreError, products::count_query, schema::outbox};

/// One claimed row, with the WAL position read by the claim.
#[derive(Debug, QueryableByName)]
struct ClaimedRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    event_id: Uuid,
    #[diesel(sql_type = Text)]
    routing_key: String,
    /// Rows written before the triggers carry their message ready-made.
    #[diesel(sql_type = Nullable<Text>)]
    payload: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    correlation_id: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    product_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    version: Option<i64>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    occurred_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Array<Text>>)]
    categories: Option<Vec<String>>,
    #[diesel(sql_type = Nullable<Bool>)]
    featured: Option<bool>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    product: Option<serde_json::Value>,
    #[diesel(sql_type = Text)]
    lsn: String,
}

/// One event ready to publish.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// Outbox row id: the order events were written in.
    pub id: i64,
    pub event_id: Uuid,
    pub routing_key: String,
    /// The request id of the write that caused it (AMQP `correlation_id`).
    pub correlation_id: Option<String>,
    /// The message body.
    pub body: Vec<u8>,
    /// Whether the body is an event built and checked here, so it may share
    /// a message with others. A ready-made payload from before the triggers,
    /// or a malformed row, travels alone: a consumer that refuses it
    /// refuses nothing else.
    pub batchable: bool,
}

impl ClaimedRow {
    /// The event message. A row whose fields do not make an event (which
    /// the table's constraints rule out) is sent as its raw fields, for the
    /// consumers to dead-letter as malformed: visible, and never blocking
    /// the rows behind it.
    fn into_message(self) -> OutboxMessage {
        let (body, batchable) = match (&self.payload, self.event()) {
            (Some(payload), _) => (payload.clone().into_bytes(), false),
            (None, Ok(event)) => match serde_json::to_vec(&event) {
                Ok(body) => (body, true),
                Err(_) => (Vec::new(), false),
            },
            (None, Err(e)) => {
                tracing::error!(outbox_id = self.id, error = %e, "an outbox row does not make an event; publishing it as is");
                let raw = format!("{{\"malformed_outbox_row\":{}}}", self.id);
                (raw.into_bytes(), false)
            }
        };
        OutboxMessage {
            id: self.id,
            event_id: self.event_id,
            routing_key: self.routing_key,
            correlation_id: self.correlation_id,
            body,
            batchable,
        }
    }

    fn event(&self) -> Result<ChangeEvent, StoreError> {
        let missing = |field: &str| StoreError::bug(format!("outbox row without {field}"));
        let kind = EventKind::ALL
            .into_iter()
            .find(|k| k.routing_key() == self.routing_key)
            .ok_or_else(|| missing("a known routing key"))?;
        let product = self
            .product
            .clone()
            .map(serde_json::from_value::<Product>)
            .transpose()
            .map_err(|e| StoreError::Internal(std::sync::Arc::new(e)))?;
        let id = self.product_id.ok_or_else(|| missing("product_id"))?;
        let event = ChangeEvent {
            event_id: self.event_id,
            kind,
            product_id: ProductId::new(id).map_err(|_| missing("a valid product_id"))?,
            version: Version(self.version.ok_or_else(|| missing("version"))?),
            occurred_at: self.occurred_at.ok_or_else(|| missing("occurred_at"))?,
            categories: self
                .categories
                .clone()
                .ok_or_else(|| missing("categories"))?,
            featured: self.featured.ok_or_else(|| missing("featured"))?,
            product,
            lsn: Some(
                self.lsn
                    .parse()
                    .map_err(|e| StoreError::Internal(std::sync::Arc::new(e)))?,
            ),
        };
        event
            .check()
            .map_err(|e| StoreError::Internal(std::sync::Arc::new(e)))?;
        Ok(event)
    }
}

/// What one relay pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayPass {
    /// Rows this pass locked.
    pub claimed: usize,
    /// Rows the broker confirmed and that were deleted.
    pub sent: usize,
}

impl Db {
    /// Claims up to `limit` unsent rows (oldest first, skipping rows another
    /// relay holds) by deleting them inside a transaction, hands their
    /// messages to `publish`, and commits only if the broker confirmed every
    /// one: the rows stay locked while they are being published, and come
    /// back (the transaction rolls back) if any was not confirmed or this
    /// relay dies. Confirmed ones are then published again later, which is
    /// harmless: the consumers are idempotent.
    ///
    /// `publish` returns the ids the broker confirmed, plus the error that
    /// stopped it, if any; `publish_within` is how long it may take (its own
    /// bound), allowed on top of the store's deadline so that the pass is
    /// rolled back, never dropped mid-transaction.
    pub async fn relay_outbox<F, Fut, E>(
        &self,
        limit: i64,
        publish_within: std::time::Duration,
        publish: F,
    ) -> Result<(RelayPass, Option<E>), StoreError>
    where
        F: FnOnce(Vec<OutboxMessage>) -> Fut + Send,
        Fut: Future<Output = (Vec<i64>, Option<E>)> + Send,
        E: Send,
    {
        self.bounded_with(publish_within, async {
            count_query("outbox_claim");
            let mut conn = self.conn().await?;
            // Set when the pass is rolled back, to report what happened.
            let mut unconfirmed: Option<(RelayPass, Option<E>)> = None;
            let committed = conn
                .transaction::<_, StoreError, _>(async |conn| {
                    let mut rows: Vec<ClaimedRow> =
                        crate::fixed::ClaimOutbox { limit }.load(conn).await?;
                    let claimed = rows.len();
                    if claimed == 0 {
                        return Ok((RelayPass::default(), None));
                    }
                    rows.sort_unstable_by_key(|r| r.id);
                    let messages = rows.into_iter().map(ClaimedRow::into_message).collect();
                    let (confirmed, error) = publish(messages).await;
                    if confirmed.len() == claimed {
                        let pass = RelayPass {
                            claimed,
                            sent: claimed,
                        };
                        return Ok((pass, error));
                    }
                    unconfirmed = Some((RelayPass { claimed, sent: 0 }, error));
                    Err(StoreError::from(diesel::result::Error::RollbackTransaction))
                })
                .await;
            match (committed, unconfirmed) {
                (_, Some(outcome)) => Ok(outcome),
                (result, None) => result,
            }
        })
        .await
    }

    /// Rows waiting and the age of the oldest, for metrics and readiness.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        self.bounded(async {
            count_query("outbox_backlog");
            let mut conn = self.conn().await?;
            let (count, oldest) = outbox::table
                .select((
                    diesel::dsl::count_star(),
                    diesel::dsl::min(outbox::created_at),
                ))
                .first::<(i64, Option<DateTime<Utc>>)>(&mut conn)
                .await?;
            Ok((count, oldest))
        })
        .await
    }
}

/// The channel the `products` triggers notify when a transaction wrote
/// outbox rows.
const CHANNEL: &str = "catalog_outbox";

/// A connection listening for new outbox rows: a relay wakes on each
/// notification instead of waiting for its next poll.
pub struct OutboxListener {
    conn: AsyncPgConnection,
}

impl std::fmt::Debug for OutboxListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxListener").finish_non_exhaustive()
    }
}

impl OutboxListener {
    /// Opens a dedicated connection (a pooled one could be handed to a
    /// query mid-notification) and listens.
    pub async fn connect(url: &str, tls: &tls::ClientTls) -> Result<Self, StoreError> {
        let mut conn = crate::pool::admin::connect(url, tls).await?;
        diesel::sql_query(format!("LISTEN {CHANNEL}"))
            .execute(&mut conn)
            .await?;
        Ok(Self { conn })
    }

    /// Waits for the next notification; an error when the connection is
    /// lost (listen again on a new one).
    pub async fn next(&mut self) -> Result<(), StoreError> {
        let mut notifications = std::pin::pin!(self.conn.notifications_stream());
        match notifications.next().await {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.into()),
            None => Err(StoreError::Unavailable(std::sync::Arc::from(Box::<
                dyn std::error::Error + Send + Sync,
            >::from(
                "the listening connection closed",
            )))),
        }
    }
}
