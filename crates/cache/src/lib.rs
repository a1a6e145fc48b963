//! The cache: every Redis key and script, and the in-process L1.
//!
//! One invariant rules both tiers: a cached version never goes backwards.
//! Entries carry the product's row version; a fill after a miss is a
//! compare-and-set that only writes over an absent or older entry; an
//! invalidation writes a tombstone carrying the committed version instead of
//! deleting, so a slow reader holding an older version cannot put it back.
//! The rules are written once, in [`entry`], and mirrored by the Lua
//! scripts in [`scripts`]; tests run the same table against both.

pub mod breaker;
mod conn;
pub mod entry;
pub mod keys;
pub mod l1;
pub mod l2;
mod scripts;
pub mod trending;

pub use breaker::Breaker;
pub use entry::{Entry, State};
pub use keys::{Family, Keys};
pub use l1::{L1, Lifetimes};
pub use l2::{FenceKind, L2, L2Config, ListHit, ProductOp};
pub use trending::ViewCounter;

/// A Redis failure, sorted by what the caller should do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    /// Redis is down, slow, or the breaker is open: skip the cache, and for
    /// the invalidator, retry later.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error for this particular command (say,
    /// WRONGTYPE): retrying the same input will fail again.
    #[error("redis refused the command: {0}")]
    Refused(String),
}

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            Self::Unavailable(e.to_string())
        } else if e.kind() == redis::ErrorKind::Extension {
            // An error code the client does not know, e.g. WRONGTYPE.
            Self::Refused(e.to_string())
        } else if matches!(e.kind(), redis::ErrorKind::Server(_)) {
            match e.kind() {
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::BusyLoading
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::MasterDown
                    | redis::ServerErrorKind::ReadOnly,
                ) => Self::Unavailable(e.to_string()),
                _ => Self::Refused(e.to_string()),
            }
        } else {
            Self::Unavailable(e.to_string())
        }
    }
}
