//! The shared scoreboard: per (instance, product), the highest version
//! seen, the writes not yet visible, and the lags and anomalies counted so
//! far. Writers and readers update it under a short lock, never held
//! across an await.

use std::{
    collections::VecDeque,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

/// A write acknowledged by write-api, not yet seen on one instance.
#[derive(Debug, Clone, Copy)]
struct Pending {
    version: u64,
    acked_at: Instant,
}

/// What is known about one product on one instance.
#[derive(Debug, Default)]
struct Cell {
    /// Highest version any reader got from this instance.
    max_seen: u64,
    /// When the first answer with `max_seen` arrived.
    max_seen_at: Option<Instant>,
    pending: VecDeque<Pending>,
    /// Lags of converged writes, µs.
    lags: Vec<u64>,
    timeouts: u64,
    stale: u64,
}

impl Cell {
    /// Accounts one answer with `version`, sent at `sent`, received at `recv`.
    fn observe(&mut self, version: u64, sent: Instant, recv: Instant, write_timeout: Duration) {
        if self.max_seen_at.is_some_and(|at| sent > at) && version < self.max_seen {
            self.stale += 1;
        }
        if version > self.max_seen {
            self.max_seen = version;
            self.max_seen_at = Some(recv);
        }
        let lags = &mut self.lags;
        // Acks can arrive out of version order (concurrent writers), so
        // scan all rather than pop from the front.
        self.pending.retain(|p| {
            if p.version <= version {
                lags.push(micros(recv.saturating_duration_since(p.acked_at)));
                false
            } else {
                true
            }
        });
        self.expire(recv, write_timeout);
    }

    /// Drops writes pending for longer than the timeout, counting them.
    fn expire(&mut self, now: Instant, write_timeout: Duration) {
        let before = self.pending.len();
        self.pending
            .retain(|p| now.saturating_duration_since(p.acked_at) <= write_timeout);
        self.timeouts += (before - self.pending.len()) as u64;
    }

    /// Registers an acknowledged write (lag 0 if already seen here).
    fn acknowledge(&mut self, version: u64, acked_at: Instant) {
        if self.max_seen >= version {
            self.lags.push(0);
        } else {
            self.pending.push_back(Pending { version, acked_at });
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What one instance showed over a run.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Lags of converged (write, instance) pairs, µs.
    pub lags: Vec<u64>,
    /// Writes never shown within the timeout (including those still
    /// pending at the end).
    pub timeouts: u64,
    pub stale: u64,
}

/// Shared between writers and readers.
pub(super) struct Board {
    /// `instances × products` cells, instance-major.
    cells: Vec<Mutex<Cell>>,
    instances: usize,
    products: usize,
    /// Per product: the latest acknowledged version, to wake its readers.
    written: Vec<watch::Sender<u64>>,
    write_timeout: Duration,
    /// Acknowledged writes, for the progress bar.
    acked: AtomicU64,
}

impl Board {
    pub(super) fn new(instances: usize, products: usize, write_timeout: Duration) -> Self {
        Self {
            cells: (0..instances * products)
                .map(|_| Mutex::new(Cell::default()))
                .collect(),
            instances,
            products,
            written: (0..products).map(|_| watch::channel(0).0).collect(),
            write_timeout,
            acked: AtomicU64::new(0),
        }
    }

    fn cell(&self, instance: usize, product: usize) -> MutexGuard<'_, Cell> {
        // A poisoned lock means a task panicked mid-update of a few
        // counters; they are still the best numbers we have.
        self.cells[instance * self.products + product]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// write-api acknowledged `version` of `product` at `acked_at`: every
    /// instance now owes it, and the product's readers wake up.
    pub(super) fn acknowledge(&self, product: usize, version: u64, acked_at: Instant) {
        for instance in 0..self.instances {
            self.cell(instance, product).acknowledge(version, acked_at);
        }
        self.written[product].send_modify(|v| *v = (*v).max(version));
        self.acked.fetch_add(1, Ordering::Relaxed);
    }

    /// Wakes when a write to `product` is acknowledged.
    pub(super) fn subscribe(&self, product: usize) -> watch::Receiver<u64> {
        self.written[product].subscribe()
    }

    pub(super) fn has_pending(&self, instance: usize, product: usize) -> bool {
        !self.cell(instance, product).pending.is_empty()
    }

    /// Accounts an answer showing `version`; returns whether it made the
    /// last pending write visible.
    pub(super) fn observe(
        &self,
        instance: usize,
        product: usize,
        version: u64,
        sent: Instant,
        recv: Instant,
    ) -> bool {
        let mut cell = self.cell(instance, product);
        let had_pending = !cell.pending.is_empty();
        cell.observe(version, sent, recv, self.write_timeout);
        had_pending && cell.pending.is_empty()
    }

    /// A read without a version: only time passes.
    pub(super) fn expire(&self, instance: usize, product: usize, now: Instant) {
        self.cell(instance, product).expire(now, self.write_timeout);
    }

    pub(super) fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Everything `instance` showed, over all products; what is still
    /// pending counts as timed out.
    pub(super) fn tally(&self, instance: usize) -> Tally {
        let mut tally = Tally::default();
        for product in 0..self.products {
            let cell = self.cell(instance, product);
            tally.lags.extend_from_slice(&cell.lags);
            tally.timeouts += cell.timeouts + cell.pending.len() as u64;
            tally.stale += cell.stale;
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn lag_runs_from_ack_to_first_answer() {
        let t0 = Instant::now();
        let mut cell = Cell::default();
        cell.observe(1, t0, t0, T);
        cell.acknowledge(2, t0);
        cell.observe(1, t0, t0 + Duration::from_millis(1), T);
        assert!(cell.lags.is_empty());
        cell.observe(2, t0, t0 + Duration::from_millis(3), T);
        assert_eq!(cell.lags, vec![3000]);
        assert!(cell.pending.is_empty());
        // Already visible before the ack: lag 0.
        cell.acknowledge(2, t0 + Duration::from_millis(4));
        assert_eq!(cell.lags, vec![3000, 0]);
        assert_eq!(cell.stale, 0);
    }

    #[test]
    fn one_answer_resolves_every_older_write_in_any_order() {
        let t0 = Instant::now();
        let mut cell = Cell::default();
        cell.acknowledge(5, t0);
        cell.acknowledge(4, t0 + Duration::from_millis(1));
        cell.acknowledge(7, t0 + Duration::from_millis(1));
        cell.observe(6, t0, t0 + Duration::from_millis(2), T);
        assert_eq!(cell.lags, vec![2000, 1000]);
        assert_eq!(cell.pending.len(), 1);
    }

    #[test]
    fn stale_only_counts_reads_sent_after_convergence() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut cell = Cell::default();
        cell.observe(3, t0, t0 + ms(2), T);
        // Overlapping read (sent before v3 arrived) may still show v2.
        cell.observe(2, t0 + ms(1), t0 + ms(3), T);
        assert_eq!(cell.stale, 0);
        // Sent after v3 arrived: stale.
        cell.observe(2, t0 + ms(4), t0 + ms(5), T);
        assert_eq!(cell.stale, 1);
    }

    #[test]
    fn writes_never_seen_time_out() {
        let t0 = Instant::now();
        let mut cell = Cell::default();
        cell.acknowledge(2, t0);
        cell.observe(1, t0, t0 + Duration::from_secs(6), T);
        assert_eq!((cell.timeouts, cell.pending.len()), (1, 0));
        assert!(cell.lags.is_empty());
    }
}
