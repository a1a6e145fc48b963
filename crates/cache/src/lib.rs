//! The cache: every Redis key and script, and the in-process L1.
//!
//! One invariant rules both tiers: a cached version never goes backwards.
//! Entries carry the product's row version; a fill after a miss is a
//! compare-and-set that only writes over an absent or older entry; an
//! invalidation writes a tombstone carrying the committed version instead of
//! deleting, so a slow reader holding an older version cannot put it back.
//! The rules are written once, in [`entry`], and mirrored by the Lua
//! scripts in [`scripts`]; tests run the same table against both.
//!
//! What an event asks of a cache is decided once, in [`plan`], for Redis
//! (the invalidator) and for L1 (each read-api instance) alike.

pub mod breaker;
mod conn;
pub mod entry;
mod error;
pub mod floors;
pub mod keys;
pub mod l1;
pub mod l2;
pub mod plan;
mod scripts;
mod sentinel;
pub mod trending;

pub use breaker::Breaker;
pub use conn::Endpoint;
pub use entry::{Entry, State};
pub use error::{CacheError, Unavailable};
pub use floors::Floors;
pub use keys::{Bump, Family, Keys};
pub use l1::{Bounds, L1, Lifetimes};
pub use l2::{FenceKind, L2, L2Config, ListHit, ProductOp, Wait};
pub use plan::InvalidatorMode;
pub use trending::ViewCounter;
