//! Rules every string the services accept obeys, and their spelling as
//! JSON Schema patterns, written once so the validation and the OpenAPI
//! documents cannot disagree.
//!
//! Patterns avoid `\s`, `\d` and `\w`: ECMA-262 (the validators of
//! OpenAPI tools), Python (schemathesis) and Rust read them differently.
//! Every class here is spelled out, so all three read it the same way.

use serde_json::Value;

/// NUL, which no string may hold: Postgres refuses it in `text` (SQLSTATE
/// 22021) and in `jsonb` (22P05), so it is refused before any query.
pub const NUL: char = '\0';

/// The characters Rust's `char::is_whitespace` calls white space (Unicode's
/// `White_Space` property): what "blank" means for `name` and `q`. Spelled
/// out because the OpenAPI pattern must list the same set; a test checks
/// it against the standard library over every code point.
pub const WHITESPACE: &[(char, char)] = &[
    ('\u{0009}', '\u{000d}'),
    ('\u{0020}', '\u{0020}'),
    ('\u{0085}', '\u{0085}'),
    ('\u{00a0}', '\u{00a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// Any string without NUL.
pub const NO_NUL_PATTERN: &str = r"^[^\u0000]*$";

/// Whether `c` is white space (see [`WHITESPACE`]).
pub fn is_whitespace(c: char) -> bool {
    WHITESPACE.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Empty, or white space only.
pub fn is_blank(s: &str) -> bool {
    s.chars().all(is_whitespace)
}

/// Refuses a string holding NUL; the message names `what`.
pub fn no_nul(what: &str, s: &str) -> Result<(), String> {
    if s.contains(NUL) {
        Err(format!("{what} must not contain a NUL character (\\u0000)"))
    } else {
        Ok(())
    }
}

/// A string with at least one character that is not white space, and no
/// NUL: the pattern of `name` and of the search text.
pub fn not_blank_pattern() -> String {
    let mut class = String::from(r"[^\u0000");
    for &(lo, hi) in WHITESPACE {
        class.push_str(&escape(lo));
        if hi != lo {
            class.push('-');
            class.push_str(&escape(hi));
        }
    }
    class.push(']');
    format!(r"^[^\u0000]*{class}[^\u0000]*$")
}

fn escape(c: char) -> String {
    format!("\\u{:04x}", u32::from(c))
}

/// Where in a JSON document the first NUL is, as a path below `root`
/// (`attributes.ports[2]`), or `None`. A NUL inside an object's key is
/// reported at that object, whose keys are then what is wrong.
pub fn find_nul(root: &str, value: &Value) -> Option<String> {
    match value {
        Value::String(s) => s.contains(NUL).then(|| root.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_nul(&format!("{root}[{i}]"), item)),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains(NUL)) {
                return Some(root.to_owned());
            }
            map.iter()
                .find_map(|(k, v)| find_nul(&format!("{root}.{k}"), v))
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// A pattern matching the decimal numbers from 0 to `max`, leading zeros
/// allowed (what Rust's integer parsing accepts, sign aside), without
/// anchors. For `If-Match: "<version>"`, where a JSON Schema `maximum`
/// cannot reach inside the quotes.
pub fn decimal_at_most(max: u64) -> String {
    let digits: Vec<u8> = max.to_string().bytes().map(|b| b - b'0').collect();
    let n = digits.len();
    let mut branches = Vec::new();
    if n > 1 {
        // Fewer digits than `max`: any of them.
        branches.push(format!("[0-9]{{1,{}}}", n - 1));
    }
    // As many digits: `max`'s own prefix, then a smaller digit, then anything.
    for i in 0..n {
        let d = digits[i];
        if d == 0 {
            continue;
        }
        let prefix: String = digits[..i].iter().map(|d| char::from(b'0' + d)).collect();
        let smaller = if d == 1 {
            "0".to_owned()
        } else {
            format!("[0-{}]", d - 1)
        };
        let rest = n - i - 1;
        let tail = match rest {
            0 => String::new(),
            1 => "[0-9]".to_owned(),
            _ => format!("[0-9]{{{rest}}}"),
        };
        branches.push(format!("{prefix}{smaller}{tail}"));
    }
    branches.push(max.to_string());
    format!("0*(?:{})", branches.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whitespace_is_the_standard_librarys() {
        for c in (0..=0x10_ffff_u32).filter_map(char::from_u32) {
            assert_eq!(is_whitespace(c), c.is_whitespace(), "{c:?}");
        }
    }

    #[test]
    fn blank_and_nul() {
        assert!(is_blank(""));
        assert!(is_blank(" \t\u{3000}\u{85}"));
        assert!(!is_blank(" a "));
        assert!(!is_blank("\u{feff}"), "a BOM is not white space to Rust");
        assert!(no_nul("q", "a\0b").is_err());
        assert!(no_nul("q", "ab").is_ok());
    }

    #[test]
    fn nul_is_found_where_it_is() {
        let doc = json!({"a": 1, "ports": [1, {"x": "ok"}, "b\u{0}"]});
        assert_eq!(
            find_nul("attributes", &doc).as_deref(),
            Some("attributes.ports[2]")
        );
        let key = json!({"outer": {"k\u{0}": 1}});
        assert_eq!(
            find_nul("attributes", &key).as_deref(),
            Some("attributes.outer")
        );
        assert_eq!(find_nul("attributes", &json!({"a": [null, 1.5]})), None);
    }
}
