//! The engine fixtures do what they promise. Each test starts engines of its
//! own (nextest runs each test in its own process) and prints how long they
//! took to start; the RabbitMQ cluster test is the slow one (about 20 s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod postgres;
mod rabbitmq;
mod redis;

use std::time::Duration;

/// How long any one thing a test waits for may take.
const WAIT: Duration = Duration::from_secs(30);
