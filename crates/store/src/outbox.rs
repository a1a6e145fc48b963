//! The outbox relay's side of the outbox table: claim unsent rows without
//! blocking other relays, and clear the ones the broker confirmed.

use std::future::Future;

use chrono::{DateTime, Utc};
use diesel::{prelude::*, sql_types::BigInt};
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use crate::{Db, StoreError, products::count_query, schema::outbox};

/// One event waiting to be published.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = outbox, check_for_backend(diesel::pg::Pg))]
pub struct OutboxMessage {
    /// Outbox row id: the order events were written in.
    pub id: i64,
    pub event_id: Uuid,
    pub routing_key: String,
    /// The message body, exactly as it is to be published.
    pub payload: String,
    pub created_at: DateTime<Utc>,
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
    /// relay holds) by deleting them inside a transaction, hands them to
    /// `publish`, and commits only if the broker confirmed every one: the
    /// rows stay locked while they are being published, and come back (the
    /// transaction rolls back) if any was not confirmed or this relay dies.
    /// Confirmed ones are then published again later, which is harmless: the
    /// consumers are idempotent.
    ///
    /// Only rows older than `older_than` are claimed: fresher ones are being
    /// published by the instance that wrote them.
    ///
    /// `publish` returns the ids the broker confirmed, plus the error that
    /// stopped it, if any.
    pub async fn relay_outbox<F, Fut, E>(
        &self,
        limit: i64,
        older_than: std::time::Duration,
        publish: F,
    ) -> Result<(RelayPass, Option<E>), StoreError>
    where
        F: FnOnce(Vec<OutboxMessage>) -> Fut + Send,
        Fut: Future<Output = (Vec<i64>, Option<E>)> + Send,
        E: Send,
    {
        self.bounded(async {
            count_query("outbox_claim");
            let mut conn = self.conn().await?;
            // Set when the pass is rolled back, to report what happened.
            let mut unconfirmed: Option<(RelayPass, Option<E>)> = None;
            let committed = conn
                .transaction::<_, StoreError, _>(async |conn| {
                    let mut rows: Vec<OutboxMessage> = diesel::sql_query(
                        "DELETE FROM outbox WHERE id IN \
                           (SELECT id FROM outbox \
                            WHERE created_at < now() - $2 * interval '1 millisecond' \
                            ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                         RETURNING id, event_id, routing_key, payload, created_at",
                    )
                    .bind::<BigInt, _>(limit)
                    .bind::<BigInt, _>(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX))
                    .load(conn)
                    .await?;
                    let claimed = rows.len();
                    if claimed == 0 {
                        return Ok((RelayPass::default(), None));
                    }
                    rows.sort_unstable_by_key(|r| r.id);
                    let (confirmed, error) = publish(rows).await;
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

    /// Deletes rows the broker confirmed (the relay's fast path, for rows it
    /// was handed at commit rather than claimed).
    pub async fn delete_sent(&self, ids: &[i64]) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.bounded(async {
            count_query("outbox_delete");
            let mut conn = self.conn().await?;
            Ok(diesel::delete(outbox::table.filter(outbox::id.eq_any(ids)))
                .execute(&mut conn)
                .await?)
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
