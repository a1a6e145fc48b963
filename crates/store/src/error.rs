//! What can go wrong in the store, sorted by what the caller should answer.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use domain::{ValidationError, Version};

/// A store failure. The variants map one-to-one onto the contract's error
/// codes, so the HTTP layer does not have to understand SQL errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write (the sku is taken).
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` named a version that is no longer current.
    #[error("version {current} is current")]
    PreconditionFailed { current: Version },
    /// The change is invalid against the current row (e.g. merged attributes
    /// too large).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Postgres cannot be reached, or did not answer in time.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or an unexpected database state.
    #[error("database error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::NotFound => Self::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                // "Key (sku)=(X) already exists." → name the sku, nothing more.
                let detail = info.details().unwrap_or_default();
                let sku = detail
                    .strip_prefix("Key (sku)=(")
                    .and_then(|rest| rest.strip_suffix(") already exists."));
                Self::Conflict(match sku {
                    Some(sku) => format!("sku {sku} already exists"),
                    None => "a product with this sku already exists".to_owned(),
                })
            }
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => Self::Unavailable(info.message().to_owned()),
            // Statement timeouts, admin shutdown, too many connections,
            // serialization failures: all of them say "not now", not "bug".
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => {
                Self::Unavailable(info.message().to_owned())
            }
            DieselError::BrokenTransactionManager => {
                Self::Unavailable("connection lost inside a transaction".to_owned())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}
