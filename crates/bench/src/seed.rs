//! `seed`: fills the catalog through write-api's `POST /products/bulk`.
//!
//! Batches of at most 1000 generated products go out a few at a time; each
//! batch is all-or-nothing on the server, so a failure stops the run with
//! the server's error and nothing half-written in that batch. The created
//! ids are written, in product order, one per line, for `load` and
//! `freshness`.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{generate::ProductGen, progress, report};

/// write-api's limit per bulk request.
pub const MAX_BATCH: usize = 1000;

/// What to seed and where.
#[derive(Debug, Clone)]
pub struct SeedOpts {
    /// write-api base URL, e.g. `http://127.0.0.1:8081`.
    pub write_url: String,
    /// An admin bearer token.
    pub token: String,
    /// How many products to create.
    pub products: u64,
    /// Products per bulk request (1..=1000).
    pub batch: usize,
    /// Bulk requests in flight at once.
    pub concurrency: usize,
    /// How many categories of the built-in list to use.
    pub categories: usize,
    /// Fraction of products marked `featured`.
    pub featured_ratio: f64,
    /// RNG seed: the same seed gives the same catalog.
    pub seed: u64,
    /// SKUs are `<prefix>-<index>`; a new prefix never conflicts with an
    /// earlier run.
    pub sku_prefix: String,
    /// Where to write the created ids (one per line); `None` to skip.
    pub ids_out: Option<PathBuf>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Default for SeedOpts {
    fn default() -> Self {
        Self {
            write_url: "http://127.0.0.1:8081".into(),
            token: String::new(),
            products: 1000,
            batch: MAX_BATCH,
            concurrency: 4,
            categories: 20,
            featured_ratio: 0.05,
            seed: 42,
            sku_prefix: default_sku_prefix(),
            ids_out: Some(PathBuf::from(".bench/ids.txt")),
            progress: true,
        }
    }
}

/// A prefix unique per run: `b` and the current time in milliseconds, base 36.
pub fn default_sku_prefix() -> String {
    let mut millis = chrono::Utc::now().timestamp_millis().unsigned_abs();
    let mut digits = Vec::new();
    while millis > 0 {
        let d = (millis % 36) as u8;
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        millis /= 36;
    }
    digits.reverse();
    format!("b{}", String::from_utf8_lossy(&digits))
}

/// What a seed run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedReport {
    pub schema_version: u32,
    /// Always `"seed"`.
    pub kind: String,
    pub started_at: String,
    pub write_url: String,
    /// Products created.
    pub created: u64,
    pub sku_prefix: String,
    pub seed: u64,
    pub elapsed_s: f64,
    pub products_per_s: f64,
    /// Where the ids went, if anywhere.
    pub ids_out: Option<PathBuf>,
    /// The created ids in product order.
    #[serde(skip)]
    pub ids: Vec<i64>,
}

impl std::fmt::Display for SeedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seeded {} products in {:.2} s ({:.0} products/s) via {}, sku prefix {:?}",
            self.created, self.elapsed_s, self.products_per_s, self.write_url, self.sku_prefix
        )?;
        if let Some(path) = &self.ids_out {
            write!(f, "; ids in {}", path.display())?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct BulkCreated {
    ids: Vec<i64>,
}

/// Creates `opts.products` products and returns their ids.
pub async fn run(opts: SeedOpts) -> anyhow::Result<SeedReport> {
    if !(1..=MAX_BATCH).contains(&opts.batch) {
        bail!("--batch must be 1..={MAX_BATCH}, got {}", opts.batch);
    }
    if opts.sku_prefix.len() > 50
        || !opts
            .sku_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        bail!("--sku-prefix must be at most 50 of [A-Za-z0-9._-]");
    }
    let generator = ProductGen::new(
        opts.seed,
        opts.categories,
        opts.featured_ratio,
        &opts.sku_prefix,
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = format!("{}/products/bulk", opts.write_url.trim_end_matches('/'));
    let bar = progress::bar(opts.products, "products", opts.progress);
    let started_at = report::now_rfc3339();
    let start = Instant::now();

    let batch = opts.batch as u64;
    let batches = (0..opts.products.div_ceil(batch)).map(|b| {
        let range = b * batch..((b + 1) * batch).min(opts.products);
        let (client, url, generator, bar) = (&client, &url, &generator, &bar);
        let token = opts.token.as_str();
        async move {
            let products: Vec<_> = range.clone().map(|i| generator.product(i)).collect();
            let ids = post_batch(client, url, token, &json!({ "products": products }))
                .await
                .with_context(|| format!("creating products {}..{}", range.start, range.end))?;
            if ids.len() as u64 != range.end - range.start {
                bail!(
                    "write-api returned {} ids for {} products",
                    ids.len(),
                    range.end - range.start
                );
            }
            bar.inc(ids.len() as u64);
            Ok(ids)
        }
    });
    // `buffered` keeps batch order, so ids line up with product indexes.
    let ids: Vec<i64> = futures::stream::iter(batches)
        .buffered(opts.concurrency.max(1))
        .try_concat()
        .await?;
    let elapsed = start.elapsed().as_secs_f64();
    bar.finish_and_clear();

    if let Some(path) = &opts.ids_out {
        write_ids(path, &ids)?;
    }
    Ok(SeedReport {
        schema_version: report::SCHEMA_VERSION,
        kind: "seed".into(),
        started_at,
        write_url: opts.write_url.clone(),
        created: ids.len() as u64,
        sku_prefix: opts.sku_prefix.clone(),
        seed: opts.seed,
        elapsed_s: elapsed,
        products_per_s: if elapsed > 0.0 {
            ids.len() as f64 / elapsed
        } else {
            0.0
        },
        ids_out: opts.ids_out.clone(),
        ids,
    })
}

async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> anyhow::Result<Vec<i64>> {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    if status != reqwest::StatusCode::CREATED {
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(500).collect();
        bail!("POST {url} answered {status}: {text}");
    }
    Ok(response.json::<BulkCreated>().await?.ids)
}

/// Writes one id per line, creating the parent directory.
pub fn write_ids(path: &std::path::Path, ids: &[i64]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut text = String::with_capacity(ids.len() * 8);
    for id in ids {
        text.push_str(&id.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_prefixes_are_valid_skus() {
        let p = default_sku_prefix();
        assert!(p.starts_with('b') && p.len() < 20, "{p}");
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
