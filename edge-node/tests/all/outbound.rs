//! Outbound HTTP from guests (wasi:http/outgoing-handler) with the C
//! `fetch` guest against a real upstream on 127.0.0.1: allowed hosts are
//! reached, others are denied, and a request's subrequests are capped.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::support::{TestNode, app};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outpost_runtime::Limits;
use outpost_test_fixtures as fixtures;

/// An upstream answering `upstream saw PATH` and counting requests.
async fn upstream() -> (std::net::SocketAddr, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = format!("upstream saw {}", req.uri().path());
                    async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, hits)
}

fn fetch_guest(
    name: &str,
    upstream: std::net::SocketAddr,
    allow: &[String],
    max_subrequests: u32,
) -> outpost_runtime::AppSpec {
    let wasm = std::fs::read(fixtures::c_guest("fetch")).unwrap();
    let mut spec = app(
        "acme",
        name,
        wasm,
        Limits {
            max_subrequests,
            ..crate::support::quick_limits()
        },
    );
    spec.env = vec![("UPSTREAM".into(), upstream.to_string())];
    spec.allow_outbound = allow.to_vec();
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_are_reached_others_denied_and_subrequests_capped() {
    let (addr, hits) = upstream().await;
    let node = TestNode::start(vec![
        (
            &["ok.example.com"],
            fetch_guest("ok", addr, &[addr.to_string()], 3),
        ),
        (
            &["host-only.example.com"],
            fetch_guest("host-only", addr, &["127.0.0.1".into()], 3),
        ),
        (
            &["denied.example.com"],
            fetch_guest("denied", addr, &["api.example.com".into()], 3),
        ),
        (&["none.example.com"], fetch_guest("none", addr, &[], 3)),
    ])
    .await;

    let r = node.get("ok.example.com", "/hello").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "upstream saw /hello")
    );
    let r = node.get("host-only.example.com", "/any-port").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "upstream saw /any-port")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    for host in ["denied.example.com", "none.example.com"] {
        let r = node.get(host, "/hello").await;
        assert_eq!(r.status.as_u16(), 502, "{host}");
        assert_eq!(r.text(), "outbound error: HTTP-request-denied\n", "{host}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "a denied request reached the upstream"
    );

    // Three subrequests are fine; the fourth in the same request is refused.
    let r = node.get("ok.example.com", "/x?n=3").await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(hits.load(Ordering::SeqCst), 5);
    let r = node.get("ok.example.com", "/x?n=4").await;
    assert_eq!(r.status.as_u16(), 502);
    assert_eq!(r.text(), "outbound error: internal-error\n");
    assert_eq!(hits.load(Ordering::SeqCst), 8);

    let metrics = node.scrape().await;
    for line in [
        r#"outpost_runtime_subrequests_total{app="ok",result="sent",tenant="acme"} 7"#,
        r#"outpost_runtime_subrequests_total{app="ok",result="limit",tenant="acme"} 1"#,
        r#"outpost_runtime_subrequests_total{app="host-only",result="sent",tenant="acme"} 1"#,
        r#"outpost_runtime_subrequests_total{app="denied",result="denied",tenant="acme"} 1"#,
        r#"outpost_runtime_subrequests_total{app="none",result="denied",tenant="acme"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
}
