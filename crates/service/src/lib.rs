//! What the three services share that is not domain logic: the service
//! scaffold ([`app`]: build, serve, supervise, stop), settings (the
//! configuration table of docs/operations.md), logging, request spans and
//! metrics, the one retry policy, shutdown signals, and the HTTP plumbing
//! both APIs use (the JSON error envelope, bounded JSON bodies, request
//! metrics, probes).
//!
//! It sits at the service level: `domain`, `store`, `cache` and `bus` know
//! nothing of it, nor of HTTP.

pub mod app;
pub mod backoff;
pub mod http;
pub mod openapi;
pub mod redact;
pub mod settings;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;

pub use app::{Application, Builder, Http, Probe};
pub use backoff::Backoff;
pub use settings::{ConfigError, LogFormat, Settings};
