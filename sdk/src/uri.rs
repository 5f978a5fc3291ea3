//! The small pieces of URI handling a worker needs: splitting a request
//! target into its parts, percent-decoding and reading query strings.
//!
//! Deliberately not a full RFC 3986 parser: the host has already parsed and
//! validated the request line, so the SDK only has to take apart what it is
//! given, and outbound URLs are checked again by the host.

/// A request target taken apart: `scheme://authority/path?query`, where
/// scheme and authority are present only for absolute URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) scheme: Option<String>,
    pub(crate) authority: Option<String>,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
}

/// Splits `uri`, which is either an absolute URL (`https://host:8443/a?b`)
/// or an origin-form target (`/a?b`). A fragment is dropped: it is never
/// sent over HTTP. An empty path becomes `/`.
pub(crate) fn split(uri: &str) -> Target {
    let uri = uri.split_once('#').map_or(uri, |(before, _)| before);
    let (scheme, authority, rest) = match uri.split_once("://") {
        // A scheme is letters, digits, `+`, `-`, `.`, starting with a letter;
        // anything else before `://` means this is a path that happens to
        // contain `://` (e.g. `/redirect?to=https://x`).
        Some((scheme, after)) if is_scheme(scheme) => {
            let end = after.find(['/', '?']).unwrap_or(after.len());
            let (authority, rest) = after.split_at(end);
            (
                Some(scheme.to_ascii_lowercase()),
                Some(authority.to_string()),
                rest,
            )
        }
        _ => (None, None, uri),
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (rest, None),
    };
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Target {
        scheme,
        authority,
        path,
        query,
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Percent-decodes `s`. With `plus_as_space`, `+` decodes to a space, as in
/// `application/x-www-form-urlencoded` query strings. Malformed escapes
/// (`%zz`, a trailing `%`) are kept as they are rather than rejected, and
/// bytes that do not form UTF-8 become U+FFFD.
pub(crate) fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The decoded `(name, value)` pairs of a query string, in order. A pair
/// without `=` has an empty value; empty pairs (`a=1&&b=2`) are skipped.
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name, true), percent_decode(value, true))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_origin_form() {
        let t = split("/users/7?tab=posts#top");
        assert_eq!(t.scheme, None);
        assert_eq!(t.authority, None);
        assert_eq!(t.path, "/users/7");
        assert_eq!(t.query.as_deref(), Some("tab=posts"));
        assert_eq!(split("").path, "/");
        assert_eq!(split("echo").path, "/echo");
        assert_eq!(split("/a?").query.as_deref(), Some(""));
    }

    #[test]
    fn splits_absolute_urls() {
        let t = split("HTTPS://api.example.com:8443/v1/items?page=2");
        assert_eq!(t.scheme.as_deref(), Some("https"));
        assert_eq!(t.authority.as_deref(), Some("api.example.com:8443"));
        assert_eq!(t.path, "/v1/items");
        assert_eq!(t.query.as_deref(), Some("page=2"));

        let t = split("http://example.com?q=1");
        assert_eq!(t.authority.as_deref(), Some("example.com"));
        assert_eq!(t.path, "/");
        assert_eq!(t.query.as_deref(), Some("q=1"));
    }

    #[test]
    fn a_path_containing_scheme_separator_stays_a_path() {
        let t = split("/redirect?to=https://x.test/");
        assert_eq!(t.scheme, None);
        assert_eq!(t.path, "/redirect");
        assert_eq!(t.query.as_deref(), Some("to=https://x.test/"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Fc", false), "a b/c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("a+b", true), "a b");
        assert_eq!(percent_decode("caf%C3%A9", true), "café");
        // Malformed escapes survive untouched.
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%zz%4", true), "%zz%4");
        // Invalid UTF-8 is replaced, not an error.
        assert_eq!(percent_decode("%FF", true), "\u{FFFD}");
    }

    #[test]
    fn query_pairs_decode_names_and_values() {
        let pairs: Vec<_> = query_pairs("q=rust+wasm&x%20y=1&flag&&empty=").collect();
        assert_eq!(
            pairs,
            [
                ("q".into(), "rust wasm".into()),
                ("x y".into(), "1".into()),
                ("flag".into(), String::new()),
                ("empty".into(), String::new()),
            ]
        );
    }
}
