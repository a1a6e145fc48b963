//! Postgres as the read side uses it: the primary, an optional replica, and
//! a bound on queries in flight. Every query the read side makes goes
//! through [`Databases::query`]: take a slot (or answer 503 `overloaded`),
//! then run against the source it picks with [`Databases::source`].
//!
//! A replica is read only when it has replayed everything this instance has
//! seen (design rule 9): the WAL position of every event it consumed, of
//! every page generation it met, and of the primary after a read the replica
//! was too far behind for. Its replay position (`pg_last_wal_replay_lsn()`)
//! is asked at most every `database.replica_lsn_refresh_ms` and reused in
//! between; while it is behind, reads go to the primary
//! (`db_replica_fallbacks_total`). A replica that does not answer, or stays
//! behind longer than `database.replica_max_lag_ms`, is skipped by a
//! breaker, and `/readyz` says degraded.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use cache::Breaker;
use domain::Lsn;
use parking_lot::Mutex;
use store::{Db, StoreError};
use tokio::time::Instant;

use crate::{limiter::Limiter, read_path::ReadError};

/// The highest WAL position this instance has seen.
#[derive(Debug, Default)]
pub struct Seen(AtomicU64);

impl Seen {
    pub fn observe(&self, lsn: Lsn) {
        self.0.fetch_max(lsn.0, Ordering::AcqRel);
    }

    pub fn get(&self) -> Lsn {
        Lsn(self.0.load(Ordering::Acquire))
    }
}

/// Where a read goes, and the WAL position its data is at least at.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub db: &'a Db,
    /// `Lsn(u64::MAX)` for the primary: it has everything.
    pub at: Lsn,
}

impl Source<'_> {
    pub fn is_primary(&self) -> bool {
        self.at == Lsn(u64::MAX)
    }
}

/// How a replica is doing, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    Up,
    /// Behind what this instance has seen for longer than the bound.
    Lagging,
    /// Not answering, or not a replica (its replay position is NULL).
    Unusable,
}

/// A replica and what is known of its replay position.
pub struct Replica {
    pub db: Db,
    /// Replay position last read.
    replayed: AtomicU64,
    /// When it was read, and since when the replica has been behind.
    checked: Mutex<(Option<Instant>, Option<Instant>)>,
    /// One replay-position query at a time.
    refreshing: tokio::sync::Mutex<()>,
    refresh_every: Duration,
    max_lag: Duration,
    breaker: Breaker,
}

impl Replica {
    pub fn new(db: Db, refresh_every: Duration, max_lag: Duration) -> Self {
        Self {
            db,
            replayed: AtomicU64::new(0),
            checked: Mutex::new((None, None)),
            refreshing: tokio::sync::Mutex::new(()),
            refresh_every,
            max_lag,
            breaker: Breaker::new("postgres_replica", 3, Duration::from_secs(1)),
        }
    }

    /// The replay position, at most `refresh_every` old; `None` if the
    /// replica cannot say. While another caller is asking, the last known
    /// position is used (reads then go to the primary if it is behind).
    async fn replayed(&self) -> Option<Lsn> {
        let (checked, _) = *self.checked.lock();
        let known = Lsn(self.replayed.load(Ordering::Acquire));
        if checked.is_some_and(|t| t.elapsed() < self.refresh_every) {
            return Some(known);
        }
        let Ok(_asking) = self.refreshing.try_lock() else {
            return checked.map(|_| known);
        };
        match self.db.replay_lsn().await {
            Ok(Some(lsn)) => {
                self.breaker.success();
                self.replayed.fetch_max(lsn.0, Ordering::AcqRel);
                self.checked.lock().0 = Some(Instant::now());
                Some(Lsn(self.replayed.load(Ordering::Acquire)))
            }
            Ok(None) => {
                tracing::warn!(
                    "database.replica_url is not a replica (no replay position); reading the primary"
                );
                self.breaker.failure();
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "the replica did not say its replay position");
                self.breaker.failure();
                None
            }
        }
    }

    /// Notes whether the replica was behind; a replica behind for longer
    /// than the bound opens the breaker.
    fn note_behind(&self, behind: bool) {
        let mut checked = self.checked.lock();
        match (behind, checked.1) {
            (false, _) => checked.1 = None,
            (true, None) => checked.1 = Some(Instant::now()),
            (true, Some(since)) if since.elapsed() > self.max_lag => {
                checked.1 = None;
                drop(checked);
                tracing::warn!(max_lag = ?self.max_lag, "the replica lags beyond the bound; reading the primary");
                self.breaker.trip();
            }
            (true, Some(_)) => {}
        }
    }

    pub fn state(&self) -> ReplicaState {
        use cache::breaker::BreakerState;
        if self.breaker.state() != BreakerState::Closed {
            return ReplicaState::Unusable;
        }
        match self.checked.lock().1 {
            Some(since) if since.elapsed() > self.max_lag => ReplicaState::Lagging,
            _ => ReplicaState::Up,
        }
    }
}

