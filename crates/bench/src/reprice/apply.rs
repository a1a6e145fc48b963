//! The apply: every id gets a new price through `PATCH /products/bulk`,
//! `concurrency` batches in flight, each on a keep-alive connection of its
//! own. Each batch's 200 is handed on at once (for freshness sampling) with
//! the versions it gave.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use bytes::Bytes;
use hyper::{
    HeaderMap, Method, StatusCode, Uri,
    header::{self, HeaderValue},
};
use serde::Deserialize;
use serde_json::json;
use tokio::{sync::mpsc, time::Instant};

use crate::{
    http::{self, Conn, Target},
    stats::OpStats,
};

/// A bulk request of 1000 items takes write-api well under a second; this
/// only bounds a stuck server (as `seed`'s client does).
const BULK_TIMEOUT: Duration = Duration::from_secs(120);

/// Prices are `100 × (1 + r) + c` cents with `r < PRICE_STEPS` and
/// `c < 99`: at most $1,000,000.98, inside the product schema's
/// `0..=10^12`.
const PRICE_STEPS: u64 = 1_000_000;

/// The price `id` gets in the run with `seed`. Never ends in 99 cents, as
/// every price `seed` generates does, and for one id distinct seeds (below
/// `99 × PRICE_STEPS`) give distinct prices: each run changes every price
/// a seeded catalog or an earlier run with another seed left.
pub fn new_price(id: i64, seed: u64) -> i64 {
    let k = seed % (99 * PRICE_STEPS);
    let (cents, step) = (k % 99, k / 99);
    let spread = splitmix64(id.unsigned_abs()) % PRICE_STEPS;
    let price = 100 * (1 + (step + spread) % PRICE_STEPS) + cents;
    // Below 10^8 + 99: always fits.
    i64::try_from(price).unwrap_or(i64::MAX)
}

/// Spreads consecutive ids over the price range.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One product of a bulk answer: its version after the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(super) struct Item {
    pub id: i64,
    pub version: u64,
}

#[derive(Deserialize)]
struct BulkPatched {
    items: Vec<Item>,
}

/// One batch's 200: its products' versions, and when the answer arrived.
#[derive(Debug)]
pub(super) struct Acked {
    pub items: Vec<Item>,
    pub at: Instant,
}

/// write-api and the prepared batches, before the clock starts.
pub(super) struct Batches {
    writer: Target,
    uri: Uri,
    /// `Host`, `Authorization` and `Content-Type`.
    headers: HeaderMap,
    /// The ids of each batch, in id order.
    ids: Vec<Vec<i64>>,
    /// Each batch's request body.
    bodies: Vec<Bytes>,
}

