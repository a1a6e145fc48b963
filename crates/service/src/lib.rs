//! What the three services share that is not domain logic: settings (the
//! contract's configuration table), logging and metrics set-up, shutdown
//! signals, and the HTTP plumbing both APIs use (the JSON error envelope,
//! bounded JSON bodies, request metrics, probes).
//!
//! It sits at the service level: `domain`, `store`, `cache` and `bus` know
//! nothing of it, nor of HTTP.

pub mod http;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use settings::{ConfigError, InvalidatorMode, Settings};
