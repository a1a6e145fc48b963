//! Secrets out of what is printed: the passwords in backend URLs and the
//! admin tokens. `Settings`' `Debug` goes through here, so a settings dump
//! in a log or a panic shows the shape of the configuration, never a secret.

/// What stands in for a secret.
pub const MASK: &str = "***";

/// `url` with its password (`user:secret@`, `:secret@`) and any `password=`
/// query parameter replaced by [`MASK`]; a comma-separated list of URLs
/// part by part. Works on the text, so a URL too broken to parse is masked
/// all the same.
pub fn url(url: &str) -> String {
    url.split(',').map(one_url).collect::<Vec<_>>().join(",")
}

fn one_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let rest = match url.find("://") {
        Some(i) => {
            out.push_str(&url[..i + 3]);
            &url[i + 3..]
        }
        None => url,
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(&query_passwords(tail));
    out
}

/// Masks `password=...` in a path-and-query tail.
fn query_passwords(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_owned();
    };
    let (path, query) = tail.split_at(q + 1);
    let (query, fragment) = match query.find('#') {
        Some(f) => query.split_at(f),
        None => (query, ""),
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={MASK}"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}{}{fragment}", masked.join("&"))
}

/// Secrets shown as how many there are.
pub fn tokens(tokens: &[String]) -> String {
    format!("<{} token(s), {MASK}>", tokens.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_and_the_rest_kept() {
        let cases = [
            (
                "postgres://user:secret@db:5432/catalog",
                "postgres://user:***@db:5432/catalog",
            ),
            ("redis://:secret@cache:6379", "redis://:***@cache:6379"),
            (
                "amqp://guest:guest@a:5672/%2f,amqps://guest:guest@b:5671/%2f",
                "amqp://guest:***@a:5672/%2f,amqps://guest:***@b:5671/%2f",
            ),
            (
                "postgres://db/c?user=u&password=secret&sslmode=require",
                "postgres://db/c?user=u&password=***&sslmode=require",
            ),
            ("redis://user@cache:6379/0", "redis://user@cache:6379/0"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("not a url:secret@x", "not a url:***@x"),
            ("amqp://u:p@ss@host/%2f", "amqp://u:***@host/%2f"),
        ];
        for (raw, shown) in cases {
            assert_eq!(url(raw), shown, "{raw}");
        }
        assert_eq!(tokens(&["a".into(), "b".into()]), "<2 token(s), ***>");
    }
}