impl Batches {
    /// Splits `ids` into batches of `size` and builds their bodies.
    pub(super) fn prepare(
        write_url: &str,
        token: &str,
        ids: &[i64],
        size: usize,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let writer = Target::parse(write_url)?;
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        let headers = writer.headers(&[
            (header::AUTHORIZATION, auth),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ]);
        let ids: Vec<Vec<i64>> = ids.chunks(size.max(1)).map(<[i64]>::to_vec).collect();
        let bodies = ids
            .iter()
            .map(|batch| {
                let items: Vec<_> = batch
                    .iter()
                    .map(|&id| json!({ "id": id, "patch": { "price_cents": new_price(id, seed) } }))
                    .collect();
                serde_json::to_vec(&json!({ "items": items })).map(Bytes::from)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            uri: writer.uri("/products/bulk")?,
            writer,
            headers,
            ids,
            bodies,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// What the apply did.
pub(super) struct Applied {
    /// The bulk requests: counts, errors and latency.
    pub requests: OpStats,
    /// Every acknowledged product with the version its 200 gave.
    pub items: Vec<Item>,
    /// From the first request sent to the last 200 received (zero when
    /// nothing was acknowledged).
    pub elapsed: Duration,
    /// From the first request sent to the last answer of any kind.
    pub span: Duration,
    /// Status and start of the body of the first failed request.
    pub first_error: Option<String>,
}

/// One sender's share of the run.
struct Sent {
    stats: OpStats,
    items: Vec<Item>,
    first_sent: Option<Instant>,
    last_answer: Option<Instant>,
    last_ack: Option<Instant>,
    first_error: Option<String>,
}

/// Sends every batch, `concurrency` at a time (batch n no sooner than
/// n × `pace` after the start, when paced), passing each 200 to `acks`
/// as it arrives. A failed batch is counted and the run goes on (each
/// batch is all or nothing); a 200 that does not hold one version per item
/// stops it.
pub(super) async fn apply(
    batches: Arc<Batches>,
    concurrency: usize,
    pace: Option<Duration>,
    acks: mpsc::UnboundedSender<Acked>,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<Applied> {
    // One shared cursor: a sender takes the next batch when it is free.
    let next = Arc::new(AtomicUsize::new(0));
    let schedule = pace.map(|every| (Instant::now(), every));
    let senders: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            tokio::spawn(send_batches(
                Arc::clone(&batches),
                Arc::clone(&next),
                schedule,
                acks.clone(),
                bar.clone(),
            ))
        })
        .collect();
    let mut applied = Applied {
        requests: OpStats::new(false),
        items: Vec::with_capacity(batches.ids.iter().map(Vec::len).sum()),
        elapsed: Duration::ZERO,
        span: Duration::ZERO,
        first_error: None,
    };
    let (mut first_sent, mut last_answer, mut last_ack) = (None, None, None);
    for sender in senders {
        let sent = sender.await.context("a bulk sender panicked")??;
        applied.requests.absorb(&sent.stats);
        applied.items.extend(sent.items);
        applied.first_error = applied.first_error.or(sent.first_error);
        first_sent = first_sent.into_iter().chain(sent.first_sent).min();
        last_answer = last_answer.into_iter().chain(sent.last_answer).max();
        last_ack = last_ack.into_iter().chain(sent.last_ack).max();
    }
    let since_first = |to: Option<Instant>| match (first_sent, to) {
        (Some(from), Some(to)) => to.saturating_duration_since(from),
        _ => Duration::ZERO,
    };
    applied.elapsed = since_first(last_ack);
    applied.span = since_first(last_answer);
    Ok(applied)
}

/// One connection's loop: takes batches until none is left.
async fn send_batches(
    batches: Arc<Batches>,
    next: Arc<AtomicUsize>,
    schedule: Option<(Instant, Duration)>,
    acks: mpsc::UnboundedSender<Acked>,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<Sent> {
    let mut conn = Conn::new(&batches.writer, BULK_TIMEOUT);
    let mut out = Sent {
        stats: OpStats::new(false),
        items: Vec::new(),
        first_sent: None,
        last_answer: None,
        last_ack: None,
        first_error: None,
    };
    loop {
        let b = next.fetch_add(1, Ordering::Relaxed);
        let (Some(ids), Some(body)) = (batches.ids.get(b), batches.bodies.get(b)) else {
            break;
        };
        if let Some((start, every)) = schedule {
            let n = u32::try_from(b).unwrap_or(u32::MAX);
            tokio::time::sleep_until(start + every * n).await;
        }
        let req = http::request(
            Method::PATCH,
            batches.uri.clone(),
            batches.headers.clone(),
            body.clone(),
        );
        let sent = Instant::now();
        out.first_sent.get_or_insert(sent);
        let result = conn.send(req, true).await;
        let at = Instant::now();
        out.last_answer = Some(at);
        out.stats.record(&result, at - sent, at - sent);
        let answer = match result {
            Ok(answer) if answer.status == StatusCode::OK => answer,
            Ok(answer) => {
                out.first_error.get_or_insert_with(|| {
                    let body = answer.body.unwrap_or_default();
                    let text: String = String::from_utf8_lossy(&body).chars().take(300).collect();
                    format!("{}: {text}", answer.status)
                });
                continue;
            }
            Err(e) => {
                out.first_error
                    .get_or_insert_with(|| format!("{e}: no answer from {}", batches.writer.base));
                continue;
            }
        };
        let items = versions(answer.body.as_deref().unwrap_or_default(), ids)
            .with_context(|| format!("PATCH {}/products/bulk", batches.writer.base))?;
        out.last_ack = Some(at);
        bar.inc(items.len() as u64);
        // The sampler may be gone only when the run is failing anyway.
        let _ = acks.send(Acked {
            items: items.clone(),
            at,
        });
        out.items.extend(items);
    }
    Ok(out)
}

/// The items of a 200, checked against the batch's ids (request order).
fn versions(body: &[u8], ids: &[i64]) -> anyhow::Result<Vec<Item>> {
    let items = serde_json::from_slice::<BulkPatched>(body)
        .context("the 200's body is not {\"items\": [{\"id\", \"version\"}, ...]}")?
        .items;
    if items.len() != ids.len() || items.iter().zip(ids).any(|(item, id)| item.id != *id) {
        bail!(
            "the 200 names {} products, not the {} sent, in request order",
            items.len(),
            ids.len()
        );
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_valid_and_differ_between_seeds() {
        for id in [1, 2, 42, 99_999, i64::MAX] {
            let mut seen = std::collections::HashSet::new();
            for seed in (0..500).chain([1_764_000_000_000, u64::MAX]) {
                let price = new_price(id, seed);
                assert!((100..=100_000_098).contains(&price), "{price}");
                assert_ne!(price % 100, 99, "{price} looks like a seeded price");
                assert!(seen.insert(price), "seed {seed} repeats {price} for {id}");
            }
        }
        // Neighbouring ids do not get neighbouring prices.
        assert_ne!(new_price(1, 7) + 100, new_price(2, 7));
    }

    #[test]
    fn answers_must_match_the_batch() {
        let ok = br#"{"items": [{"id": 5, "version": 3}, {"id": 6, "version": 9}]}"#;
        assert_eq!(
            versions(ok, &[5, 6]).unwrap(),
            vec![Item { id: 5, version: 3 }, Item { id: 6, version: 9 }]
        );
        assert!(versions(ok, &[6, 5]).is_err());
        assert!(versions(ok, &[5]).is_err());
        assert!(versions(b"{}", &[5]).is_err());
    }
}
