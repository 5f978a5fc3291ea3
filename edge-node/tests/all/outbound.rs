//! Outbound HTTP from guests (wasi:http/outgoing-handler) with the C
//! `fetch` guest against a real upstream on 127.0.0.1: allowed hosts are
//! reached, others are denied, and a request's subrequests are capped;
//! an allowed name that resolves to a loopback address is refused unless
//! the operator opened that range, and the node's own listeners never.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::support::{TestNode, app, local_config};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use outpost_runtime::{Limits, OutboundConfig};
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
    upstream: impl ToString,
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

/// A node whose guests may reach `cidrs` although they are special-purpose.
async fn node_allowing(cidrs: &[&str]) -> TestNode {
    TestNode::launch(outpost_edge_node::Config {
        outbound: OutboundConfig {
            allow_cidrs: cidrs
                .iter()
                .map(|c| OutboundConfig::parse_cidr(c).unwrap())
                .collect(),
            ..OutboundConfig::default()
        },
        ..local_config()
    })
    .await
}

/// Whether the node's metrics have exactly this line.
fn has_line(metrics: &str, line: &str) -> bool {
    metrics.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_are_reached_others_denied_and_subrequests_capped() {
    let (addr, hits) = upstream().await;
    // The upstream is on loopback, which only the operator can open.
    let node = node_allowing(&["127.0.0.0/8"]).await;
    node.install(vec![
        (
            &["ok.example.com"],
            fetch_guest("ok", addr, &[addr.to_string()], 3),
        ),
        // An entry without a port opens 80 and 443 only.
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
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    for host in [
        "host-only.example.com",
        "denied.example.com",
        "none.example.com",
    ] {
        let r = node.get(host, "/hello").await;
        assert_eq!(r.status.as_u16(), 502, "{host}");
        assert_eq!(r.text(), "outbound error: HTTP-request-denied\n", "{host}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "a denied request reached the upstream"
    );

    // Three subrequests are fine; the fourth in the same request is refused.
    let r = node.get("ok.example.com", "/x?n=3").await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    let r = node.get("ok.example.com", "/x?n=4").await;
    assert_eq!(r.status.as_u16(), 502);
    assert_eq!(r.text(), "outbound error: internal-error\n");
    assert_eq!(hits.load(Ordering::SeqCst), 7);

    let metrics = node.scrape().await;
    for line in [
        r#"outpost_runtime_subrequests_total{app="ok",result="sent",tenant="acme"} 7"#,
        r#"outpost_runtime_subrequests_total{app="ok",result="limit",tenant="acme"} 1"#,
        r#"outpost_runtime_subrequests_total{app="host-only",result="denied",tenant="acme"} 1"#,
        r#"outpost_runtime_subrequests_total{app="denied",result="denied",tenant="acme"} 1"#,
        r#"outpost_runtime_subrequests_total{app="none",result="denied",tenant="acme"} 1"#,
    ] {
        assert!(has_line(&metrics, line), "no {line:?} in\n{metrics}");
    }
}

/// The SSRF of issue 14: a tenant allow-lists a name it controls and points
/// it at the node's host. `localhost` stands in for such a name (the API
/// refuses it as an entry; the node must hold without that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_denied_by_address_unless_the_operator_opens_it() {
    // An internal service on the node's host.
    let (addr, hits) = upstream().await;
    let internal = format!("localhost:{}", addr.port());
    let literal = addr.to_string();

    // No [outbound] allow_cidrs: loopback is closed, whatever the spelling.
    let node = node_allowing(&[]).await;
    let own_metrics = format!("localhost:{}", node.metrics.port());
    node.install(vec![
        (
            &["by-name.example.com"],
            fetch_guest("by-name", &internal, std::slice::from_ref(&internal), 3),
        ),
        (
            &["by-ip.example.com"],
            fetch_guest("by-ip", &literal, std::slice::from_ref(&literal), 3),
        ),
        (
            &["metrics.example.com"],
            fetch_guest(
                "metrics",
                &own_metrics,
                std::slice::from_ref(&own_metrics),
                3,
            ),
        ),
    ])
    .await;
    for host in [
        "by-name.example.com",
        "by-ip.example.com",
        "metrics.example.com",
    ] {
        let r = node.get(host, "/metrics").await;
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (502, "outbound error: HTTP-request-denied\n"),
            "{host}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the internal service was reached"
    );
    let metrics = node.scrape().await;
    for app in ["by-name", "by-ip", "metrics"] {
        for (result, n) in [("denied_address", 1), ("sent", 0)] {
            let line = format!(
                r#"outpost_runtime_subrequests_total{{app="{app}",result="{result}",tenant="acme"}} {n}"#
            );
            assert!(has_line(&metrics, &line), "no {line:?} in\n{metrics}");
        }
    }
    drop(node);

    // With loopback opened by the operator the same apps reach the service,
    // and still not the node's own metrics listener.
    let node = node_allowing(&["127.0.0.0/8"]).await;
    let own_metrics = format!("localhost:{}", node.metrics.port());
    node.install(vec![
        (
            &["by-name.example.com"],
            fetch_guest("by-name", &internal, std::slice::from_ref(&internal), 3),
        ),
        (
            &["metrics.example.com"],
            fetch_guest(
                "metrics",
                &own_metrics,
                std::slice::from_ref(&own_metrics),
                3,
            ),
        ),
    ])
    .await;
    let r = node.get("by-name.example.com", "/opened").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "upstream saw /opened")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let r = node.get("metrics.example.com", "/metrics").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (502, "outbound error: HTTP-request-denied\n"),
        "the node relayed its own metrics"
    );
}

/// A listener bound to a wildcard address is reachable on every address of
/// the host, not only the one it names; a connection that turns out to be
/// to this host and one of those ports is dropped before a byte is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_listener_of_the_node_is_not_reached_through_an_opened_range() {
    let node = TestNode::launch(outpost_edge_node::Config {
        metrics: "0.0.0.0:0".parse().unwrap(),
        outbound: OutboundConfig {
            allow_cidrs: vec![OutboundConfig::parse_cidr("127.0.0.0/8").unwrap()],
            ..OutboundConfig::default()
        },
        ..local_config()
    })
    .await;
    let own_metrics = format!("127.0.0.1:{}", node.metrics.port());
    node.install(vec![(
        &["metrics.example.com"],
        fetch_guest(
            "metrics",
            &own_metrics,
            std::slice::from_ref(&own_metrics),
            3,
        ),
    )])
    .await;
    let r = node.get("metrics.example.com", "/metrics").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (502, "outbound error: HTTP-request-denied\n")
    );
}
