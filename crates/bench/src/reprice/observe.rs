//! What the read-api instances show: freshness samples while the batches
//! land, and one read of every repriced product once everything is done.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::{HeaderMap, Method, Uri};
use rand::{SeedableRng, rngs::SmallRng, seq::index};
use serde::{Deserialize, Serialize};
use tokio::{sync::mpsc, task::JoinSet, time::Instant};

use super::apply::{Acked, Item};
use crate::{
    http::{self, Answer, ClientError, Conn, Target},
    report,
};

/// Back-off after a failed connect, so a dead instance is not spun on.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// One read-api instance, with idle connections kept for reuse so that a
/// sample's first poll does not pay for a TCP connect.
pub(super) struct Instance {
    target: Target,
    headers: HeaderMap,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

impl Instance {
    pub(super) fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let target = Target::parse(url)?;
        Ok(Self {
            headers: target.headers(&[]),
            target,
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn url(&self) -> &str {
        &self.target.base
    }

    fn uri(&self, id: i64) -> anyhow::Result<Uri> {
        self.target.uri(&format!("/products/{id}"))
    }

    /// An idle connection, or a new one.
    fn take(&self) -> Conn {
        self.idle_conns()
            .pop()
            .unwrap_or_else(|| Conn::new(&self.target, self.timeout))
    }

    fn give_back(&self, conn: Conn) {
        self.idle_conns().push(conn);
    }

    fn idle_conns(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        // A panic cannot leave a Vec of connections half-updated.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// GET `uri` on `conn`: the answer, and when it arrived.
    async fn read(&self, conn: &mut Conn, uri: &Uri) -> (Result<Answer, ClientError>, Instant) {
        let result = conn
            .send_idempotent(
                || http::request(Method::GET, uri.clone(), self.headers.clone(), Bytes::new()),
                true,
            )
            .await;
        (result, Instant::now())
    }
}

/// The product's version in a successful answer: the body's `version`
/// (what a storefront renders), else the ETag.
fn version(result: &Result<Answer, ClientError>) -> Option<u64> {
    match result {
        Ok(a) if a.status.is_success() => a.body_version().or_else(|| a.etag_version()),
        _ => None,
    }
}

/// How samples are taken.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sampling {
    pub per_batch: usize,
    /// Pause between polls of one sample.
    pub poll_interval: Duration,
    /// A sample not converged this long after its 200 is a timeout.
    pub timeout: Duration,
    pub seed: u64,
}

/// What the samples measured.
pub(super) struct Samples {
    /// Lag from the bulk 200 to the first read showing its version, µs,
    /// per (sample, instance) that converged.
    pub lag: Histogram<u64>,
    pub timeouts: u64,
    /// Polls sent, and those without a successful answer.
    pub polls: u64,
    pub poll_errors: u64,
}

/// One (sample, instance): converged after `lag`, or timed out.
struct Poll {
    lag: Option<Duration>,
    polls: u64,
    errors: u64,
}

/// For each acknowledged batch, as it arrives, polls `per_batch` of its
/// products on every instance until each shows the acknowledged version.
/// Returns once `acks` is closed and every sample has ended.
pub(super) async fn sample(
    instances: Arc<[Instance]>,
    mut acks: mpsc::UnboundedReceiver<Acked>,
    sampling: Sampling,
) -> anyhow::Result<Samples> {
    let mut rng = SmallRng::seed_from_u64(sampling.seed);
    let mut polls = JoinSet::new();
    while let Some(batch) = acks.recv().await {
        let n = sampling.per_batch.min(batch.items.len());
        for i in index::sample(&mut rng, batch.items.len(), n) {
            for instance in 0..instances.len() {
                polls.spawn(converge(
                    Arc::clone(&instances),
                    instance,
                    batch.items[i],
                    batch.at,
                    sampling,
                ));
            }
        }
    }
    let mut samples = Samples {
        lag: report::histogram(),
        timeouts: 0,
        polls: 0,
        poll_errors: 0,
    };
    while let Some(poll) = polls.join_next().await {
        let poll = poll.context("a sampling task panicked")??;
        match poll.lag {
            Some(lag) => report::record(&mut samples.lag, lag),
            None => samples.timeouts += 1,
        }
        samples.polls += poll.polls;
        samples.poll_errors += poll.errors;
    }
    Ok(samples)
}

/// Polls `item` on one instance until it shows `item.version` or the
/// sampling timeout passes.
async fn converge(
    instances: Arc<[Instance]>,
    instance: usize,
    item: Item,
    acked_at: Instant,
    sampling: Sampling,
) -> anyhow::Result<Poll> {
    let instance = &instances[instance];
    let uri = instance.uri(item.id)?;
    let mut conn = instance.take();
    let mut poll = Poll {
        lag: None,
        polls: 0,
        errors: 0,
    };
    loop {
        let (result, at) = instance.read(&mut conn, &uri).await;
        poll.polls += 1;
        match version(&result) {
            Some(seen) if seen >= item.version => {
                poll.lag = Some(at.saturating_duration_since(acked_at));
                break;
            }
            Some(_) => {}
            None => poll.errors += 1,
        }
        if at.saturating_duration_since(acked_at) >= sampling.timeout {
            break;
        }
        let pause = if matches!(result, Err(ClientError::Connect)) {
            CONNECT_BACKOFF
        } else {
            sampling.poll_interval
        };
        tokio::time::sleep(pause).await;
    }
    instance.give_back(conn);
    Ok(poll)
}

/// A read, after everything converged, below the acknowledged version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleRead {
    /// The instance's base URL.
    pub url: String,
    pub id: i64,
    /// The version the instance answered with.
    pub seen: u64,
    /// The version write-api's 200 gave.
    pub expected: u64,
}

/// Stale reads listed in the report at most (all are counted).
const STALE_LISTED: usize = 10;

/// What the convergence check found.
pub(super) struct Verified {
    pub reads: u64,
    pub stale: u64,
    /// The first [`STALE_LISTED`] stale reads.
    pub stale_examples: Vec<StaleRead>,
    /// Reads without a successful answer.
    pub errors: u64,
}

/// Reads every item once on every instance, `connections` reads in
/// flight, and counts answers below the acknowledged version.
pub(super) async fn verify(
    instances: Arc<[Instance]>,
    items: Arc<[Item]>,
    connections: usize,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<Verified> {
    // One shared cursor over (item, instance) pairs, instances interleaved
    // so each is read at the same pace.
    let next = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let (instances, items, next, bar) = (
                Arc::clone(&instances),
                Arc::clone(&items),
                Arc::clone(&next),
                bar.clone(),
            );
            tokio::spawn(async move {
                let mut conns: Vec<Conn> = instances.iter().map(Instance::take).collect();
                let mut found = Verified {
                    reads: 0,
                    stale: 0,
                    stale_examples: Vec::new(),
                    errors: 0,
                };
                loop {
                    let pair = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(pair / instances.len()) else {
                        break;
                    };
                    let i = pair % instances.len();
                    let (result, _) = instances[i]
                        .read(&mut conns[i], &instances[i].uri(item.id)?)
                        .await;
                    found.reads += 1;
                    match version(&result) {
                        Some(seen) if seen < item.version => {
                            found.stale += 1;
                            if found.stale_examples.len() < STALE_LISTED {
                                found.stale_examples.push(StaleRead {
                                    url: instances[i].url().to_owned(),
                                    id: item.id,
                                    seen,
                                    expected: item.version,
                                });
                            }
                        }
                        Some(_) => {}
                        None => found.errors += 1,
                    }
                    bar.inc(1);
                }
                anyhow::Ok(found)
            })
        })
        .collect();
    let mut total = Verified {
        reads: 0,
        stale: 0,
        stale_examples: Vec::new(),
        errors: 0,
    };
    for reader in readers {
        let found = reader.await.context("a verifying reader panicked")??;
        total.reads += found.reads;
        total.stale += found.stale;
        total.errors += found.errors;
        total.stale_examples.extend(found.stale_examples);
    }
    total.stale_examples.truncate(STALE_LISTED);
    Ok(total)
}
