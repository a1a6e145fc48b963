//! The writer and reader tasks of a freshness run.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use hyper::{HeaderMap, Method, Uri};
use rand::{Rng, rngs::SmallRng};
use tokio::{sync::Barrier, time::Instant};
use tokio_util::sync::CancellationToken;

use super::board::Board;
use crate::{
    http::{self, ClientError, Conn},
    stats::OpStats,
};

/// Back-off after a failed connect (see `Reader::poll`).
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// One writer task: writes `index, index + count, …` of the global schedule.
pub(super) struct Writer {
    /// This writer's place in the schedule, and how many writers share it.
    pub index: usize,
    pub count: usize,
    /// Writes per second over all writers.
    pub rate: f64,
    pub start: Instant,
    pub end: Instant,
    pub conn: Conn,
    /// PATCH URI per product.
    pub uris: Vec<Uri>,
    /// `Host`, `Authorization` and `Content-Type`.
    pub headers: HeaderMap,
    pub board: Arc<Board>,
    /// Draws the written prices.
    pub rng: SmallRng,
    pub stats: OpStats,
}

impl Writer {
    /// Writes on schedule until `end`; returns the PATCHes' stats.
    pub(super) async fn run(mut self) -> OpStats {
        let products = self.uris.len();
        for n in 0.. {
            let i = self.index + n * self.count;
            let due = self.start + Duration::from_secs_f64(i as f64 / self.rate);
            if due >= self.end {
                break;
            }
            tokio::time::sleep_until(due).await;
            let product = i % products;
            let body = Bytes::from(format!(
                "{{\"price_cents\":{}}}",
                self.rng.random_range(100..=1_000_000u64)
            ));
            let req = http::request(
                Method::PATCH,
                self.uris[product].clone(),
                self.headers.clone(),
                body,
            );
            let sent = Instant::now();
            let result = self.conn.send(req, true).await;
            let acked_at = Instant::now();
            self.stats.record(&result, acked_at - sent, acked_at - sent);
            let version = match &result {
                Ok(a) if a.status.is_success() => a.etag_version().or_else(|| a.body_version()),
                _ => None,
            };
            if let Some(version) = version {
                self.board.acknowledge(product, version, acked_at);
            }
        }
        self.stats
    }
}

/// One polling task for one (instance, product).
pub(super) struct Reader {
    instance: usize,
    product: usize,
    conn: Conn,
    uri: Uri,
    headers: HeaderMap,
    board: Arc<Board>,
    pacing: Pacing,
    stats: OpStats,
    /// Times this task saw a version below one it had seen before.
    regressions: u64,
}

/// When readers poll (see the module docs of `freshness`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Pacing {
    /// Pause between polls while a write is pending.
    pub poll_interval: Duration,
    /// Reads right after convergence.
    pub verify_polls: u32,
    /// Read interval while nothing is pending.
    pub idle_poll: Duration,
}

impl Reader {
    /// A reader of `uri` (product `product`) on instance `instance`.
    pub(super) fn new(
        (instance, product): (usize, usize),
        conn: Conn,
        (uri, headers): (Uri, HeaderMap),
        board: Arc<Board>,
        pacing: Pacing,
    ) -> Self {
        Self {
            instance,
            product,
            conn,
            uri,
            headers,
            board,
            pacing,
            stats: OpStats::new(false),
            regressions: 0,
        }
    }

    /// Polls until stopped and nothing is pending; returns (instance,
    /// read stats, regressions).
    pub(super) async fn run(
        mut self,
        ready: Arc<Barrier>,
        stop: CancellationToken,
    ) -> (usize, OpStats, u64) {
        let mut written = self.board.subscribe(self.product);
        let mut last_seen = 0;
        self.poll(&mut last_seen).await;
        ready.wait().await;
        let mut verify_left = 0;
        loop {
            // Mark the notification seen *before* looking at the cell, so a
            // write landing in between still wakes us below.
            written.borrow_and_update();
            let pending = self.board.has_pending(self.instance, self.product);
            if pending || verify_left > 0 {
                if !pending {
                    verify_left -= 1;
                }
                if !self.pacing.poll_interval.is_zero() {
                    tokio::time::sleep(self.pacing.poll_interval).await;
                }
            } else if stop.is_cancelled() {
                break;
            } else {
                tokio::select! {
                    _ = written.changed() => {}
                    () = tokio::time::sleep(self.pacing.idle_poll) => {}
                    () = stop.cancelled() => continue,
                }
            }
            if self.poll(&mut last_seen).await {
                verify_left = self.pacing.verify_polls;
            }
        }
        (self.instance, self.stats, self.regressions)
    }

    /// One read; returns whether it resolved every pending write here.
    async fn poll(&mut self, last_seen: &mut u64) -> bool {
        let (uri, headers) = (&self.uri, &self.headers);
        let sent = Instant::now();
        let result = self
            .conn
            .send_idempotent(
                || http::request(Method::GET, uri.clone(), headers.clone(), Bytes::new()),
                true,
            )
            .await;
        let recv = Instant::now();
        self.stats.record(&result, recv - sent, recv - sent);
        let version = match &result {
            Ok(a) if a.status.is_success() => a.etag_version().or_else(|| a.body_version()),
            _ => None,
        };
        let Some(version) = version else {
            self.board.expire(self.instance, self.product, recv);
            if matches!(result, Err(ClientError::Connect)) {
                // Do not spin on a dead instance; the write timeout still
                // bounds how long we keep trying.
                tokio::time::sleep(CONNECT_BACKOFF).await;
            }
            return false;
        };
        if version < *last_seen {
            self.regressions += 1;
        }
        *last_seen = (*last_seen).max(version);
        self.board
            .observe(self.instance, self.product, version, sent, recv)
    }
}
