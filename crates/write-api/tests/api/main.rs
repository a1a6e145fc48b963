//! write-api integration tests: the real service in-process on port 0,
//! against the real Postgres and RabbitMQ, one database and namespace per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod bulk_patch;
mod events;
mod faults;
mod helpers;
mod hostile;
mod outbox;
mod routes;
mod validation;
