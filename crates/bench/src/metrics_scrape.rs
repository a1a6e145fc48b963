//! Postgres load as the services count it: `catalog_db_queries_total` from
//! each instance's `/metrics`, summed over all label sets, scraped before
//! and after the measured window.

use serde::{Deserialize, Serialize};

/// The counter every service increments once per Postgres query.
pub const DB_QUERIES: &str = "catalog_db_queries_total";

/// Sums every sample of the metric `name` in a Prometheus text exposition
/// (0 when absent). Lines look like `name{label="v",…} 123` or `name 123`,
/// optionally followed by a timestamp.
pub fn sum_metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix(name)?;
            let rest = if let Some(labels) = rest.strip_prefix('{') {
                &labels[label_block_end(labels)?..]
            } else if rest.starts_with([' ', '\t']) {
                rest
            } else {
                // A longer name with this prefix (e.g. `name_created`).
                return None;
            };
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .filter(|v| v.is_finite())
        .sum()
}

/// Index just past the `}` closing a label block, skipping quoted values
/// (which may contain `}` or escaped quotes).
fn label_block_end(labels: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// Fetches `url` and sums [`DB_QUERIES`]. `Err` when the endpoint does not
/// answer 200 (then the report says "not available" instead of inventing 0).
pub async fn scrape_db_queries(client: &reqwest::Client, url: &str) -> anyhow::Result<f64> {
    let response = client.get(url).send().await?.error_for_status()?;
    Ok(sum_metric(&response.text().await?, DB_QUERIES))
}

/// One instance's counter around the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceQueries {
    /// The scraped `/metrics` URL.
    pub metrics_url: String,
    /// Counter before and after; `None` when that scrape failed.
    pub before: Option<f64>,
    pub after: Option<f64>,
}

impl InstanceQueries {
    /// Queries during the window, when both scrapes worked.
    pub fn delta(&self) -> Option<f64> {
        Some((self.after? - self.before?).max(0.0))
    }
}

/// Postgres queries during a window, over all scraped instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbQueries {
    pub instances: Vec<InstanceQueries>,
    /// Sum of the deltas; `None` if any instance could not be scraped (a
    /// partial sum would understate the load).
    pub total: Option<f64>,
    /// `total` per 1000 requests of the window (reads and writes).
    pub per_1000_requests: Option<f64>,
    /// `total` per 1000 reads of the window.
    pub per_1000_reads: Option<f64>,
}

impl DbQueries {
    /// Totals `instances` against the window's request counts.
    pub fn new(instances: Vec<InstanceQueries>, requests: u64, reads: u64) -> Self {
        let total = instances
            .iter()
            .map(InstanceQueries::delta)
            .sum::<Option<f64>>()
            .filter(|_| !instances.is_empty());
        let per_1000 = |n: u64| total.filter(|_| n > 0).map(|t| t * 1000.0 / n as f64);
        Self {
            per_1000_requests: per_1000(requests),
            per_1000_reads: per_1000(reads),
            total,
            instances,
        }
    }
}

/// Scrapes every URL and returns the counters (`None` where it failed,
/// with a warning on stderr).
pub async fn scrape_all(client: &reqwest::Client, urls: &[String]) -> Vec<Option<f64>> {
    let scrapes = urls.iter().map(|url| async move {
        match scrape_db_queries(client, url).await {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("warning: could not scrape {url}: {e}");
                None
            }
        }
    });
    futures::future::join_all(scrapes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_label_set() {
        let text = "\
# HELP catalog_db_queries_total Postgres queries
# TYPE catalog_db_queries_total counter
catalog_db_queries_total{query=\"product\"} 123
catalog_db_queries_total{query=\"list\",odd=\"a}b \\\"c\"} 7 1700000000000
catalog_db_queries_total_created 99
catalog_db_queries_totalx 5
other_total{query=\"product\"} 1000
catalog_db_queries_total 10
";
        assert_eq!(sum_metric(text, DB_QUERIES), 140.0);
    }

    #[test]
    fn absent_metric_is_zero() {
        assert_eq!(sum_metric("http_requests_total 5\n", DB_QUERIES), 0.0);
        assert_eq!(sum_metric("", DB_QUERIES), 0.0);
    }

    #[test]
    fn totals_need_every_instance() {
        let ok = |b, a| InstanceQueries {
            metrics_url: "x".into(),
            before: Some(b),
            after: Some(a),
        };
        let q = DbQueries::new(vec![ok(10.0, 20.0), ok(0.0, 5.0)], 3000, 1500);
        assert_eq!(q.total, Some(15.0));
        assert_eq!(q.per_1000_requests, Some(5.0));
        assert_eq!(q.per_1000_reads, Some(10.0));
        let broken = InstanceQueries {
            before: None,
            ..ok(0.0, 1.0)
        };
        let q = DbQueries::new(vec![ok(10.0, 20.0), broken], 3000, 3000);
        assert_eq!((q.total, q.per_1000_requests), (None, None));
        assert_eq!(DbQueries::new(vec![], 10, 10).total, None);
    }
}
