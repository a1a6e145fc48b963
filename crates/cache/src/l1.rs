//! L1: a bounded in-process cache per read-api instance, fenced by the
//! product events the instance consumes, under the same version rules as
//! Redis, plus this instance's [`Floors`]: every version it has learned,
//! kept beyond the entries' lifetimes. Nothing below a product's floor is
//! written here, and the read path serves nothing below it from anywhere.
//!
//! How long an entry may live depends on what it is and whether fences can
//! reach it. A value (or a deleted marker) written while the instance's event
//! subscription is up lives as long as a Redis entry: events fence it, and L1
//! is cleared the moment the subscription drops. Written while it is down, it
//! lives only the short TTL, the staleness bound when events cannot arrive.
//! A tombstone only has to outlive the reads in flight when it was written
//! (every store call has a deadline of seconds), so it gets the short TTL
//! too: otherwise a bulk load would fill L1 with tombstones of products
//! nobody reads here. A "not found" marker lives the negative TTL. All
//! lifetimes are jittered by up to 10% so entries filled together do not
//! expire together.
//!
//! moka's loaders insert unconditionally, which would let a slow loader
//! overwrite a newer version or a fence. Every write here goes through
//! `and_compute_with` instead: a per-key compare-and-set.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use domain::{ProductId, Version};
use moka::{Expiry, future::Cache, ops::compute::Op};

use rand::Rng;

use crate::{Entry, FenceKind, ProductOp, State, floors::Floors};

#[derive(Clone)]
pub struct L1 {
    /// `None` when disabled (`cache.l1_capacity = 0`).
    cache: Option<Cache<ProductId, Arc<Entry>>>,
    /// What this instance has learned; `None` when L1 is disabled.
    floors: Option<Arc<Floors>>,
    /// Advanced by every [`L1::clear`]. A read notes it when it starts and
    /// its fill is refused if it moved: a value read before the event
    /// subscription dropped or came back must not outlive the clear.
    epoch: Arc<AtomicU64>,
}

impl std::fmt::Debug for L1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L1")
            .field("entries", &self.cache.as_ref().map(Cache::entry_count))
            .finish()
    }
}

/// What L1 may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Entries (`cache.l1_capacity`); 0 disables L1.
    pub entries: u64,
    /// Bytes, payloads and bookkeeping (`cache.l1_max_bytes`).
    pub bytes: u64,
}

/// What an entry costs in memory, about: its payload plus the bookkeeping
/// around it (the `Arc`'d entry, the payload's `Bytes`, moka's per-entry
/// structures), measured with `catalog-bench` (docs/benchmarks.md).
pub const ENTRY_OVERHEAD: u64 = 400;

fn weight(entry: &Entry) -> u64 {
    let payload = match &entry.state {
        State::Value(b) => b.len() as u64,
        _ => 0,
    };
    payload + ENTRY_OVERHEAD
}

/// Lifetimes of L1 entries (see the module comment).
#[derive(Debug, Clone)]
pub struct Lifetimes {
    /// Values while fences can arrive: the Redis TTL.
    pub fenced: Duration,
    /// Values while they cannot (the staleness bound), and tombstones.
    pub unfenced: Duration,
    /// "Not found" markers.
    pub negative: Duration,
    /// Whether the event subscription is up right now.
    pub subscribed: Arc<AtomicBool>,
}

