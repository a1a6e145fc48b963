//! Postgres: the schema, the queries, the connection pool and the embedded
//! migrations. Every line of SQL in Catalog lives in this crate.
//!
//! Writes are plain SQL ([`writes`]): triggers in the database raise the
//! version and write the outbox row in the same transaction, for any writer;
//! the relay claims and clears outbox rows through [`outbox`]; the read path
//! uses the plain queries in [`products`].

pub mod connect;
mod error;
mod fixed;
mod models;
pub mod outbox;
mod pool;
pub mod products;
pub mod schema;
pub mod writes;

pub use connect::{SslMode, check_url};
pub use error::StoreError;
pub use outbox::{OutboxListener, OutboxMessage, RelayPass};
pub use pool::{Conn, Db, MIGRATIONS, PoolSettings, admin, migrate};
pub use products::Page;
