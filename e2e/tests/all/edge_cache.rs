//! The edge cache across a fleet: two tenants' workers (the C `proxy`
//! guest) fetch the very same origin URLs through two edge nodes; a
//! tenant's purge through the API reaches both nodes before the API
//! answers, and removes that tenant's objects only.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outpost_runtime::OutboundConfig;
use outpost_test_fixtures as fixtures;
use serde_json::json;

use crate::support::{ControlPlane, EdgeNode, client};

/// The name workers use for the origin; the nodes pin it to loopback.
const ORIGIN: &str = "origin.example.net";

/// An origin on loopback: cacheable for 5 minutes, `Surrogate-Key: news`
/// under `/news/`; counts requests.
pub(crate) async fn origin() -> (u16, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let keys = if req.uri().path().starts_with("/news/") {
                        "news all"
                    } else {
                        "all"
                    };
                    let response = http::Response::builder()
                        .header("cache-control", "max-age=300")
                        .header("surrogate-key", keys)
                        .body(Full::new(Bytes::from(format!("origin #{n}"))))
                        .unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, hits)
}

/// GET through `node`: (x-cache, body).
pub(crate) async fn get(node: &EdgeNode, host: &str, path: &str) -> (String, String) {
    let req = Request::get(format!("http://{}{path}", node.http))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let verdict = resp
        .headers()
        .get("x-cache")
        .map_or("-".into(), |v| v.to_str().unwrap().to_string());
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{host}{path}: {body}");
    (verdict, body)
}

/// Waits (bounded) until `host` is served on `node` (any 200), fetching
/// `/up` (a path the assertions do not use).
pub(crate) async fn until_up(node: &EdgeNode, host: &str) {
    let started = std::time::Instant::now();
    while node.get_path_with_error(host, "/up").await.0 != 200 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{host} is not served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Creates `tenant`'s app `web` on `host`, proxying to the origin.
async fn proxy_app(cp: &ControlPlane, tenant: &str, host: &str, port: u16) -> String {
    let token = cp.tenant(tenant).await;
    add_proxy_app(cp, &token, "web", host, port).await;
    token
}

/// Creates app `name` on `host` for the tenant of `token`, proxying to
/// the origin on `port`.
pub(crate) async fn add_proxy_app(
    cp: &ControlPlane,
    token: &str,
    name: &str,
    host: &str,
    port: u16,
) {
    let upstream = format!("{ORIGIN}:{port}");
    let app = json!({"name": name, "routes": [host], "allow_outbound": [upstream]});
    let (status, body) = cp.json("POST", "/v1/apps", token, app).await;
    assert_eq!(status, 201, "{body}");
    let env_path = format!("/v1/apps/{name}/env");
    let (status, body) = cp
        .json("PUT", &env_path, token, json!({"UPSTREAM": upstream}))
        .await;
    assert_eq!(status, 200, "{body}");
    cp.deploy_to(
        name,
        token,
        std::fs::read(fixtures::c_guest("proxy")).unwrap(),
    )
    .await;
}

/// An edge node following `cp` whose guests reach the origin.
pub(crate) async fn node(cp: &ControlPlane, cache: &std::path::Path, id: &str) -> EdgeNode {
    EdgeNode::start_with(cp.addr, cache, id, |config| {
        config.outbound = OutboundConfig {
            allow_cidrs: vec![OutboundConfig::parse_cidr("127.0.0.0/8").unwrap()],
            hosts: [(ORIGIN.to_string(), [127, 0, 0, 1].into())].into(),
            ..OutboundConfig::default()
        };
    })
    .await
}

/// `POST /v1/cache/purge` as `token`: the answer.
async fn purge(cp: &ControlPlane, token: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, answer) = cp.json("POST", "/v1/cache/purge", token, body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_reaches_every_node_before_the_answer_and_only_the_purging_tenants_objects() {
    let (port, hits) = origin().await;
    let data = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let acme = proxy_app(&cp, "acme", "shop.acme.example", port).await;
    let _beta = proxy_app(&cp, "beta", "shop.beta.example", port).await;
    let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let nodes = [
        node(&cp, caches[0].path(), "edge-1").await,
        node(&cp, caches[1].path(), "edge-2").await,
    ];
    for node in &nodes {
        until_up(node, "shop.acme.example").await;
        until_up(node, "shop.beta.example").await;
    }
    // Each tenant, on each node, stores its own copy of the same URLs.
    for node in &nodes {
        for host in ["shop.acme.example", "shop.beta.example"] {
            for path in ["/news/1", "/about"] {
                let (verdict, _) = get(node, host, path).await;
                assert!(verdict == "MISS" || verdict == "HIT", "{verdict}");
                assert_eq!(get(node, host, path).await.0, "HIT", "{host}{path}");
            }
        }
    }
    let before = hits.load(Ordering::SeqCst);

    let answer = purge(&cp, &acme, json!({"by": "surrogate_key", "key": "news"})).await;
    assert_eq!(answer["rollout"]["nodes"], 2, "{answer}");
    assert_eq!(answer["rollout"]["applied"], 2, "{answer}");
    assert!(answer["rollout"].get("lagging").is_none(), "{answer}");
    eprintln!(
        "purge by surrogate key applied on 2 nodes {} ms after it was recorded",
        answer["waited_ms"]
    );
    for node in &nodes {
        assert_eq!(get(node, "shop.acme.example", "/news/1").await.0, "MISS");
        assert_eq!(get(node, "shop.acme.example", "/about").await.0, "HIT");
        // The other tenant's copy of the same URL stays.
        assert_eq!(get(node, "shop.beta.example", "/news/1").await.0, "HIT");
    }

    let url = format!("http://{ORIGIN}:{port}/about");
    let answer = purge(&cp, &acme, json!({"by": "url", "url": url})).await;
    assert_eq!(answer["rollout"]["applied"], 2, "{answer}");
    eprintln!(
        "purge by URL applied on 2 nodes {} ms after it was recorded",
        answer["waited_ms"]
    );
    for node in &nodes {
        assert_eq!(get(node, "shop.acme.example", "/about").await.0, "MISS");
        assert_eq!(get(node, "shop.beta.example", "/about").await.0, "HIT");
    }
    // Two purges, each refetched once per node: 4 more origin requests.
    assert_eq!(hits.load(Ordering::SeqCst), before + 4);

    // A deleted tenant's objects go with it: a tenant created later
    // under the same name starts from an empty partition.
    let (status, body) = cp
        .call(
            "DELETE",
            "/v1/tenants/beta",
            crate::support::ADMIN,
            "",
            vec![],
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let _beta = proxy_app(&cp, "beta", "shop.beta.example", port).await;
    for node in &nodes {
        until_up(node, "shop.beta.example").await;
        assert_ne!(get(node, "shop.beta.example", "/news/1").await.0, "HIT");
    }
    for node in nodes {
        node.stop();
    }
    cp.stop().await;
}
