//! Routing: each request reaches exactly the app its Host and path name,
//! and anything else is answered by the node itself.

use crate::support::{TestNode, app};
use outpost_runtime::Limits;
use outpost_test_fixtures as fixtures;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn two_tenants() -> TestNode {
    TestNode::start(vec![
        (
            &["a.example.com"],
            app(
                "tenant-a",
                "web",
                fixtures::hello("tenant A\n"),
                Limits::default(),
            ),
        ),
        (
            &["b.example.com"],
            app(
                "tenant-b",
                "web",
                fixtures::hello("tenant B\n"),
                Limits::default(),
            ),
        ),
        (
            &["api.example.com/v2"],
            app("tenant-b", "api-v2", fixtures::echo(), Limits::default()),
        ),
        (
            &["api.example.com"],
            app(
                "tenant-b",
                "api-root",
                fixtures::hello("api root\n"),
                Limits::default(),
            ),
        ),
    ])
    .await
}

#[tokio::test]
async fn tenants_only_ever_see_their_own_worker() {
    let node = two_tenants().await;
    for _ in 0..20 {
        let a = node.get("a.example.com", "/").await;
        let b = node.get("b.example.com", "/").await;
        assert_eq!((a.status.as_u16(), a.text().as_str()), (200, "tenant A\n"));
        assert_eq!((b.status.as_u16(), b.text().as_str()), (200, "tenant B\n"));
        assert_eq!(a.headers["content-type"], "text/plain");
    }
    assert_eq!(
        node.metric(r#"outpost_http_requests_total{app="web",status="2xx",tenant="tenant-a"}"#)
            .await,
        20.0
    );
}

#[tokio::test]
async fn host_matching_ignores_case_and_port() {
    let node = two_tenants().await;
    let r = node.get("A.EXAMPLE.com:8080", "/anything").await;
    assert_eq!(r.text(), "tenant A\n");
}

#[tokio::test]
async fn longest_path_prefix_wins_on_segment_boundaries() {
    let node = two_tenants().await;
    let v2 = node.get("api.example.com", "/v2/users?id=7").await;
    assert_eq!(v2.status, 200);
    assert!(
        v2.text().starts_with("GET /v2/users?id=7\n"),
        "{}",
        v2.text()
    );
    assert_eq!(
        node.get("api.example.com", "/v20").await.text(),
        "api root\n"
    );
    assert_eq!(node.get("api.example.com", "/").await.text(), "api root\n");
}

#[tokio::test]
async fn unknown_host_is_a_404_from_the_node() {
    let node = two_tenants().await;
    for host in [
        "c.example.com",
        "example.com",
        "a.example.com.evil",
        "127.0.0.1",
    ] {
        let r = node.get(host, "/").await;
        assert_eq!(r.status, 404, "{host}");
        assert_eq!(r.outpost_error(), Some("unknown_host"));
        assert!(!r.text().contains("tenant"), "a worker answered for {host}");
    }
    assert_eq!(
        node.metric(r#"outpost_http_unrouted_requests_total{reason="unknown_host"}"#)
            .await,
        4.0
    );
}

#[tokio::test]
async fn missing_host_is_a_400() {
    let node = two_tenants().await;
    let mut tcp = tokio::net::TcpStream::connect(node.http).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.0 400"), "{out}");
    assert!(out.contains("x-outpost-error: missing_host"), "{out}");
}

#[tokio::test]
async fn garbage_on_the_wire_gets_a_400_and_the_node_keeps_serving() {
    let node = two_tenants().await;
    let mut tcp = tokio::net::TcpStream::connect(node.http).await.unwrap();
    tcp.write_all(b"\x16\x03\x01 this is not http\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(node.get("a.example.com", "/").await.status, 200);
}

/// The guest sees the host it was routed by: an absolute-form target
/// naming another tenant's host cannot make victim's worker believe it
/// was asked for that host (or make another host's worker run).
#[tokio::test]
async fn the_guest_sees_the_routed_host_whatever_the_request_line_says() {
    let node = TestNode::start(vec![
        (
            &["victim.test"],
            app("victim", "who", fixtures::authority(), Limits::default()),
        ),
        (
            &["other.test"],
            app(
                "other",
                "hello",
                fixtures::hello("other\n"),
                Limits::default(),
            ),
        ),
    ])
    .await;
    for (target, host) in [
        ("http://other.test/", "victim.test"),
        ("http://other.test:8080/x", "victim.test"),
        ("/", "victim.test"),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(node.http).await.unwrap();
        // HTTP/1.0: the answer is close-delimited, not chunked.
        let req = format!("GET {target} HTTP/1.0\r\nHost: {host}\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.0 200"), "{target}: {out}");
        assert!(out.ends_with("\r\n\r\nvictim.test\n"), "{target}: {out}");
    }
    // And through a client that sends origin-form, as browsers do.
    let r = node.get("victim.test", "/").await;
    assert_eq!(r.text(), "victim.test\n");
}