impl Lifetimes {
    /// One lifetime whatever the entry and the subscription.
    pub fn fixed(ttl: Duration) -> Self {
        Self {
            fenced: ttl,
            unfenced: ttl,
            negative: ttl,
            subscribed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn for_entry(&self, entry: &Entry) -> Duration {
        let base = match entry.state {
            State::Tombstone => self.unfenced,
            State::Absent => self.negative.min(self.unfenced.max(self.fenced)),
            State::Value(_) | State::Deleted if self.subscribed.load(Ordering::Acquire) => {
                self.fenced
            }
            State::Value(_) | State::Deleted => self.unfenced,
        };
        // Up to 10% shorter, never longer: a bound stays a bound.
        base.mul_f64(1.0 - rand::rng().random_range(0.0..0.1))
    }
}

impl Expiry<ProductId, Arc<Entry>> for Lifetimes {
    fn expire_after_create(
        &self,
        _: &ProductId,
        entry: &Arc<Entry>,
        _: Instant,
    ) -> Option<Duration> {
        Some(self.for_entry(entry))
    }

    fn expire_after_update(
        &self,
        _: &ProductId,
        entry: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.for_entry(entry))
    }
}

impl L1 {
    /// At most `bounds.entries` entries and about `bounds.bytes` bytes,
    /// living per `lifetimes`, with `floors`; 0 entries disables L1 (and its
    /// floors).
    pub fn new(bounds: Bounds, lifetimes: Lifetimes, floors: Floors) -> Self {
        let cache = (bounds.entries > 0).then(|| {
            // One weight holds both bounds: each entry weighs its bytes, and
            // at least its share of the byte bound, so the byte bound can
            // hold no more than `entries` entries.
            let min_weight = bounds.bytes.div_ceil(bounds.entries).max(1);
            Cache::builder()
                .max_capacity(bounds.bytes)
                .weigher(move |_, entry: &Arc<Entry>| {
                    u32::try_from(weight(entry).max(min_weight)).unwrap_or(u32::MAX)
                })
                .expire_after(lifetimes)
                .build()
        });
        Self {
            floors: cache.is_some().then(|| Arc::new(floors)),
            cache,
            epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The null object: holds nothing (`cache.l1_capacity = 0`, or caching
    /// off altogether).
    pub fn off() -> Self {
        Self::new(
            Bounds {
                entries: 0,
                bytes: 0,
            },
            Lifetimes::fixed(Duration::ZERO),
            Floors::new(0, Duration::ZERO),
        )
    }

    /// The floor of `id`: nothing older may be served or cached here.
    pub fn floor(&self, id: ProductId) -> Version {
        self.floors.as_ref().map_or(Version::ZERO, |f| f.get(id))
    }

    /// Learns that `id` is at least at `version` (see [`Floors`]). Floors
    /// dropped to stay within capacity take their ids' L1 entries with them.
    pub async fn learn(&self, id: ProductId, version: Version) {
        let (Some(floors), Some(cache)) = (&self.floors, &self.cache) else {
            return;
        };
        let evicted = floors.raise(id, version);
        if !evicted.is_empty() {
            metrics::counter!("cache_floors_evicted_total").increment(evicted.len() as u64);
        }
        for id in evicted {
            cache.invalidate(&id).await;
        }
    }

    /// Floors held, for metrics.
    pub fn floor_count(&self) -> usize {
        self.floors.as_ref().map_or(0, |f| f.len())
    }

    /// The current epoch, to pass to [`L1::fill`] for a read starting now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    pub async fn get(&self, id: ProductId) -> Option<Arc<Entry>> {
        self.cache.as_ref()?.get(&id).await
    }

    /// Fills with a value or the absent marker read during `epoch`, unless
    /// what is held is as new or newer (or a fence above it), it is below
    /// the product's floor, or L1 was cleared since. Returns whether it was
    /// written.
    pub async fn fill(&self, id: ProductId, entry: Arc<Entry>, epoch: u64) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        if entry.version < self.floor(id) {
            metrics::counter!("cache_fill_refused_total", "tier" => "l1").increment(1);
            return false;
        }
        let written = cache
            .entry(id)
            .and_compute_with(|held| {
                // Checked under the entry's lock: a clear that lands after
                // this point drops what we write.
                let op = match held {
                    _ if self.epoch() != epoch => Op::Nop,
                    Some(held) if !held.value().admits_fill(&entry) => Op::Nop,
                    _ => Op::Put(entry),
                };
                std::future::ready(op)
            })
            .await;
        let stored = matches!(
            written,
            moka::ops::compute::CompResult::Inserted(_)
                | moka::ops::compute::CompResult::ReplacedWith(_)
        );
        if !stored {
            metrics::counter!("cache_fill_refused_total", "tier" => "l1").increment(1);
        }
        stored
    }

    /// Fences at `version` unless what is held is already at or above it,
    /// and learns the version as the product's floor.
    pub async fn fence(&self, id: ProductId, version: Version, kind: FenceKind) {
        self.learn(id, version).await;
        let Some(cache) = &self.cache else {
            return;
        };
        let marker = Arc::new(match kind {
            FenceKind::Tombstone => Entry::tombstone(version),
            FenceKind::Deleted => Entry::deleted(version),
        });
        cache
            .entry(id)
            .and_compute_with(|held| {
                let op = match held {
                    Some(held) if !held.value().admits_fence(version) => Op::Nop,
                    _ => Op::Put(marker),
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Applies an event's operation (see [`crate::plan`]).
    pub async fn apply(&self, op: &ProductOp) {
        match op {
            ProductOp::Fence { id, version, kind } => self.fence(*id, *version, *kind).await,
            ProductOp::Refresh { id, entry } => self.refresh(*id, Arc::new(entry.clone())).await,
        }
    }

    /// Applies a changed product's snapshot (refresh mode): replaces what is
    /// held through the fill CAS, so a hot product never goes cold here; a
    /// product this instance does not hold gets only a tombstone, which still
    /// stops a slower reader's older fill without filling L1 with products
    /// nobody reads here.
    pub async fn refresh(&self, id: ProductId, entry: Arc<Entry>) {
        self.learn(id, entry.version).await;
        let Some(cache) = &self.cache else {
            return;
        };
        cache
            .entry(id)
            .and_compute_with(|held| {
                let op = match held {
                    None => Op::Put(Arc::new(Entry::tombstone(entry.version))),
                    Some(held) if held.value().admits_fill(&entry) => Op::Put(entry),
                    Some(_) => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Drops every entry: after the event subscription was lost, L1 may have
    /// missed fences. Floors stay: what was learned is still true.
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.as_ref().map_or(0, Cache::entry_count)
    }

    /// The bytes L1 holds by its own estimate (payloads and bookkeeping),
    /// always within `Bounds::bytes` once moka has caught up.
    pub fn weighted_size(&self) -> u64 {
        self.cache.as_ref().map_or(0, Cache::weighted_size)
    }

    /// Lets moka apply what is pending (evictions to the bounds): tests and
    /// metrics read settled numbers.
    pub async fn settle(&self) {
        if let Some(cache) = &self.cache {
            cache.run_pending_tasks().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::design_table;
    use bytes::Bytes;

    fn id() -> ProductId {
        ProductId::new(7).unwrap()
    }

    fn bounds(entries: u64) -> Bounds {
        Bounds {
            entries,
            bytes: entries * 10_000,
        }
    }

    fn new_l1() -> L1 {
        L1::new(
            bounds(100),
            Lifetimes::fixed(Duration::from_secs(60)),
            Floors::new(100, Duration::from_secs(60)),
        )
    }

    #[tokio::test]
    async fn l1_follows_the_design_table() {
        for (held, v, fill, fence) in design_table() {
            let l1 = new_l1();
            if let Some(held) = &held {
                l1.cache
                    .as_ref()
                    .unwrap()
                    .insert(id(), Arc::new(held.clone()))
                    .await;
            }
            let incoming = Arc::new(Entry::value(Version(v), Bytes::from_static(b"{}")));
            assert_eq!(
                l1.fill(id(), incoming, 0).await,
                fill,
                "fill {v} over {held:?}"
            );

            let l1 = new_l1();
            if let Some(held) = &held {
                l1.cache
                    .as_ref()
                    .unwrap()
                    .insert(id(), Arc::new(held.clone()))
                    .await;
            }
            l1.fence(id(), Version(v), FenceKind::Tombstone).await;
            let now = l1.get(id()).await.map(|e| (*e).clone());
            let expected = if fence {
                Some(Entry::tombstone(Version(v)))
            } else {
                held.clone()
            };
            assert_eq!(now, expected, "fence {v} over {held:?}");
        }
    }

    #[tokio::test]
    async fn a_slow_fill_cannot_undo_a_fence() {
        let l1 = new_l1();
        // A reader loaded version 7; before it fills, the event for 8 lands.
        l1.fence(id(), Version(8), FenceKind::Tombstone).await;
        assert!(
            !l1.fill(id(), Arc::new(Entry::value(Version(7), Bytes::new())), 0)
                .await
        );
        assert_eq!(l1.get(id()).await.unwrap().version, Version(8));
        // Out-of-order and duplicated fences never lower it.
        l1.fence(id(), Version(6), FenceKind::Tombstone).await;
        l1.fence(id(), Version(8), FenceKind::Tombstone).await;
        assert_eq!(l1.get(id()).await.unwrap().version, Version(8));
        assert!(
            l1.fill(id(), Arc::new(Entry::value(Version(8), Bytes::new())), 0)
                .await
        );
        // A read that started before a clear cannot fill after it.
        let before = l1.epoch();
        l1.clear();
        let late = Arc::new(Entry::value(Version(9), Bytes::new()));
        assert!(!l1.fill(id(), late, before).await);
        assert!(l1.get(id()).await.is_none());
    }

    #[tokio::test]
    async fn a_floor_outlives_the_entries_and_refuses_older_fills() {
        let l1 = new_l1();
        l1.fence(id(), Version(2), FenceKind::Tombstone).await;
        // The tombstone goes (expiry, eviction, a clear): the floor stays.
        l1.clear();
        assert!(l1.get(id()).await.is_none());
        assert_eq!(l1.floor(id()), Version(2));
        let old = Arc::new(Entry::value(Version(1), Bytes::new()));
        assert!(!l1.fill(id(), old, l1.epoch()).await, "below the floor");
        assert!(
            !l1.fill(id(), Arc::new(Entry::absent()), l1.epoch()).await,
            "a product known to exist is not cached as absent"
        );
        let new = Arc::new(Entry::value(Version(2), Bytes::new()));
        assert!(l1.fill(id(), new, l1.epoch()).await);
    }

    #[tokio::test]
    async fn a_floor_dropped_for_capacity_takes_the_value_with_it() {
        // One floor per shard: a second id in the same shard pushes the
        // first one's floor out, and its value goes too.
        let l1 = L1::new(
            bounds(100),
            Lifetimes::fixed(Duration::from_secs(60)),
            Floors::new(1, Duration::from_secs(60)),
        );
        let (a, b) = (ProductId::new(16).unwrap(), ProductId::new(32).unwrap());
        l1.learn(a, Version(3)).await;
        let value = Arc::new(Entry::value(Version(3), Bytes::new()));
        assert!(l1.fill(a, value, l1.epoch()).await);
        l1.learn(b, Version(1)).await;
        assert_eq!(l1.floor(a), Version::ZERO);
        assert!(l1.get(a).await.is_none(), "no value without its floor");
    }

    #[tokio::test]
    async fn refresh_replaces_held_entries_and_only_fences_absent_ones() {
        let l1 = new_l1();
        let v = |n: i64| Arc::new(Entry::value(Version(n), Bytes::from(format!("v{n}"))));
        // Not held: a tombstone only.
        l1.refresh(id(), v(2)).await;
        assert_eq!(*l1.get(id()).await.unwrap(), Entry::tombstone(Version(2)));
        // Held: the snapshot replaces it; an older snapshot does not.
        l1.fill(id(), v(2), 0).await;
        l1.refresh(id(), v(3)).await;
        assert_eq!(l1.get(id()).await.unwrap(), v(3));
        l1.refresh(id(), v(2)).await;
        assert_eq!(l1.get(id()).await.unwrap(), v(3));
    }

    #[test]
    fn lifetimes_depend_on_the_entry_and_the_subscription() {
        let subscribed = Arc::new(AtomicBool::new(false));
        let lifetimes = Lifetimes {
            fenced: Duration::from_secs(300),
            unfenced: Duration::from_secs(10),
            negative: Duration::from_secs(30),
            subscribed: Arc::clone(&subscribed),
        };
        // Jitter makes a lifetime up to 10% shorter, never longer.
        let within = |d: Duration, base: u64| {
            let base = Duration::from_secs(base);
            d <= base && d >= base.mul_f64(0.9)
        };
        let value = Entry::value(Version(1), Bytes::new());
        for _ in 0..100 {
            subscribed.store(false, Ordering::Release);
            assert!(within(lifetimes.for_entry(&value), 10), "unfenced value");
            subscribed.store(true, Ordering::Release);
            assert!(within(lifetimes.for_entry(&value), 300), "fenced value");
            assert!(within(
                lifetimes.for_entry(&Entry::deleted(Version(2))),
                300
            ));
            assert!(within(
                lifetimes.for_entry(&Entry::tombstone(Version(2))),
                10
            ));
            assert!(within(lifetimes.for_entry(&Entry::absent()), 30));
        }
    }

    #[tokio::test]
    async fn l1_stays_within_both_of_its_bounds() {
        let bounded = || {
            L1::new(
                Bounds {
                    entries: 1000,
                    bytes: 1_000_000,
                },
                Lifetimes::fixed(Duration::from_secs(60)),
                Floors::new(100, Duration::from_secs(60)),
            )
        };
        let l1 = bounded();
        // Small entries: the entry bound binds first.
        for n in 1..=5000 {
            let id = ProductId::new(n).unwrap();
            let v = Arc::new(Entry::value(Version(1), Bytes::from_static(b"{}")));
            l1.fill(id, v, l1.epoch()).await;
        }
        l1.settle().await;
        assert!(l1.entry_count() <= 1000, "{}", l1.entry_count());
        assert!(l1.weighted_size() <= 1_000_000);
        // Big entries: the byte bound binds first.
        let l1 = bounded();
        let big = Bytes::from(vec![b'x'; 20_000]);
        for n in 10_001..=10_500 {
            let id = ProductId::new(n).unwrap();
            let v = Arc::new(Entry::value(Version(1), big.clone()));
            l1.fill(id, v, l1.epoch()).await;
        }
        l1.settle().await;
        assert!(l1.weighted_size() <= 1_000_000, "{}", l1.weighted_size());
        assert!(
            l1.entry_count() <= 1_000_000 / 20_000,
            "{}",
            l1.entry_count()
        );
    }

    #[tokio::test]
    async fn disabled_l1_holds_nothing() {
        let l1 = L1::off();
        assert!(!l1.enabled());
        assert!(!l1.fill(id(), Arc::new(Entry::absent()), 0).await);
        assert!(l1.get(id()).await.is_none());
    }
}
