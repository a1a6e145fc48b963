//! Postgres: the schema, the queries, the connection pool and the embedded
//! migrations. Every line of SQL in Catalog lives in this crate.
//!
//! Writes run in one transaction with their outbox row ([`writes`]); the relay
//! claims and clears outbox rows through [`outbox`]; the read path uses the
//! plain queries in [`products`].

mod error;
mod models;
pub mod outbox;
mod pool;
pub mod products;
pub mod schema;
pub mod writes;

pub use error::StoreError;
pub use outbox::{OutboxMessage, RelayPass};
pub use pool::{Conn, Db, PoolSettings, admin, migrate};
pub use products::Page;
pub use writes::Written;
