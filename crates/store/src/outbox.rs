//! The outbox relay's side of the outbox table: claim unsent rows without
//! blocking other relays, and clear the ones the broker confirmed.

use std::future::Future;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use uuid::Uuid;

use crate::{Db, StoreError, products::count_query, schema::outbox};

/// One event waiting to be published.
#[derive(Debug, Clone, Queryable, Selectable)]
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
    /// relay holds), hands them to `publish`, and deletes the ones whose ids it
    /// returns, all in one transaction: rows stay locked while they are being
    /// published, and are back for anyone to claim if this relay dies.
    ///
    /// `publish` returns the ids the broker confirmed, plus the error that
    /// stopped it, if any (confirmed rows are deleted either way).
    pub async fn relay_outbox<F, Fut, E>(
        &self,
        limit: i64,
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
            conn.transaction::<_, StoreError, _>(async |conn| {
                let rows: Vec<OutboxMessage> = outbox::table
                    .order(outbox::id.asc())
                    .limit(limit)
                    .for_update()
                    .skip_locked()
                    .select(OutboxMessage::as_select())
                    .load(conn)
                    .await?;
                let claimed = rows.len();
                if claimed == 0 {
                    return Ok((RelayPass::default(), None));
                }
                let (confirmed, error) = publish(rows).await;
                if !confirmed.is_empty() {
                    diesel::delete(outbox::table.filter(outbox::id.eq_any(&confirmed)))
                        .execute(conn)
                        .await?;
                }
                let pass = RelayPass {
                    claimed,
                    sent: confirmed.len(),
                };
                Ok((pass, error))
            })
            .await
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
