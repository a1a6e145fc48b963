//! End to end: a committed change reaches every reader, and nothing is lost
//! when a part of the system fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod distributed;
mod faults;
mod freshness;
mod harness;
mod lists;
mod operations;
mod redis_trouble;
mod secrets;
mod tls;
