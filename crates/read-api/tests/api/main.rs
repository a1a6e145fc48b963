//! read-api integration tests: the real service in-process on port 0 next to
//! a real write-api, against the real Postgres, Redis and RabbitMQ; one
//! database and namespace per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod faults;
mod head;
mod helpers;
mod hostile;
mod pages;
mod params;
mod products;
mod scaffold;
mod trending;
