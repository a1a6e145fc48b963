//! No library code: this crate holds the end-to-end tests in `tests/`, which
//! run write-api, invalidator and read-api together in one process against
//! the real Postgres, Redis and RabbitMQ.
