//! Validated request parameters: the storefront's page size, search text and
//! keyset cursor, and the `If-Match` precondition of admin writes. Like the
//! body types in `input`, each can only hold a value the contract allows, and
//! `crate::schema` documents each from the same constants.

use crate::{ProductId, Version, text};

/// Most items one page may hold.
pub const MAX_PAGE_LIMIT: i64 = 100;
/// Items per page when `limit` is absent.
pub const DEFAULT_PAGE_LIMIT: i64 = 20;
/// Longest search text, in characters.
pub const SEARCH_MAX_CHARS: usize = 200;

/// A page size, 1 to [`MAX_PAGE_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(i64);

impl PageLimit {
    pub fn new(limit: i64) -> Result<Self, String> {
        if (1..=MAX_PAGE_LIMIT).contains(&limit) {
            Ok(Self(limit))
        } else {
            Err(format!(
                "limit must be an integer between 1 and {MAX_PAGE_LIMIT}"
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self(DEFAULT_PAGE_LIMIT)
    }
}

/// Full-text search input: 1 to [`SEARCH_MAX_CHARS`] characters, not blank,
/// no NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText(String);

impl SearchText {
    pub fn parse(q: &str) -> Result<Self, String> {
        text::no_nul("q", q)?;
        let chars = q.chars().count();
        if chars == 0 || chars > SEARCH_MAX_CHARS || text::is_blank(q) {
            Err(format!(
                "q must be 1-{SEARCH_MAX_CHARS} characters, not blank"
            ))
        } else {
            Ok(Self(q.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The keyset cursor of a product list: the last id of the previous page;
/// 0 (or no cursor) starts at the first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageAfter(Option<ProductId>);

impl PageAfter {
    pub fn new(after: i64) -> Result<Self, String> {
        match after {
            0 => Ok(Self(None)),
            id => ProductId::new(id)
                .map(|id| Self(Some(id)))
                .map_err(|_| "after must be a product id (a non-negative integer)".to_owned()),
        }
    }

    pub fn get(self) -> Option<ProductId> {
        self.0
    }
}

/// `min_version`: a version the client has seen (read-your-writes), ≥ 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinVersion(Version);

impl MinVersion {
    pub fn new(version: i64) -> Result<Self, String> {
        if version >= 1 {
            Ok(Self(Version(version)))
        } else {
            Err("min_version must be a positive integer".to_owned())
        }
    }

    pub fn get(self) -> Version {
        self.0
    }
}

/// `If-Match` on an admin write: `*` (any current version) or one quoted
/// version, `"3"`, as the `ETag` header gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Version(Version),
}

impl IfMatch {
    /// What the error message says a valid value is.
    pub const EXPECTED: &str = "If-Match must be a quoted version such as \"3\", or *";

    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value == "*" {
            return Ok(Self::Any);
        }
        let digits = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| Self::EXPECTED.to_owned())?;
        digits
            .parse::<i64>()
            .map(|v| Self::Version(Version(v)))
            .map_err(|_| Self::EXPECTED.to_owned())
    }

    /// The version the write requires, if any.
    pub fn version(self) -> Option<Version> {
        match self {
            Self::Any => None,
            Self::Version(v) => Some(v),
        }
    }

    /// The pattern of a quoted version: a decimal that fits a version, in
    /// double quotes. (The other form is `*` alone.)
    pub fn version_pattern() -> String {
        let max = i64::MAX.unsigned_abs();
        format!(r#"^"{}"$"#, text::decimal_at_most(max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors() {
        assert_eq!(PageLimit::default().get(), DEFAULT_PAGE_LIMIT);
        assert!(PageLimit::new(1).is_ok() && PageLimit::new(MAX_PAGE_LIMIT).is_ok());
        assert!(PageLimit::new(0).is_err() && PageLimit::new(MAX_PAGE_LIMIT + 1).is_err());
        assert_eq!(PageAfter::new(0).unwrap().get(), None);
        assert_eq!(
            PageAfter::new(7).unwrap().get().map(ProductId::get),
            Some(7)
        );
        assert!(PageAfter::new(-1).is_err() && PageAfter::new(i64::MIN).is_err());
        assert!(MinVersion::new(0).is_err());
        assert_eq!(MinVersion::new(i64::MAX).unwrap().get(), Version(i64::MAX));
    }

    #[test]
    fn search_text() {
        assert!(SearchText::parse(&"é".repeat(SEARCH_MAX_CHARS)).is_ok());
        for bad in [
            String::new(),
            " \t".to_owned(),
            "\u{3000}".to_owned(),
            "a\0".to_owned(),
            "a".repeat(SEARCH_MAX_CHARS + 1),
        ] {
            assert!(SearchText::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(IfMatch::parse("*"), Ok(IfMatch::Any));
        assert_eq!(IfMatch::parse("\"3\""), Ok(IfMatch::Version(Version(3))));
        assert_eq!(
            IfMatch::parse("\"9223372036854775807\""),
            Ok(IfMatch::Version(Version(i64::MAX)))
        );
        for bad in [
            "",
            "3",
            "null",
            "W/\"3\"",
            "\"\"",
            "\"-1\"",
            "\"+1\"",
            "\"x\"",
            "\"9223372036854775808\"",
        ] {
            assert!(IfMatch::parse(bad).is_err(), "{bad}");
        }
    }
}
