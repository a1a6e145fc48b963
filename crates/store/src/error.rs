//! What can go wrong in the store, sorted by what the caller should answer.
//! Failures keep their cause as a `source`; the HTTP boundary logs the whole
//! chain once and sends none of it.

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError};
use domain::{ValidationError, Version};

/// A cause, shared so that a failed load can be handed to every caller
/// waiting on it (read-api's single-flight).
pub type Cause = std::sync::Arc<dyn std::error::Error + Send + Sync>;

/// A store failure. The variants map one-to-one onto the contract's error
/// codes, so the HTTP layer does not have to understand SQL errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// One product of several (a bulk change) does not exist.
    #[error("product {0} not found")]
    ProductNotFound(domain::ProductId),
    /// A unique constraint refused the write (the sku is taken).
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` named a version that is no longer current (of the product
    /// named, in a bulk change).
    #[error("version {current} is current")]
    PreconditionFailed {
        current: Version,
        product: Option<domain::ProductId>,
    },
    /// The change is invalid against the current row or a constraint (e.g.
    /// merged attributes too large, a CHECK refused a value).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Postgres cannot be reached, did not answer in time, or refused the
    /// work for now (too many connections, shutting down, a serialization
    /// conflict): "not now", not "wrong".
    #[error("the database is unavailable")]
    Unavailable(#[source] Cause),
    /// Anything else: a bug or an unexpected database state.
    #[error("unexpected database error")]
    Internal(#[source] Cause),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// An internal error that is only a message (a state that cannot be).
    pub fn bug(message: impl Into<String>) -> Self {
        Self::Internal(std::sync::Arc::from(Box::<
            dyn std::error::Error + Send + Sync,
        >::from(message.into())))
    }
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        use DatabaseErrorKind as Kind;
        match e {
            DieselError::NotFound => Self::NotFound,
            DieselError::DatabaseError(Kind::UniqueViolation, ref info) => {
                Self::Conflict(conflict_message(info.as_ref()))
            }
            DieselError::DatabaseError(
                Kind::CheckViolation | Kind::NotNullViolation | Kind::ForeignKeyViolation,
                ref info,
            ) => Self::Invalid(constraint_error(info.as_ref())),
            // Broken or closed connections, serialization conflicts, a
            // read-only server (a replica, a failover): retry later.
            DieselError::DatabaseError(
                Kind::ClosedConnection
                | Kind::UnableToSendCommand
                | Kind::SerializationFailure
                | Kind::ReadOnlyTransaction,
                _,
            )
            | DieselError::BrokenTransactionManager => Self::Unavailable(std::sync::Arc::new(e)),
            // Every other server error: diesel does not pass the SQLSTATE
            // on, so these are the statement timeout, admin shutdown, too
            // many connections and the like, which say "not now". Input the
            // server would refuse (class 22: NUL bytes, out-of-range values)
            // is refused before any query, by the types in `domain`.
            DieselError::DatabaseError(Kind::Unknown, _) => {
                Self::Unavailable(std::sync::Arc::new(e))
            }
            other => Self::Internal(std::sync::Arc::new(other)),
        }
    }
}

/// "sku X already exists", from the constraint the server names.
fn conflict_message(info: &dyn DatabaseErrorInformation) -> String {
    // The detail reads "Key (sku)=(X) already exists."; only the sku is
    // taken from it, for the message.
    let sku = info
        .details()
        .and_then(|d| d.strip_prefix("Key (sku)=("))
        .and_then(|rest| rest.strip_suffix(") already exists."));
    match sku {
        Some(sku) => format!("sku {sku} already exists"),
        None => "a product with this sku already exists".to_owned(),
    }
}

/// A 422 naming the column a constraint guards (`products_price_cents_check`
/// guards `price_cents`).
fn constraint_error(info: &dyn DatabaseErrorInformation) -> ValidationError {
    let field = info.column_name().map(str::to_owned).or_else(|| {
        let constraint = info.constraint_name()?;
        let table = info.table_name().unwrap_or("products");
        constraint
            .strip_prefix(table)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|rest| rest.strip_suffix("_check"))
            .map(str::to_owned)
    });
    match field {
        Some(field) => {
            let message = format!("{field} is out of range");
            ValidationError::field(field, message)
        }
        None => ValidationError::body("the change breaks a rule of the catalog"),
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Unavailable(std::sync::Arc::new(e))
    }
}
