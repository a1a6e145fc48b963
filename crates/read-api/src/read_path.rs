//! The product read path: L1 → L2 → Postgres, with the version floor.
//!
//! Every entry met on the way either answers the request or raises the
//! floor: a tombstone says "the committed version is at least t", and
//! `min_version` says "the client already saw N". An answer below the floor
//! is never served from a cache and never accepted from a lagging replica
//! (the read goes to the primary instead). Fills go to L2 first, through the
//! version CAS; L1 is filled only when L2 accepted (or cannot be asked), so
//! L1 never holds what Redis already knows to be stale.

use std::sync::Arc;

use cache::{Entry, FenceKind, L1, L2, State};
use domain::{Lsn, ProductId, Version};
use store::StoreError;

use crate::{db::Databases, singleflight::SingleFlight};

/// Where an answer came from; sent as `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    L1,
    L2,
    Db,
}

impl Tier {
    pub fn header(self) -> &'static str {
        match self {
            Self::L1 => "HIT-L1",
            Self::L2 => "HIT-L2",
            Self::Db => "MISS",
        }
    }
}

/// A lookup's answer: a value (200) or a deleted/absent marker (404).
#[derive(Debug, Clone)]
pub struct Answer {
    pub entry: Arc<Entry>,
    pub tier: Tier,
}

/// Why a read could not be answered. Clone: a failed load is handed to
/// every caller that joined it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("too many database queries in flight")]
    Overloaded,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not encode the answer")]
    Encode(#[source] Arc<serde_json::Error>),
    /// The shared load's task panicked (a bug; the panic is logged).
    #[error("the load in flight was lost")]
    LoadLost,
}

impl From<crate::limiter::Saturated> for ReadError {
    fn from(_: crate::limiter::Saturated) -> Self {
        Self::Overloaded
    }
}

impl From<serde_json::Error> for ReadError {
    fn from(e: serde_json::Error) -> Self {
        Self::Encode(Arc::new(e))
    }
}

impl From<ReadError> for service::http::ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Overloaded => Self::Overloaded,
            ReadError::Store(e) => e.into(),
            e @ (ReadError::Encode(_) | ReadError::LoadLost) => Self::Internal(Box::new(e)),
        }
    }
}

/// A load's result and the floor it was loaded under, so a caller that
/// joined it with a higher floor can tell whether it satisfies them.
#[derive(Debug, Clone)]
struct Loaded {
    entry: Arc<Entry>,
    floor: Version,
}

/// What a cache entry means to a reader with a given floor.
enum Verdict {
    /// Answer with this entry.
    Serve,
    /// Not good enough: read on, with this floor.
    Floor(Version),
}

fn judge(entry: &Entry, floor: Version) -> Verdict {
    match entry.state {
        State::Value(_) if entry.version >= floor => Verdict::Serve,
        State::Value(_) => Verdict::Floor(floor),
        State::Tombstone => Verdict::Floor(floor.max(entry.version)),
        // A delete is final: no later version can exist.
        State::Deleted => Verdict::Serve,
        // "Not found" is only trusted by a reader that expects nothing.
        State::Absent if floor == Version::ZERO => Verdict::Serve,
        State::Absent => Verdict::Floor(floor),
    }
}

/// Hit and miss counters, registered once: the hot path only bumps atomics.
struct Counters {
    l1_hits: metrics::Counter,
    l1_misses: metrics::Counter,
    l2_hits: metrics::Counter,
    l2_misses: metrics::Counter,
}

impl Counters {
    fn new() -> Self {
        Self {
            l1_hits: metrics::counter!("cache_hits_total", "tier" => "l1"),
            l1_misses: metrics::counter!("cache_misses_total", "tier" => "l1"),
            l2_hits: metrics::counter!("cache_hits_total", "tier" => "l2"),
            l2_misses: metrics::counter!("cache_misses_total", "tier" => "l2"),
        }
    }
}

/// The read path's shared state.
pub struct ReadPath {
    /// This instance's cache ([`L1::off`] when disabled).
    pub l1: L1,
    /// Redis ([`L2::off`] when caching is disabled).
    pub l2: L2,
    pub db: Databases,
    flights: SingleFlight<ProductId, Result<Loaded, ReadError>>,
    /// Products asked for at a `min_version` Postgres did not have, with
    /// what it had, for [`BEYOND_FOR`]: a client asking for a version that
    /// does not exist costs one primary query per product per interval, not
    /// one per request.
    beyond: moka::sync::Cache<ProductId, Arc<Entry>>,
    counters: Counters,
}

/// How long a "Postgres does not have that version" answer is reused. It is
/// reused only while this instance knows nothing newer: once the event of a
/// commit arrives (milliseconds after it), the next read asks Postgres
/// again. So a client that writes N and reads `min_version=N` at once could
/// be given the older answer only if someone else asked for N before it
/// existed, within this interval and before the event: kept short for that.
const BEYOND_FOR: std::time::Duration = std::time::Duration::from_millis(500);

impl ReadPath {
    pub fn new(l1: L1, l2: L2, db: Databases) -> Self {
        Self {
            l1,
            l2,
            db,
            flights: SingleFlight::default(),
            beyond: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(BEYOND_FOR)
                .build(),
            counters: Counters::new(),
        }
    }

