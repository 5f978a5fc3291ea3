//! Route parsing (`host[/prefix]`, what the control plane validates
//! uploads' routes, outbound hosts and certificate hostnames with) and
//! request matching (`Host` header + path → app).
//!
//! Properties: nothing panics; a parsed route prints to a string that
//! parses back to itself (normalization is idempotent); a route alone in a
//! router matches its own host and prefix, with any case, a port or a
//! trailing dot on the host, and any deeper path; a lookup in a router of
//! many routes returns exactly the longest prefix on a segment boundary
//! for that host (checked against a naive model).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use outpost_runtime::router::{Route, Router};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    routes: Vec<&'a str>,
    host: &'a str,
    path: &'a str,
}

fn check_alone(route: &Route) {
    let printed = route.to_string();
    let reparsed: Route = match printed.parse() {
        Ok(r) => r,
        Err(e) => panic!("{route:?} prints as {printed:?}, which does not parse: {e}"),
    };
    assert_eq!(&reparsed, route, "normalization is not idempotent");
    assert_eq!(reparsed.to_string(), printed);

    let router = Router::new([(route.clone(), ())]).expect("one route is no duplicate");
    let host = route.host();
    let prefix = route.prefix();
    let deeper = format!("{prefix}/deeper?q=1");
    let upper = host.to_ascii_uppercase();
    let with_port = format!("{upper}:8080");
    let with_dot = format!("{host}.");
    for (h, p) in [
        (host, prefix),
        (host, deeper.as_str()),
        (upper.as_str(), prefix),
        (with_port.as_str(), prefix),
        (with_dot.as_str(), prefix),
    ] {
        assert!(
            router.lookup(h, p).is_some(),
            "{route:?} does not match host {h:?} path {p:?}"
        );
    }
    if prefix.is_empty() {
        assert!(router.lookup(host, "/").is_some());
    }
    assert!(router.any_on_host(host).is_some());
}

/// Naive model of a lookup: the normalized host equals the route's host
/// and the path (query and fragment cut) starts with the prefix followed
/// by nothing or `/`; the longest such prefix wins.
fn model<'r>(routes: &'r [(Route, usize)], host: &str, path: &str) -> Option<&'r (Route, usize)> {
    let host = if host.starts_with('[') {
        return None; // No route names an IPv6 literal.
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return None,
            None => host,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let path = path.split(['?', '#']).next().unwrap_or("");
    routes
        .iter()
        .filter(|(r, _)| r.host() == host)
        .filter(|(r, _)| {
            path.strip_prefix(r.prefix())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .max_by_key(|(r, _)| r.prefix().len())
}

fuzz_target!(|input: Input<'_>| {
    let mut parsed: Vec<(Route, usize)> = Vec::new();
    for (i, s) in input.routes.iter().enumerate() {
        if let Ok(route) = s.parse::<Route>() {
            check_alone(&route);
            if !parsed.iter().any(|(r, _)| *r == route) {
                parsed.push((route, i));
            }
        }
    }
    let router = Router::new(parsed.clone()).expect("duplicates were removed");
    assert_eq!(router.len(), parsed.len());
    let got = router.lookup(input.host, input.path);
    let want = model(&parsed, input.host, input.path);
    assert_eq!(
        got,
        want.map(|(_, v)| v),
        "lookup({:?}, {:?}) disagrees with the model over {parsed:?}",
        input.host,
        input.path
    );
    let _ = router.any_on_host(input.host);
});
