//! catalog-bench: the measuring instrument for Catalog's published numbers.
//!
//! Each subcommand is a library function so tests run the real thing
//! in-process:
//! - [`seed::run`] fills a catalog through write-api's bulk endpoint;
//! - [`load::run`] generates HTTP load and measures throughput, latency,
//!   cache tiers and Postgres queries per request;
//! - [`freshness::run`] measures how long a write takes to show on every
//!   read-api instance, and whether any instance ever serves an older
//!   version again;
//! - [`reprice`] reprices every product through write-api's bulk PATCH
//!   while a storefront load runs, and measures how fast and how
//!   completely the instances caught up;
//! - [`warm`] reads every product once on every instance (steady state);
//! - [`plot`] draws the reports as SVG.
//!
//! [`cli`] maps the command line onto these; `main.rs` only builds the
//! runtime and calls it.

pub mod cli;
pub mod cpu;
pub mod freshness;
pub mod generate;
pub mod http;
pub mod keys;
pub mod load;
pub mod metrics_scrape;
pub mod plot;
pub mod progress;
pub mod report;
pub mod reprice;
pub mod seed;
pub mod stats;
pub mod table;
pub mod warm;
