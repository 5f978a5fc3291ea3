//! The edge cache on workers' outbound path, with the C `proxy` guest (a
//! worker that forwards GET and HEAD to its origin, headers and all)
//! against a real origin on 127.0.0.1 that counts what reaches it: RFC
//! 9111 freshness, `no-store` and `private`, `Vary`, revalidation with a
//! 304, coalescing, the size cap and the budgets, tenant partitions, and
//! what a guest or an origin might try to poison the cache with.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outpost_proto::CachePurge;
use outpost_runtime::edge_cache::CacheConfig;
use outpost_runtime::{AppSpec, Limits, OutboundConfig};
use outpost_test_fixtures as fixtures;

use crate::support::{TestNode, app, local_config, quick_limits};

/// One request as the origin saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the origin answers: given the request and how many requests for
/// its path (this one included) it has seen.
type Handler = dyn Fn(&http::request::Parts, usize) -> http::Response<Body> + Send + Sync;

/// A real origin on loopback that records every request.
struct Origin {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    async fn start(
        handler: impl Fn(&http::request::Parts, usize) -> http::Response<Body> + Send + Sync + 'static,
    ) -> Origin {
        let handler: Arc<Handler> = Arc::new(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (handler, log) = (handler.clone(), log.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (parts, _) = req.into_parts();
                        let path = parts.uri.path_and_query().unwrap().to_string();
                        let n = {
                            let mut log = log.lock().unwrap();
                            log.push(Seen {
                                path: path.clone(),
                                headers: parts.headers.clone(),
                            });
                            log.iter().filter(|s| s.path == path).count()
                        };
                        let response = handler(&parts, n);
                        async move {
                            // `/slow…` paths answer after a while, so
                            // concurrent requests overlap at the origin.
                            if path.starts_with("/slow") {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            // The first request for `/hang` hangs past
                            // the guest's deadline.
                            if path == "/hang" && n == 1 {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { addr, seen }
    }

    /// Requests that reached the origin for `path` (with its query).
    fn hits(&self, path: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == path).cloned().collect()
    }
}

fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> http::Response<Body> {
    let mut b = http::Response::builder().status(status);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Full::new(body.into()).map_err(|e| match e {}).boxed())
        .unwrap()
}

/// A body sent in chunks, without a `content-length`.
fn chunked(headers: &[(&str, &str)], len: usize) -> http::Response<Body> {
    let chunks = (0..len.div_ceil(4096)).map(move |i| {
        let n = 4096.min(len - i * 4096);
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(vec![b'c'; n])))
    });
    let mut b = http::Response::builder().status(200);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(StreamBody::new(futures::stream::iter(chunks)).boxed())
        .unwrap()
}

/// The `proxy` guest for `tenant`, forwarding to `origin`.
fn proxy(tenant: &str, name: &str, origin: &Origin) -> AppSpec {
    let wasm = std::fs::read(fixtures::c_guest("proxy")).unwrap();
    let mut spec = app(
        tenant,
        name,
        wasm,
        Limits {
            max_concurrency: 128,
            ..quick_limits()
        },
    );
    spec.env = vec![("UPSTREAM".into(), origin.addr.to_string())];
    spec.allow_outbound = vec![origin.addr.to_string()];
    spec
}

/// A node whose guests may reach loopback origins, with `cache`.
async fn node_with(cache: CacheConfig) -> TestNode {
    TestNode::launch(outpost_edge_node::Config {
        outbound: OutboundConfig {
            allow_cidrs: vec![OutboundConfig::parse_cidr("127.0.0.0/8").unwrap()],
            ..OutboundConfig::default()
        },
        cache,
        ..local_config()
    })
    .await
}

/// A node serving the proxy guest of tenant `acme` on `acme.test`.
async fn acme_node(origin: &Origin, cache: CacheConfig) -> TestNode {
    let node = node_with(cache).await;
    node.install(vec![(&["acme.test"], proxy("acme", "web", origin))])
        .await;
    node
}

/// GET through the node with extra request headers: (x-cache, body).
async fn get(
    node: &TestNode,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, String) {
    let mut b = Request::get(format!("http://{}{}", node.http, path)).header("host", host);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let reply = node.request(b.body(Full::new(Bytes::new())).unwrap()).await;
    assert!(
        reply.status.is_success() || reply.status.is_redirection() || reply.status == 206,
        "{path}: {} {}",
        reply.status,
        reply.text()
    );
    let verdict = reply
        .headers
        .get("x-cache")
        .map_or("-".into(), |v| v.to_str().unwrap().to_string());
    (verdict, reply.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cacheable_response_is_fetched_once_then_served_from_cache_until_it_expires() {
    let origin =
        Origin::start(|_, n| respond(200, &[("cache-control", "max-age=2")], format!("v{n}")))
            .await;
    let node = acme_node(&origin, CacheConfig::default()).await;
    assert_eq!(
        get(&node, "acme.test", "/fresh", &[]).await,
        ("MISS".into(), "v1".into())
    );
    for _ in 0..3 {
        assert_eq!(
            get(&node, "acme.test", "/fresh", &[]).await,
            ("HIT".into(), "v1".into())
        );
    }
    assert_eq!(origin.hits("/fresh").len(), 1);
    // Another query string is another URL.
    assert_eq!(get(&node, "acme.test", "/fresh?x=1", &[]).await.0, "MISS");
    // Expired: the origin is asked again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        get(&node, "acme.test", "/fresh", &[]).await,
        ("MISS".into(), "v2".into())
    );
    assert_eq!(origin.hits("/fresh").len(), 2);
    assert_eq!(
        node.metric("outpost_cache_requests_total{result=\"hit\",tenant=\"acme\"}")
            .await,
        3.0
    );
    assert!(
        node.metric("outpost_cache_stored_bytes{tenant=\"acme\"}")
            .await
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_private_and_cookie_setting_responses_are_never_stored() {
    let origin = Origin::start(|parts, n| {
        let cc = match parts.uri.path() {
            "/nostore" => vec![("cache-control", "no-store, max-age=60")],
            "/private" => vec![("cache-control", "private, max-age=60")],
            // A session cookie is one user's, whatever the caching says.
            _ => vec![
                ("cache-control", "public, max-age=60"),
                ("set-cookie", "session=secret"),
            ],
        };
        respond(200, &cc, format!("n{n}"))
    })
    .await;
    let node = acme_node(&origin, CacheConfig::default()).await;
    for path in ["/nostore", "/private", "/cookie"] {
        for n in 1..=3 {
            assert_eq!(
                get(&node, "acme.test", path, &[]).await,
                ("MISS".into(), format!("n{n}")),
                "{path}"
            );
        }
        assert_eq!(origin.hits(path).len(), 3, "{path}");
    }
    assert_eq!(node.node.runtime().edge_cache().stored_bytes("acme").1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_a_response_per_variant() {
    let origin = Origin::start(|parts, _| {
        let lang = parts
            .headers
            .get("x-lang")
            .map_or("none", |v| v.to_str().unwrap());
        respond(
            200,
            &[("cache-control", "max-age=60"), ("vary", "x-lang")],
            format!("in {lang}"),
        )
    })
    .await;
    let node = acme_node(&origin, CacheConfig::default()).await;
    for (lang, verdict) in [("en", "MISS"), ("fr", "MISS"), ("en", "HIT"), ("fr", "HIT")] {
        assert_eq!(
            get(&node, "acme.test", "/v", &[("x-lang", lang)]).await,
            (verdict.into(), format!("in {lang}"))
        );
    }
    assert_eq!(
        get(&node, "acme.test", "/v", &[]).await,
        ("MISS".into(), "in none".into())
    );
    assert_eq!(origin.hits("/v").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_sends_a_conditional_request_and_serves_on_304() {
    let origin = Origin::start(|parts, n| {
        if parts
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            return respond(
                304,
                &[("cache-control", "max-age=1"), ("etag", "\"v1\"")],
                "",
            );
        }
        respond(
            200,
            &[("cache-control", "max-age=1"), ("etag", "\"v1\"")],
            format!("body {n}"),
        )
    })
    .await;
    let node = acme_node(&origin, CacheConfig::default()).await;
    assert_eq!(
        get(&node, "acme.test", "/e", &[]).await,
        ("MISS".into(), "body 1".into())
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        get(&node, "acme.test", "/e", &[]).await,
        ("REVALIDATED".into(), "body 1".into())
    );
    let hits = origin.hits("/e");
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[1].headers.get("if-none-match").unwrap(), "\"v1\"");
    assert!(hits[0].headers.get("if-none-match").is_none());
    // Fresh again after the 304.
    assert_eq!(
        get(&node, "acme.test", "/e", &[]).await,
        ("HIT".into(), "body 1".into())
    );
    assert_eq!(origin.hits("/e").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_object_stands_in_for_a_failing_origin_only_if_it_says_stale_if_error() {
    let origin = Origin::start(|parts, n| {
        let cc = if parts.uri.path() == "/grace" {
            "max-age=1, stale-if-error=60"
        } else {
            "max-age=1"
        };
        if n == 1 {
            respond(200, &[("cache-control", cc)], "good")
        } else {
            respond(503, &[], "down")
        }
    })
    .await;
    let node = acme_node(&origin, CacheConfig::default()).await;
    get(&node, "acme.test", "/grace", &[]).await;
    get(&node, "acme.test", "/strict", &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        get(&node, "acme.test", "/grace", &[]).await,
        ("STALE".into(), "good".into())
    );
    let reply = node.get("acme.test", "/strict").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.text(), "down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_at_once_and_refreshes_in_the_background() {
    let origin = Origin::start(|_, n| {
        respond(
            200,
            &[("cache-control", "max-age=1, stale-while-revalidate=60")],
            format!("v{n}"),
        )
    })
    .await;
    let node = acme_node(&origin, CacheConfig::default()).await;
    assert_eq!(
        get(&node, "acme.test", "/swr", &[]).await,
        ("MISS".into(), "v1".into())
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Stale: served as it is, and the origin asked once behind it.
    assert_eq!(
        get(&node, "acme.test", "/swr", &[]).await,
        ("STALE".into(), "v1".into())
    );
    let started = std::time::Instant::now();
    loop {
        let (verdict, body) = get(&node, "acme.test", "/swr", &[]).await;
        if verdict == "HIT" {
            assert_eq!(body, "v2");
            break;
        }
        assert_eq!((verdict.as_str(), body.as_str()), ("STALE", "v1"));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never refreshed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.hits("/swr").len(), 2, "one background refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_cause_one_origin_request() {
    let origin =
        Origin::start(|_, n| respond(200, &[("cache-control", "max-age=60")], format!("once {n}")))
            .await;
    let node = acme_node(&origin, CacheConfig::default()).await;
    let node = Arc::new(node);
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move { get(&node, "acme.test", "/slow", &[]).await })
        })
        .collect();
    let mut verdicts = std::collections::BTreeMap::<String, usize>::new();
    for r in requests {
        let (verdict, body) = r.await.unwrap();
        assert_eq!(body, "once 1");
        *verdicts.entry(verdict).or_default() += 1;
    }
    assert_eq!(origin.hits("/slow").len(), 1, "{verdicts:?}");
    assert_eq!(verdicts.get("MISS"), Some(&1), "{verdicts:?}");
    let coalesced = node
        .metric("outpost_cache_coalesced_total{tenant=\"acme\"}")
        .await;
    assert!(coalesced >= 1.0, "{coalesced} {verdicts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_origin_pins_waiters_only_up_to_the_coalescing_timeout() {
    let origin =
        Origin::start(|_, n| respond(200, &[("cache-control", "no-cache")], format!("n{n}"))).await;
    let node = Arc::new(
        acme_node(
            &origin,
            CacheConfig {
                coalesce_timeout_ms: 100,
                ..CacheConfig::default()
            },
        )
        .await,
    );
    // The first request leads and hangs at the origin (until the guest's
    // 5 s deadline).
    let leader = {
        let node = node.clone();
        tokio::spawn(async move { node.get("acme.test", "/hang").await.status })
    };
    while origin.hits("/hang").is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Those that come after wait for it, give up, and are answered while
    // it still hangs.
    let followers: Vec<_> = (0..3)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move { get(&node, "acme.test", "/hang", &[]).await })
        })
        .collect();
    for f in followers {
        assert_eq!(f.await.unwrap().0, "MISS");
    }
    assert!(!leader.is_finished(), "the followers waited for the leader");
    assert_eq!(origin.hits("/hang").len(), 4);
    assert_eq!(
        node.metric("outpost_cache_coalesced_total{tenant=\"acme\"}")
            .await,
        3.0
    );
    assert_eq!(leader.await.unwrap(), 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_fetching_the_same_url_get_their_own_objects() {
    let origin = Origin::start(|parts, n| {
        let who = parts
            .headers
            .get("x-who")
            .map_or("-", |v| v.to_str().unwrap());
        respond(
            200,
            &[("cache-control", "max-age=60")],
            format!("for {who} #{n}"),
        )
    })
    .await;
    let node = node_with(CacheConfig::default()).await;
    node.install(vec![
        (&["acme.test"], proxy("acme", "web", &origin)),
        (&["rival.test"], proxy("rival", "web", &origin)),
    ])
    .await;
    assert_eq!(
        get(&node, "acme.test", "/same", &[("x-who", "acme")])
            .await
            .1,
        "for acme #1"
    );
    // The rival's request for the very same URL is its own miss, and
    // whatever it stores (here: a response it shaped with a header the
    // origin reflects) never reaches acme.
    assert_eq!(
        get(&node, "rival.test", "/same", &[("x-who", "evil")]).await,
        ("MISS".into(), "for evil #2".into())
    );
    assert_eq!(
        get(&node, "acme.test", "/same", &[]).await,
        ("HIT".into(), "for acme #1".into())
    );
    assert_eq!(
        get(&node, "rival.test", "/same", &[]).await,
        ("HIT".into(), "for evil #2".into())
    );
    assert_eq!(origin.hits("/same").len(), 2);
    // A purge of the rival's is the rival's only.
    let cache = node.node.runtime().edge_cache();
    assert_eq!(cache.purge("rival", &CachePurge::All {}), 1);
    assert_eq!(get(&node, "acme.test", "/same", &[]).await.0, "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_the_size_cap_is_passed_through_not_stored() {
    let origin = Origin::start(|parts, _| {
        let cc = [("cache-control", "max-age=60")];
        match parts.uri.path() {
            "/big" => respond(200, &cc, vec![b'b'; 100 * 1024]),
            "/big-chunked" => chunked(&cc, 100 * 1024),
            _ => chunked(&cc, 10 * 1024),
        }
    })
    .await;
    let node = acme_node(
        &origin,
        CacheConfig {
            max_object_bytes: 64 * 1024,
            ..CacheConfig::default()
        },
    )
    .await;
    for path in ["/big", "/big-chunked"] {
        for _ in 0..2 {
            let (verdict, body) = get(&node, "acme.test", path, &[]).await;
            assert_eq!(verdict, "MISS", "{path}");
            assert_eq!(body.len(), 100 * 1024, "{path}: the whole body arrives");
        }
        assert_eq!(origin.hits(path).len(), 2, "{path}");
    }
    // A chunked body under the cap is stored.
    assert_eq!(get(&node, "acme.test", "/small", &[]).await.0, "MISS");
    let (verdict, body) = get(&node, "acme.test", "/small", &[]).await;
    assert_eq!((verdict.as_str(), body.len()), ("HIT", 10 * 1024));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_budget_evicts_and_never_fails_a_request() {
    let origin = Origin::start(|_, _| {
        respond(
            200,
            &[("cache-control", "max-age=60")],
            vec![b'x'; 20 * 1024],
        )
    })
    .await;
    let node = node_with(CacheConfig {
        budget_bytes: 160 * 1024,
        tenant_budget_bytes: 80 * 1024,
        max_object_bytes: 32 * 1024,
        ..CacheConfig::default()
    })
    .await;
    node.install(vec![
        (&["acme.test"], proxy("acme", "web", &origin)),
        (&["small.test"], proxy("small", "web", &origin)),
    ])
    .await;
    get(&node, "small.test", "/kept", &[]).await;
    for i in 0..10 {
        assert_eq!(
            get(&node, "acme.test", &format!("/o{i}"), &[]).await.0,
            "MISS"
        );
    }
    let cache = node.node.runtime().edge_cache();
    let (total, acme) = cache.stored_bytes("acme");
    assert!(acme <= 80 * 1024 && total <= 160 * 1024, "{acme} {total}");
    // acme's oldest went, its newest and the small tenant's stayed.
    assert_eq!(get(&node, "acme.test", "/o9", &[]).await.0, "HIT");
    assert_eq!(get(&node, "small.test", "/kept", &[]).await.0, "HIT");
    assert_eq!(get(&node, "acme.test", "/o0", &[]).await.0, "MISS");
    assert!(
        node.metric("outpost_cache_evictions_total{tenant=\"acme\"}")
            .await
            >= 6.0
    );
}

/// What a guest controls on its request (a range, its own validators,
/// credentials) and what an origin controls on its response (`x-cache`)
/// never turn into an object served to other requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_validators_and_credentials_of_a_guest_never_poison_the_cache() {
    let origin = Origin::start(|parts, n| {
        let cc = ("cache-control", "max-age=60");
        if parts.headers.contains_key("range") {
            return respond(206, &[cc, ("content-range", "bytes 0-1/4")], "pa");
        }
        if parts.headers.contains_key("if-none-match") {
            return respond(304, &[cc, ("etag", "\"x\"")], "");
        }
        if parts.uri.path() == "/fake" {
            return respond(
                200,
                &[("cache-control", "no-store"), ("x-cache", "HIT")],
                "fake",
            );
        }
        let who = if parts.headers.contains_key("authorization") {
            "alice"
        } else {
            "anyone"
        };
        respond(200, &[cc, ("etag", "\"x\"")], format!("full for {who} {n}"))
    })
    .await;
    let node = acme_node(&origin, CacheConfig::default()).await;
    assert_eq!(
        get(&node, "acme.test", "/r", &[("range", "bytes=0-1")]).await,
        ("BYPASS".into(), "pa".into())
    );
    assert_eq!(
        get(&node, "acme.test", "/r", &[("if-none-match", "\"x\"")]).await,
        ("BYPASS".into(), "".into())
    );
    // Neither the 206 nor the 304 was stored: a plain GET misses.
    assert_eq!(
        get(&node, "acme.test", "/r", &[]).await,
        ("MISS".into(), "full for anyone 3".into())
    );
    assert_eq!(get(&node, "acme.test", "/r", &[]).await.0, "HIT");
    // An authenticated response is not stored for everyone (no `public`).
    assert_eq!(
        get(
            &node,
            "acme.test",
            "/me",
            &[("authorization", "Bearer alice")]
        )
        .await,
        ("MISS".into(), "full for alice 1".into())
    );
    assert_eq!(
        get(&node, "acme.test", "/me", &[]).await,
        ("MISS".into(), "full for anyone 2".into())
    );
    // An origin cannot fake the node's verdict.
    assert_eq!(
        get(&node, "acme.test", "/fake", &[]).await,
        ("MISS".into(), "fake".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_url_and_surrogate_key_remove_only_what_they_name() {
    let origin = Origin::start(|parts, n| {
        let keys = if parts.uri.path().starts_with("/news") {
            "news all"
        } else {
            "all"
        };
        respond(
            200,
            &[("cache-control", "max-age=60"), ("surrogate-key", keys)],
            format!("{n}"),
        )
    })
    .await;
    let node = acme_node(&origin, CacheConfig::default()).await;
    for path in ["/news/1", "/news/2", "/about"] {
        get(&node, "acme.test", path, &[]).await;
    }
    let cache = node.node.runtime().edge_cache();
    let url = format!("http://{}/about", origin.addr);
    assert_eq!(cache.purge("acme", &CachePurge::Url { url }), 1);
    assert_eq!(get(&node, "acme.test", "/about", &[]).await.0, "MISS");
    assert_eq!(get(&node, "acme.test", "/news/1", &[]).await.0, "HIT");
    assert_eq!(
        cache.purge("acme", &CachePurge::SurrogateKey { key: "news".into() }),
        2
    );
    assert_eq!(get(&node, "acme.test", "/news/1", &[]).await.0, "MISS");
    assert_eq!(get(&node, "acme.test", "/about", &[]).await.0, "HIT");
    assert_eq!(
        node.metric("outpost_cache_purged_objects_total{tenant=\"acme\"}")
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_off_every_fetch_goes_to_the_origin_and_carries_no_verdict() {
    let origin =
        Origin::start(|_, n| respond(200, &[("cache-control", "max-age=60")], format!("{n}")))
            .await;
    let node = acme_node(&origin, CacheConfig::off()).await;
    for n in 1..=2 {
        assert_eq!(
            get(&node, "acme.test", "/x", &[]).await,
            ("-".into(), format!("{n}"))
        );
    }
}