/// The primary, the replica (if any) and the concurrency limit.
pub struct Databases {
    pub primary: Db,
    pub replica: Option<Replica>,
    pub seen: std::sync::Arc<Seen>,
    limiter: Limiter,
    fallbacks: metrics::Counter,
    /// When the primary's position was last read after a fallback.
    primary_checked: Mutex<Option<Instant>>,
}

impl Databases {
    pub(crate) fn new(
        primary: Db,
        replica: Option<Replica>,
        seen: std::sync::Arc<Seen>,
        limiter: Limiter,
    ) -> Self {
        Self {
            primary,
            replica,
            seen,
            limiter,
            fallbacks: metrics::counter!("db_replica_fallbacks_total"),
            primary_checked: Mutex::new(None),
        }
    }

    /// Where a read goes: the replica if it has replayed everything this
    /// instance has seen (and answers), else the primary.
    pub async fn source(&self) -> Source<'_> {
        let primary = Source {
            db: &self.primary,
            at: Lsn(u64::MAX),
        };
        let Some(replica) = &self.replica else {
            return primary;
        };
        if replica.breaker.allow() {
            let seen = self.seen.get();
            match replica.replayed().await {
                Some(at) if at >= seen => {
                    replica.note_behind(false);
                    return Source {
                        db: &replica.db,
                        at,
                    };
                }
                Some(_) => replica.note_behind(true),
                None => {}
            }
        }
        self.count_fallback();
        primary
    }

    /// Runs `read` on [`Databases::source`]; a replica that fails it is
    /// skipped for a while and the read runs on the primary. Returns the
    /// rows and the WAL position they are at least at.
    pub async fn read<T, Fut>(&self, read: impl Fn(Db) -> Fut) -> Result<(T, Lsn), StoreError>
    where
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        // The pool is handed over by value (a cheap clone): a future that
        // borrows it could not be proven Send where loads are spawned.
        let source = self.source().await;
        match read(source.db.clone()).await {
            Err(e) if !source.is_primary() => {
                tracing::warn!(error = %e, "a replica read failed; reading the primary");
                if let Some(replica) = &self.replica {
                    replica.breaker.failure();
                }
                self.count_fallback();
                Ok((read(self.primary.clone()).await?, Lsn(u64::MAX)))
            }
            result => result.map(|rows| (rows, source.at)),
        }
    }

    /// Counts a read the replica was too far behind for.
    pub fn count_fallback(&self) {
        self.fallbacks.increment(1);
    }

    /// After a read the replica was too far behind for: what the primary had
    /// is now seen, so later reads (pages included) wait for the replica to
    /// have it too. Asked at most once per replica refresh interval.
    pub async fn learn_primary_position(&self) {
        let Some(replica) = &self.replica else {
            return;
        };
        {
            let mut checked = self.primary_checked.lock();
            if checked.is_some_and(|t| t.elapsed() < replica.refresh_every) {
                return;
            }
            *checked = Some(Instant::now());
        }
        if let Ok(lsn) = self.primary.current_lsn().await {
            self.seen.observe(lsn);
        }
    }

    /// Runs `query` holding one concurrency slot: 503 `overloaded` if none
    /// frees up within the wait.
    pub async fn query<T>(
        &self,
        query: impl AsyncFnOnce(&Self) -> Result<T, StoreError>,
    ) -> Result<T, ReadError> {
        let _slot = self.limiter.acquire().await?;
        Ok(query(self).await?)
    }
}
