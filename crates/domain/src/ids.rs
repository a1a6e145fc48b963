//! Identifiers and the row version the cache invariant rests on.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A product id: a positive 64-bit integer assigned by Postgres. Its
/// OpenAPI schema is in `crate::schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct ProductId(i64);

/// The id was not a positive 64-bit integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("id must be a positive 64-bit integer")]
pub struct InvalidId;

impl ProductId {
    /// Wraps an id known to be positive (read back from Postgres).
    pub fn new(id: i64) -> Result<Self, InvalidId> {
        if id > 0 { Ok(Self(id)) } else { Err(InvalidId) }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for ProductId {
    type Error = InvalidId;
    fn try_from(id: i64) -> Result<Self, InvalidId> {
        Self::new(id)
    }
}

impl From<ProductId> for i64 {
    fn from(id: ProductId) -> i64 {
        id.0
    }
}

impl FromStr for ProductId {
    type Err = InvalidId;

    /// Accepts plain decimal digits only: no sign, no whitespace, no overflow.
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidId);
        }
        s.parse::<i64>().map_err(|_| InvalidId).and_then(Self::new)
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A product's row version: 1 at creation, raised by exactly 1 in the same
/// transaction as every change. A deleted product's last event carries the
/// last version + 1.
///
/// Version 0 is reserved for "known not to exist" markers in the cache.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = i64, minimum = 1, example = 3)]
pub struct Version(pub i64);

impl Version {
    /// The floor below which nothing is known: every real version is above it.
    pub const ZERO: Version = Version(0);

    pub fn get(self) -> i64 {
        self.0
    }

    #[must_use]
    pub fn next(self) -> Version {
        Version(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_positive_ids_only() {
        assert_eq!("42".parse::<ProductId>().map(ProductId::get), Ok(42));
        assert_eq!(
            "9223372036854775807"
                .parse::<ProductId>()
                .map(ProductId::get),
            Ok(i64::MAX)
        );
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "abc",
            "9223372036854775808",
            "99999999999999999999",
        ] {
            assert_eq!(bad.parse::<ProductId>(), Err(InvalidId), "{bad:?}");
        }
    }
}
