//! Trending: product views counted in process, flushed to Redis in batches
//! into hour-bucket sorted sets (never a Redis round trip per view), and
//! rolled up into a 24-hour top list by one instance at a time.
//!
//! Every Redis command here stays small, because Redis runs one command at a
//! time and every cache read waits behind it: the roll-up reads only the top
//! of each bucket (`ZREVRANGE`, O(log N + K)) and merges them in process
//! instead of asking Redis to union whole buckets, and past buckets are
//! trimmed a bounded chunk at a time. (A `ZUNIONSTORE` of a 100k-member bucket
//! stalled Redis past the read path's 100 ms budget every roll-up.)

use std::{collections::HashMap, time::Duration};

use parking_lot::Mutex;

use domain::ProductId;

use crate::{CacheError, L2};

/// How long an hour bucket lives: the 24 hours it counts for, plus slack.
const BUCKET_TTL_SECS: i64 = 26 * 3600;
/// Members kept in the rolled-up top list.
const TOP_KEEP: usize = 1000;
/// Members of each bucket the roll-up reads: a product outside a bucket's top
/// 2000 is far from the 24-hour top 1000.
const BUCKET_TOP: isize = 2000;
/// Members a past bucket is trimmed to (bounds Redis memory: the current
/// bucket holds every product viewed this hour).
const BUCKET_KEEP: usize = 10_000;
/// Most members one trim command removes.
const TRIM_CHUNK: usize = 2000;

/// Views counted since the last flush.
#[derive(Debug, Default)]
pub struct ViewCounter {
    pending: Mutex<HashMap<ProductId, u64>>,
}

impl ViewCounter {
    /// Counts one view; a map update, no I/O.
    pub fn record(&self, id: ProductId) {
        *self.pending.lock().entry(id).or_default() += 1;
    }

    /// Takes the counts gathered so far.
    pub fn take(&self) -> HashMap<ProductId, u64> {
        std::mem::take(&mut *self.pending.lock())
    }
}

fn hour_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(3600)
}

impl L2 {
    /// Adds view counts to the current hour's bucket, in one pipeline.
    pub async fn add_views(
        &self,
        counts: &HashMap<ProductId, u64>,
        unix_secs: i64,
    ) -> Result<(), CacheError> {
        if counts.is_empty() {
            return Ok(());
        }
        let bucket = self.keys().trending_bucket(hour_of(unix_secs));
        let mut pipe = redis::pipe();
        for (id, n) in counts {
            pipe.cmd("ZINCRBY")
                .arg(&bucket)
                .arg(*n)
                .arg(id.get())
                .ignore();
        }
        pipe.cmd("EXPIRE")
            .arg(&bucket)
            .arg(BUCKET_TTL_SECS)
            .ignore();
        self.pipeline::<()>("add_views", pipe).await
    }

    /// Recomputes the 24-hour top list from the hour buckets. With
    /// `Some(every)`, only if no instance did within `every` (a lock key);
    /// with `None`, unconditionally. Returns whether this call did it.
    pub async fn rollup_trending(
        &self,
        unix_secs: i64,
        every: Option<Duration>,
    ) -> Result<bool, CacheError> {
        if let Some(every) = every {
            let lock: Option<String> = self
                .command(
                    "trending_lock",
                    redis::cmd("SET")
                        .arg(self.keys().trending_lock())
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(u64::try_from(every.as_millis()).unwrap_or(10_000).max(1))
                        .clone(),
                )
                .await?;
            if lock.is_none() {
                return Ok(false);
            }
        }
        let now = hour_of(unix_secs);
        let buckets: Vec<String> = (0..24)
            .map(|h| self.keys().trending_bucket(now - h))
            .collect();

        // The top of each bucket, merged here.
        let mut read = redis::pipe();
        for bucket in &buckets {
            read.cmd("ZREVRANGE")
                .arg(bucket)
                .arg(0)
                .arg(BUCKET_TOP - 1)
                .arg("WITHSCORES");
        }
        let tops: Vec<Vec<(String, f64)>> = self.pipeline("trending_read", read).await?;
        let mut totals: HashMap<String, f64> = HashMap::new();
        for (member, views) in tops.into_iter().flatten() {
            *totals.entry(member).or_default() += views;
        }
        let mut ranked: Vec<(String, f64)> = totals.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(TOP_KEEP);

        // Swap the new list in atomically (same hash slot as the buckets).
        let top = self.keys().trending_top();
        let staging = format!("{top}:next");
        let mut write = redis::pipe();
        write.atomic();
        write.cmd("DEL").arg(&staging).ignore();
        if ranked.is_empty() {
            write.cmd("DEL").arg(&top).ignore();
        } else {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&staging);
            for (member, views) in &ranked {
                zadd.arg(*views).arg(member);
            }
            write.add_command(zadd).ignore();
            write.cmd("RENAME").arg(&staging).arg(&top).ignore();
            write.cmd("EXPIRE").arg(&top).arg(BUCKET_TTL_SECS).ignore();
        }
        self.pipeline::<()>("trending_write", write).await?;

        self.trim_past_buckets(&buckets[1..]).await?;
        Ok(true)
    }

    /// Trims past hour buckets towards [`BUCKET_KEEP`] members, at most one
    /// [`TRIM_CHUNK`] each per roll-up.
    async fn trim_past_buckets(&self, past: &[String]) -> Result<(), CacheError> {
        let mut sizes = redis::pipe();
        for bucket in past {
            sizes.cmd("ZCARD").arg(bucket);
        }
        let sizes: Vec<usize> = self.pipeline("trending_sizes", sizes).await?;
        let mut trim = redis::pipe();
        for (bucket, size) in past.iter().zip(sizes) {
            let excess = size.saturating_sub(BUCKET_KEEP).min(TRIM_CHUNK);
            if excess > 0 {
                trim.cmd("ZREMRANGEBYRANK")
                    .arg(bucket)
                    .arg(0)
                    .arg(excess - 1)
                    .ignore();
            }
        }
        if !trim.is_empty() {
            self.pipeline::<()>("trending_trim", trim).await?;
        }
        Ok(())
    }

    /// The most viewed products over the last 24 hours, most viewed first.
    pub async fn trending(&self, limit: usize) -> Result<Vec<(ProductId, u64)>, CacheError> {
        let stop = i64::try_from(limit).unwrap_or(100).max(1) - 1;
        let raw: Vec<(String, f64)> = self
            .command(
                "trending_top",
                redis::cmd("ZREVRANGE")
                    .arg(self.keys().trending_top())
                    .arg(0)
                    .arg(stop)
                    .arg("WITHSCORES")
                    .clone(),
            )
            .await?;
        Ok(raw
            .into_iter()
            .filter_map(|(member, score)| {
                let id = member.parse::<ProductId>().ok()?;
                Some((id, score.max(0.0) as u64))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_batches_views() {
        let c = ViewCounter::default();
        let a = ProductId::new(1).unwrap();
        let b = ProductId::new(2).unwrap();
        for _ in 0..3 {
            c.record(a);
        }
        c.record(b);
        let taken = c.take();
        assert_eq!(taken[&a], 3);
        assert_eq!(taken[&b], 1);
        assert!(c.take().is_empty());
    }

    #[test]
    fn hours_are_floor_divisions() {
        assert_eq!(hour_of(3599), 0);
        assert_eq!(hour_of(3600), 1);
        assert_eq!(hour_of(-1), -1);
    }
}
