//! Floors: the versions this instance has learned, kept apart from L1's
//! values so they outlive them (design rule 7).
//!
//! Learning that a product is at version v (from its event, from a Redis
//! tombstone, from a Postgres read whose Redis fill did not land) means no
//! copy older than v may be served or cached here again, for as long as such
//! a copy can exist within reach: until every Redis entry written before now
//! has expired, i.e. the Redis TTL with its jitter (the horizon). An L1
//! entry cannot carry that knowledge: its lifetime is shorter (a tombstone's
//! is seconds), and it can be evicted. A floor is 16 bytes of id and
//! version plus its expiry, so many more of them fit than values.
//!
//! Bounded twice: by time (the horizon) and by count (`cache.floor_capacity`,
//! per instance). Past the count, the floors closest to expiry go first, and
//! the caller drops those ids' L1 values with them, so L1 never holds a
//! product whose floor it has forgotten.

use std::collections::{HashMap, VecDeque};

use domain::{ProductId, Version};
use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

/// Shards, so concurrent readers rarely wait on one another.
const SHARDS: usize = 16;

/// One shard: the floors, and their expiries in order.
#[derive(Debug, Default)]
struct Shard {
    map: HashMap<ProductId, (Version, Instant)>,
    /// `(expiry, id)` in the order floors were raised, which is the order
    /// they expire in (one horizon for all). An id raised again leaves its
    /// older pair behind; pairs that no longer match the map are skipped.
    order: VecDeque<(Instant, ProductId)>,
}

impl Shard {
    /// Drops expired floors, and the oldest ones beyond `capacity`; returns
    /// the ids dropped for capacity.
    fn trim(&mut self, now: Instant, capacity: usize, evicted: &mut Vec<ProductId>) {
        while let Some(&(expiry, id)) = self.order.front() {
            let current = self.map.get(&id).is_some_and(|&(_, e)| e == expiry);
            let over = self.map.len() > capacity;
            if current && expiry > now && !over {
                break;
            }
            self.order.pop_front();
            if current && (expiry <= now || over) {
                self.map.remove(&id);
                if expiry > now {
                    evicted.push(id);
                }
            }
        }
        // Left-behind pairs are skipped when they reach the front; if a few
        // ids are raised over and over, compact rather than let them pile up.
        if self.order.len() > 2 * self.map.len() + 64 {
            let mut live: Vec<(Instant, ProductId)> =
                self.map.iter().map(|(id, &(_, e))| (e, *id)).collect();
            live.sort_unstable();
            self.order = live.into();
        }
    }
}

/// The floors of one instance. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Floors {
    shards: Box<[Mutex<Shard>]>,
    /// How long a floor lives after it was last raised.
    horizon: Duration,
    per_shard: usize,
}

impl Floors {
    /// Up to `capacity` floors, each kept `horizon` after it was raised.
    pub fn new(capacity: usize, horizon: Duration) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            horizon,
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, id: ProductId) -> &Mutex<Shard> {
        // Ids are dense integers: the low bits spread them evenly.
        &self.shards[(id.get().unsigned_abs() % SHARDS as u64) as usize]
    }

    /// The floor of `id`: no answer for it may be older. `Version::ZERO`
    /// when nothing is known.
    pub fn get(&self, id: ProductId) -> Version {
        let now = Instant::now();
        self.shard(id)
            .lock()
            .map
            .get(&id)
            .filter(|&&(_, expiry)| expiry > now)
            .map_or(Version::ZERO, |&(v, _)| v)
    }

    /// Raises the floor of `id` to `version` (a lower one changes nothing).
    /// Returns the ids whose floors were dropped to stay within capacity:
    /// the caller forgets their L1 values too.
    pub fn raise(&self, id: ProductId, version: Version) -> Vec<ProductId> {
        let mut evicted = Vec::new();
        if version == Version::ZERO {
            return evicted;
        }
        let now = Instant::now();
        let mut shard = self.shard(id).lock();
        let known = shard
            .map
            .get(&id)
            .filter(|&&(_, expiry)| expiry > now)
            .map(|&(v, _)| v);
        if known.is_some_and(|v| v >= version) {
            return evicted;
        }
        let expiry = now + self.horizon;
        shard.map.insert(id, (version, expiry));
        shard.order.push_back((expiry, id));
        shard.trim(now, self.per_shard, &mut evicted);
        evicted
    }

    /// Floors held right now (expired ones may linger until their shard is
    /// next written).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> ProductId {
        ProductId::new(n).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_floor_only_rises_and_lives_the_horizon() {
        let floors = Floors::new(100, Duration::from_secs(330));
        assert_eq!(floors.get(id(1)), Version::ZERO);
        floors.raise(id(1), Version(3));
        floors.raise(id(1), Version(2));
        assert_eq!(floors.get(id(1)), Version(3), "never lowered");
        tokio::time::advance(Duration::from_secs(329)).await;
        assert_eq!(floors.get(id(1)), Version(3), "kept the whole horizon");
        floors.raise(id(1), Version(4));
        tokio::time::advance(Duration::from_secs(329)).await;
        assert_eq!(floors.get(id(1)), Version(4), "raising restarts it");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(floors.get(id(1)), Version::ZERO, "gone after it");
    }

    #[tokio::test(start_paused = true)]
    async fn past_capacity_the_oldest_floors_go_and_are_reported() {
        let floors = Floors::new(SHARDS * 2, Duration::from_secs(60));
        // Ids 16 apart share a shard (2 floors each).
        let same_shard = [id(16), id(32), id(48)];
        assert!(floors.raise(same_shard[0], Version(1)).is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(floors.raise(same_shard[1], Version(1)).is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(floors.raise(same_shard[2], Version(1)), [same_shard[0]]);
        assert_eq!(floors.get(same_shard[0]), Version::ZERO);
        assert_eq!(floors.get(same_shard[2]), Version(1));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_floors_are_dropped_without_being_reported() {
        let floors = Floors::new(SHARDS, Duration::from_secs(1));
        floors.raise(id(16), Version(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(floors.raise(id(32), Version(1)).is_empty());
        assert_eq!(floors.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn raising_one_id_over_and_over_stays_compact() {
        let floors = Floors::new(100, Duration::from_secs(60));
        for v in 1..10_000 {
            floors.raise(id(5), Version(v));
        }
        let shard = floors.shard(id(5)).lock();
        assert_eq!(shard.map.len(), 1);
        assert!(shard.order.len() <= 2 + 64 + 1, "{}", shard.order.len());
    }
}