    /// Looks a product up; the answer's version is at least `min_version`
    /// whenever Postgres has it.
    pub async fn product(
        self: &Arc<Self>,
        id: ProductId,
        min_version: Version,
    ) -> Result<Answer, ReadError> {
        // What this instance has learned, and what the client has seen.
        let mut known = self.l1.floor(id);
        let mut floor = min_version.max(known);
        // Fills from this read are refused if L1 is cleared meanwhile.
        let epoch = self.l1.epoch();

        if self.l1.enabled() {
            if let Some(entry) = self.l1.get(id).await {
                match judge(&entry, floor) {
                    Verdict::Serve => {
                        self.counters.l1_hits.increment(1);
                        return Ok(Answer {
                            entry,
                            tier: Tier::L1,
                        });
                    }
                    Verdict::Floor(f) => floor = f,
                }
            }
            self.counters.l1_misses.increment(1);
        }

        let mut redis_ok = false;
        if self.l2.is_on() {
            match self.l2.get(id).await {
                Ok(Some(entry)) => {
                    redis_ok = true;
                    match judge(&entry, floor) {
                        Verdict::Serve => {
                            self.counters.l2_hits.increment(1);
                            let entry = Arc::new(entry);
                            self.remember_in_l1(id, &entry, epoch).await;
                            return Ok(Answer {
                                entry,
                                tier: Tier::L2,
                            });
                        }
                        Verdict::Floor(f) => {
                            if entry.state == State::Tombstone {
                                // Redis knows of a change: remember it
                                // beyond this read (a failover could lose
                                // the tombstone, a tombstone expires).
                                self.l1.learn(id, entry.version).await;
                                known = known.max(entry.version);
                            }
                            floor = f;
                        }
                    }
                }
                Ok(None) => redis_ok = true,
                Err(_) => {}
            }
            self.counters.l2_misses.increment(1);
        }

        if min_version > known
            && let Some(entry) = self.beyond.get(&id)
            && entry.version >= known
        {
            // Postgres did not have `min_version` a moment ago, and nothing
            // newer has been seen since: answer that read again rather than
            // ask the primary for every such request.
            return Ok(Answer {
                entry,
                tier: Tier::Db,
            });
        }
        let loaded = self.load_shared(id, floor, redis_ok, epoch).await?;
        if loaded.entry.version < min_version {
            self.beyond.insert(id, Arc::clone(&loaded.entry));
        }
        Ok(Answer {
            entry: loaded.entry,
            tier: Tier::Db,
        })
    }

    /// Copies an L2 answer into L1 through L1's own CAS.
    async fn remember_in_l1(&self, id: ProductId, entry: &Arc<Entry>, epoch: u64) {
        match entry.state {
            State::Deleted => self.l1.fence(id, entry.version, FenceKind::Deleted).await,
            State::Tombstone => {}
            _ => {
                self.l1.fill(id, Arc::clone(entry), epoch).await;
            }
        }
    }

    /// Loads through single-flight; a caller whose floor is above the shared
    /// load's and whose answer falls short reads again on its own.
    async fn load_shared(
        self: &Arc<Self>,
        id: ProductId,
        floor: Version,
        redis_ok: bool,
        epoch: u64,
    ) -> Result<Loaded, ReadError> {
        let this = Arc::clone(self);
        let (shared, _leader) = self
            .flights
            .run(
                id,
                async move { this.load(id, floor, redis_ok, epoch).await },
            )
            .await;
        let loaded = shared.unwrap_or(Err(ReadError::LoadLost))?;
        if loaded.floor < floor && loaded.entry.version < floor {
            return self.load(id, floor, redis_ok, epoch).await;
        }
        Ok(loaded)
    }

    /// One Postgres read (replica first when there is one) and the fills.
    async fn load(
        &self,
        id: ProductId,
        floor: Version,
        redis_ok: bool,
        epoch: u64,
    ) -> Result<Loaded, ReadError> {
        let row = self
            .db
            .query(async |db| {
                let (row, at) = db
                    .read(|source| async move { source.product(id).await })
                    .await?;
                let short = row
                    .as_ref()
                    .map_or(floor > Version::ZERO, |p| p.version < floor);
                if short && at != Lsn(u64::MAX) {
                    // The replica lags behind what the cache or the client
                    // already knows: ask the primary, and from now on wait
                    // for the replica to have what the primary had.
                    db.count_fallback();
                    let row = db.primary.product(id).await?;
                    db.learn_primary_position().await;
                    return Ok(row);
                }
                Ok(row)
            })
            .await?;
        let entry = Arc::new(match row {
            Some(p) => Entry::product(&p)?,
            None => Entry::absent(),
        });
        // L2 is the shared authority: if it refuses, it knows of a newer
        // version or a fence, and L1 must not hold ours. Redis away (or
        // caching off): L1 is still fenced by this instance's own event
        // subscription.
        let l2_fill = if redis_ok {
            Some(self.l2.fill(id, &entry).await)
        } else {
            None
        };
        if !matches!(l2_fill, Some(Ok(_))) && entry.version > Version::ZERO {
            // Redis may still hold an older copy that this read could not
            // replace: this instance must not take it for an answer later.
            self.l1.learn(id, entry.version).await;
        }
        if !matches!(l2_fill, Some(Ok(false))) {
            self.l1.fill(id, Arc::clone(&entry), epoch).await;
        }
        Ok(Loaded { entry, floor })
    }
}
