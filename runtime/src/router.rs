//! Host (+ optional path prefix) → app routing.
//!
//! A route is a hostname, optionally followed by a path prefix
//! (`api.example.com/v2`). A request matches the route whose host equals its
//! `Host` (port stripped, case-insensitive, trailing dot ignored) and whose
//! prefix is the longest one that ends on a path-segment boundary, so
//! `/v2` matches `/v2` and `/v2/users` but never `/v20`. Anything else is no
//! match: the node answers it itself and never hands it to some tenant's
//! worker.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A parsed, normalized route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    host: String,
    /// Empty, or `/seg[/seg…]` without a trailing slash.
    prefix: String,
}

/// Why a route string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid route {route:?}: {why}")]
pub struct RouteError {
    route: String,
    why: &'static str,
}

impl Route {
    /// The lower-case hostname.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The path prefix (`""` for the whole host).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, self.prefix)
    }
}

impl FromStr for Route {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| RouteError {
            route: s.to_string(),
            why,
        };
        let (host, prefix) = match s.find('/') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() {
            return Err(err("the hostname is empty"));
        }
        if host.len() > 253 {
            return Err(err("the hostname is longer than 253 characters"));
        }
        if host.contains(':') {
            return Err(err("routes name a host without a port"));
        }
        for label in host.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(err("each hostname label must be 1 to 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(err("hostnames may hold only letters, digits, '-' and '.'"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err("a hostname label cannot start or end with '-'"));
            }
        }
        let prefix = prefix.trim_end_matches('/');
        if prefix.contains(['?', '#', '%', '\\']) || prefix.chars().any(char::is_whitespace) {
            return Err(err(
                "a path prefix may not hold '?', '#', '%', '\\' or whitespace",
            ));
        }
        if prefix.contains("//") {
            return Err(err("a path prefix may not hold an empty segment"));
        }
        if prefix.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(err("a path prefix may not hold '.' or '..' segments"));
        }
        Ok(Route {
            host: host.to_ascii_lowercase(),
            prefix: prefix.to_string(),
        })
    }
}

/// Routes to values of type `T` (the node routes to apps).
#[derive(Debug, Clone)]
pub struct Router<T> {
    /// Per host, the prefixes longest first.
    hosts: HashMap<String, Vec<(String, T)>>,
    len: usize,
}

/// Two entries claimed the same route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {0} is given twice")]
pub struct DuplicateRoute(pub Route);

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            hosts: HashMap::new(),
            len: 0,
        }
    }
}

impl<T> Router<T> {
    /// Builds a router; the same route twice is an error.
    pub fn new(entries: impl IntoIterator<Item = (Route, T)>) -> Result<Self, DuplicateRoute> {
        let mut hosts: HashMap<String, Vec<(String, T)>> = HashMap::new();
        let mut len = 0;
        for (route, value) in entries {
            let list = hosts.entry(route.host.clone()).or_default();
            if list.iter().any(|(p, _)| *p == route.prefix) {
                return Err(DuplicateRoute(route));
            }
            list.push((route.prefix, value));
            len += 1;
        }
        for list in hosts.values_mut() {
            list.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        }
        Ok(Router { hosts, len })
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every value, once per route.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.hosts
            .values()
            .flat_map(|list| list.iter().map(|(_, v)| v))
    }

    /// Some value routed on `host` (any prefix), if there is one.
    pub fn any_on_host(&self, host: &str) -> Option<&T> {
        let host = normalize_host(host)?.to_ascii_lowercase();
        self.hosts.get(&host)?.first().map(|(_, v)| v)
    }

    /// The value for a request with this `Host` header value and path
    /// (query already removed or not: it is ignored).
    pub fn lookup(&self, host_header: &str, path: &str) -> Option<&T> {
        let host = normalize_host(host_header)?;
        let list = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.hosts.get(&host.to_ascii_lowercase())?
        } else {
            self.hosts.get(host)?
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        list.iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, v)| v)
    }
}

/// `Host` header → bare hostname: port and trailing dot removed. `None`
/// for values that cannot name a host.
/// The host of a `Host` header value: port and trailing dot removed.
pub fn normalize_host(value: &str) -> Option<&str> {
    let host = if let Some(rest) = value.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`. Routes never name one, but it must
        // not be mistaken for `host:port`.
        &value[..rest.find(']')? + 2]
    } else {
        match value.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return None,
            None => value,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Route {
        s.parse().unwrap()
    }

    fn router() -> Router<&'static str> {
        Router::new([
            (r("a.example.com"), "a"),
            (r("API.example.com/v2"), "v2"),
            (r("api.example.com/v2/admin/"), "admin"),
            (r("api.example.com"), "api-root"),
        ])
        .unwrap()
    }

    #[test]
    fn routes_parse_and_normalize() {
        let route = r("API.Example.com./v2/");
        assert_eq!(route.host(), "api.example.com");
        assert_eq!(route.prefix(), "/v2");
        assert_eq!(route.to_string(), "api.example.com/v2");
        assert_eq!(r("a.example.com").prefix(), "");
    }

    #[test]
    fn bad_routes_are_refused_with_a_reason() {
        for bad in [
            "",
            "/v2",
            "a.example.com:8080",
            "a..example.com",
            "-a.example.com",
            "a_b.example.com",
            "a.example.com/v2?x=1",
            "a.example.com/v2//x",
            "a.example.com/../etc",
            "a.example.com/with space",
            "*.example.com",
        ] {
            let e = bad.parse::<Route>().unwrap_err();
            assert!(e.to_string().contains("invalid route"), "{bad}: {e}");
        }
    }

    #[test]
    fn host_matching_strips_port_and_ignores_case() {
        let rt = router();
        assert_eq!(rt.lookup("a.example.com", "/"), Some(&"a"));
        assert_eq!(rt.lookup("A.Example.COM:8080", "/x"), Some(&"a"));
        assert_eq!(rt.lookup("a.example.com.", "/"), Some(&"a"));
        assert_eq!(rt.lookup("b.example.com", "/"), None);
        assert_eq!(rt.lookup("a.example.com:http", "/"), None);
        assert_eq!(rt.lookup("", "/"), None);
        assert_eq!(rt.lookup("[::1]:80", "/"), None);
    }

    #[test]
    fn longest_prefix_on_a_segment_boundary_wins() {
        let rt = router();
        assert_eq!(rt.lookup("api.example.com", "/v2"), Some(&"v2"));
        assert_eq!(rt.lookup("api.example.com", "/v2/users?id=1"), Some(&"v2"));
        assert_eq!(rt.lookup("api.example.com", "/v2/admin/x"), Some(&"admin"));
        assert_eq!(
            rt.lookup("api.example.com", "/v2/administrator"),
            Some(&"v2")
        );
        assert_eq!(rt.lookup("api.example.com", "/v20"), Some(&"api-root"));
        assert_eq!(rt.lookup("api.example.com", "/"), Some(&"api-root"));
    }

    #[test]
    fn a_host_with_only_prefixed_routes_does_not_catch_everything() {
        let rt = Router::new([(r("p.example.com/only"), 1)]).unwrap();
        assert_eq!(rt.lookup("p.example.com", "/only/x"), Some(&1));
        assert_eq!(rt.lookup("p.example.com", "/other"), None);
    }

    #[test]
    fn duplicate_routes_are_refused() {
        let e = Router::new([(r("a.example.com/x"), 1), (r("A.example.com/x/"), 2)]).unwrap_err();
        assert_eq!(e.to_string(), "route a.example.com/x is given twice");
    }
}
