//! The one validation error type: which field broke which rule.

use std::fmt;

/// A request value that breaks a rule of the contract.
///
/// `field` names the offending member (dotted and indexed for nested input,
/// e.g. `products[3].price_cents`), or is `None` when the whole body is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub field: Option<String>,
    pub message: String,
}

impl ValidationError {
    /// An error about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An error about the request as a whole.
    pub fn body(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }

    /// Nests this error under a parent path, e.g. `price_cents` becomes
    /// `products[3].price_cents`.
    #[must_use]
    pub fn within(self, parent: &str) -> Self {
        let field = match self.field {
            Some(f) => format!("{parent}.{f}"),
            None => parent.to_owned(),
        };
        Self {
            field: Some(field),
            message: format!("{parent}: {}", self.message),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValidationError {}
