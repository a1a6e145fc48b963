//! The consistency auditor (the idea of Meta's Polaris and Uber's Cache
//! Inspector): sample cached product entries, compare their versions with
//! Postgres, and report any cache entry that is stale for longer than an
//! event takes to arrive. It measures the invariant in production instead of
//! trusting it; with `audit_repair`, it also fences what it finds.

use std::{collections::HashMap, time::Duration};

use cache::{Entry, FenceKind, L2, State};
use domain::{ProductId, Version};
use store::Db;
use tokio_util::sync::CancellationToken;

/// How long a suspect gets to be fixed by its event before it counts: a
/// commit whose event is still on its way is not a stale entry.
const GRACE: Duration = Duration::from_secs(1);
/// Keys one SCAN step visits, at least.
const SCAN_STEP: usize = 1000;
/// Most SCAN steps per audit.
const SCAN_STEPS: usize = 64;

/// One stale entry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub id: ProductId,
    /// What the cache serves: a version, or `None` for a cached "not found".
    pub cached: Option<Version>,
    /// What Postgres has: a version, or `None` if the product is gone.
    pub current: Option<Version>,
}

/// What one audit saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub checked: usize,
    pub stale: Vec<Stale>,
    pub repaired: usize,
}

pub struct Auditor {
    pub l2: L2,
    pub db: Db,
    pub sample: usize,
    pub repair: bool,
    /// Where the previous audit's SCAN stopped, so audits walk the keyspace.
    cursor: u64,
}

impl Auditor {
    pub fn new(l2: L2, db: Db, sample: usize, repair: bool) -> Self {
        Self {
            l2,
            db,
            sample: sample.max(1),
            repair,
            cursor: 0,
        }
    }

    /// Audits every `interval` until `shutdown`.
    pub async fn run(
        mut self,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return Ok(()),
            }
            if let Err(e) = self.audit(GRACE).await {
                tracing::debug!(error = format!("{e:#}"), "audit skipped");
            }
        }
    }

    /// One audit: sample, compare, wait out `grace` for suspects, report.
    pub async fn audit(&mut self, grace: Duration) -> anyhow::Result<Report> {
        let sample = self.sample_entries().await?;
        let suspects = self.compare(&sample).await?;
        let mut report = Report {
            checked: sample.len(),
            ..Report::default()
        };
        metrics::counter!("cache_audit_checked_total").increment(sample.len() as u64);
        tracing::debug!(
            checked = sample.len(),
            suspects = suspects.len(),
            "audit sampled"
        );
        if suspects.is_empty() {
            return Ok(report);
        }
        // Give in-flight events their chance, then look again.
        tokio::time::sleep(grace).await;
        let mut again = Vec::with_capacity(suspects.len());
        for s in &suspects {
            if let Some(entry) = self.l2.get(s.id).await? {
                again.push((s.id, entry));
            }
        }
        for stale in self.compare(&again).await? {
            let lag = match (stale.cached, stale.current) {
                (Some(c), Some(n)) => (n.get() - c.get()).max(0) as f64,
                _ => 1.0,
            };
            metrics::counter!("cache_audit_stale_total").increment(1);
            metrics::histogram!("cache_audit_stale_lag_versions").record(lag);
            tracing::warn!(product_id = %stale.id, cached = ?stale.cached, current = ?stale.current, "stale cache entry found");
            if self.repair {
                self.fix(&stale).await?;
                report.repaired += 1;
            }
            report.stale.push(stale);
        }
        Ok(report)
    }

    async fn sample_entries(&mut self) -> anyhow::Result<Vec<(ProductId, Entry)>> {
        let mut out = Vec::new();
        // SCAN's COUNT is how many slots one step visits, matching or not: in
        // a Redis shared with other namespaces most visited keys are not
        // ours, so each step visits generously and an audit takes a bounded
        // number of steps.
        let per_step = self.sample.max(SCAN_STEP);
        for _ in 0..SCAN_STEPS {
            let (next, entries) = self.l2.scan_products(self.cursor, per_step).await?;
            self.cursor = next;
            out.extend(entries);
            if out.len() >= self.sample || next == 0 {
                break;
            }
        }
        out.truncate(self.sample);
        Ok(out)
    }

    /// Entries that would answer a reader wrongly: a value older than the
    /// row, a value of a deleted row, or "not found" for a row that exists.
    async fn compare(&self, entries: &[(ProductId, Entry)]) -> anyhow::Result<Vec<Stale>> {
        let answering: Vec<&(ProductId, Entry)> = entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Value(_) | State::Absent))
            .collect();
        if answering.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<ProductId> = answering.iter().map(|(id, _)| *id).collect();
        let current: HashMap<ProductId, Version> =
            self.db.versions(&ids).await?.into_iter().collect();
        Ok(answering
            .into_iter()
            .filter_map(|(id, entry)| {
                let now = current.get(id).copied();
                let stale = match (&entry.state, now) {
                    (State::Value(_), Some(v)) => entry.version < v,
                    (State::Value(_), None) => true,
                    (State::Absent, Some(_)) => true,
                    _ => false,
                };
                stale.then(|| Stale {
                    id: *id,
                    cached: matches!(entry.state, State::Value(_)).then_some(entry.version),
                    current: now,
                })
            })
            .collect())
    }

    async fn fix(&self, stale: &Stale) -> anyhow::Result<()> {
        match (stale.current, stale.cached) {
            (Some(v), _) => {
                self.l2.fence(stale.id, v, FenceKind::Tombstone).await?;
            }
            (None, Some(cached)) => {
                self.l2
                    .fence(stale.id, cached.next(), FenceKind::Deleted)
                    .await?;
            }
            (None, None) => {}
        }
        metrics::counter!("cache_audit_repaired_total").increment(1);
        Ok(())
    }
}
