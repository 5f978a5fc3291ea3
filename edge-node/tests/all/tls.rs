//! HTTPS on a real node with real TLS clients: certificates by SNI for two
//! tenants, the default for unknown names, HTTP/2 and HTTP/1.1 by ALPN,
//! TLS 1.2 and 1.3, rotation without restart, 421 across tenants, stalled
//! handshakes that block nobody, redirects, and the TLS metrics.

use std::time::{Duration, Instant};

use outpost_edge_node::config::{ConnectionConfig, ServerConfig};
use outpost_edge_node::metrics::Metrics;
use outpost_edge_node::tls::Certificate;
use outpost_edge_node::{Node, node::Conn};
use outpost_runtime::router::Route;
use outpost_runtime::{AppSpec, PoolConfig};
use outpost_test_fixtures as fixtures;
use outpost_test_fixtures::tls::{Client, Issued, TestCa, https_get};

use crate::support::{TestNode, app, quick_limits};

fn parse(issued: &Issued) -> Certificate {
    Certificate::parse(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap()
}

fn spec(tenant: &str, name: &str, routes: &[&str], body: &str) -> (Vec<Route>, AppSpec) {
    (
        routes.iter().map(|r| r.parse().unwrap()).collect(),
        app(tenant, name, fixtures::hello(body), quick_limits()),
    )
}

/// Tenant `acme` serves a.example.com and a2.example.com, tenant `beta`
/// serves b.example.com; each has its own certificate; the node's default
/// covers `*.example.com`, so unknown names still handshake.
struct Fleet {
    ca: TestCa,
    a: Issued,
    b: Issued,
    default: Issued,
    node: TestNode,
}

async fn fleet(server: ServerConfig) -> Fleet {
    let ca = TestCa::new();
    let a = ca.issue(&["a.example.com", "a2.example.com"]);
    let b = ca.issue(&["b.example.com"]);
    let default = ca.issue(&["*.example.com"]);
    let node = TestNode::start_with_server(server, vec![]).await;
    node.node
        .apply(vec![
            spec(
                "acme",
                "web",
                &["a.example.com", "a2.example.com"],
                "acme\n",
            ),
            spec("beta", "web", &["b.example.com"], "beta\n"),
        ])
        .await
        .unwrap();
    node.node.set_default_certificate(parse(&default));
    node.node.set_certificates(vec![
        ("a.example.com".into(), "acme".into(), parse(&a)),
        ("a2.example.com".into(), "acme".into(), parse(&a)),
        ("b.example.com".into(), "beta".into(), parse(&b)),
    ]);
    Fleet {
        ca,
        a,
        b,
        default,
        node,
    }
}

fn quick_server() -> ServerConfig {
    ServerConfig {
        connections: ConnectionConfig {
            shutdown_grace: Duration::from_secs(1),
            ..ConnectionConfig::default()
        },
        ..ServerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_gets_its_own_certificate_over_h2_and_http1() {
    let f = fleet(quick_server()).await;
    let roots = [f.ca.root()];
    for (alpn, version, tls12_only) in [
        ("h2", http::Version::HTTP_2, false),
        ("http/1.1", http::Version::HTTP_11, false),
        ("h2", http::Version::HTTP_2, true),
    ] {
        let client = Client {
            roots: &roots,
            alpn: &[alpn],
            tls12_only,
        };
        for (host, issued, body) in [
            ("a.example.com", &f.a, "acme\n"),
            ("b.example.com", &f.b, "beta\n"),
        ] {
            let r = https_get(client, f.node.https, host, host).await.unwrap();
            assert_eq!((r.status, r.body.as_str()), (200, body), "{host} {alpn}");
            assert!(
                r.peer_leaf == issued.leaf_der,
                "{host} got another certificate"
            );
            assert_eq!(r.alpn.as_deref(), Some(alpn));
            assert_eq!(r.version, version);
        }
        // A name no tenant has a certificate for gets the node's default
        // and the node's own 404.
        let r = https_get(client, f.node.https, "zzz.example.com", "zzz.example.com")
            .await
            .unwrap();
        assert!(r.peer_leaf == f.default.leaf_der);
        assert_eq!(r.status, 404);
    }
    let metrics = f.node.scrape().await;
    for line in [
        "outpost_tls_certificates_loaded 3",
        r#"outpost_tls_handshakes_total{result="ok",version="TLSv1_3"} 6"#,
        r#"outpost_tls_handshakes_total{result="ok",version="TLSv1_2"} 3"#,
        "outpost_tls_handshake_duration_seconds_count 9",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    let expiry: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("outpost_tls_certificate_expiry_timestamp_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    // rcgen certificates run to the year 4096.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(expiry > now + 300 * 86_400, "{expiry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_of_another_tenant_than_the_sni_name_is_misdirected() {
    let f = fleet(quick_server()).await;
    let roots = [f.ca.root()];
    for alpn in ["h2", "http/1.1"] {
        let client = Client {
            roots: &roots,
            alpn: &[alpn],
            tls12_only: false,
        };
        // acme's certificate and connection, beta's host: refused.
        let r = https_get(client, f.node.https, "a.example.com", "b.example.com")
            .await
            .unwrap();
        assert_eq!(r.status, 421, "{alpn}: {}", r.body);
        // Another host of the same tenant on the same connection is fine
        // (HTTP/2 connection coalescing does this).
        let r = https_get(client, f.node.https, "a.example.com", "a2.example.com")
            .await
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "acme\n"));
        // A name with only the default certificate can't reach a tenant.
        let r = https_get(client, f.node.https, "zzz.example.com", "b.example.com")
            .await
            .unwrap();
        assert_eq!(r.status, 421);
    }
    let misdirected = r#"outpost_http_unrouted_requests_total{reason="misdirected"} 4"#;
    let text = f.node.scrape().await;
    assert!(text.lines().any(|l| l == misdirected), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_handshakes() {
    let f = fleet(quick_server()).await;
    let roots = [f.ca.root()];
    let client = Client {
        roots: &roots,
        alpn: &["h2"],
        tls12_only: false,
    };
    let before = https_get(client, f.node.https, "b.example.com", "b.example.com")
        .await
        .unwrap();
    assert!(before.peer_leaf == f.b.leaf_der);
    let rotated = f.ca.issue(&["b.example.com"]);
    f.node.node.update_certificates(
        vec![("b.example.com".into(), "beta".into(), parse(&rotated))],
        &[],
    );
    let after = https_get(client, f.node.https, "b.example.com", "b.example.com")
        .await
        .unwrap();
    assert!(after.peer_leaf == rotated.leaf_der);
    assert_eq!(after.status, 200);
    // Removing it falls back to the default certificate.
    f.node
        .node
        .update_certificates(Vec::new(), &["b.example.com".to_string()]);
    let gone = https_get(client, f.node.https, "b.example.com", "b.example.com")
        .await
        .unwrap();
    assert!(gone.peer_leaf == f.default.leaf_der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_block_no_one_and_time_out() {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(500);
    // Scheduling on a busy two-core machine, and the 50 ms polling below.
    const SLACK: Duration = Duration::from_secs(1);
    let mut server = quick_server();
    server.connections.handshake_timeout = HANDSHAKE_TIMEOUT;
    let f = fleet(server).await;
    // Fifty clients open a socket and say nothing.
    let first_opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(f.node.https).await.unwrap());
    }
    // A real client is served meanwhile.
    let roots = [f.ca.root()];
    let client = Client {
        roots: &roots,
        alpn: &["h2"],
        tls12_only: false,
    };
    let r = https_get(client, f.node.https, "a.example.com", "a.example.com")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // The silent ones are cut off after the handshake timeout.
    let timeouts = r#"outpost_tls_handshakes_total{result="timeout",version="none"} 50"#;
    loop {
        let text = f.node.scrape().await;
        if text.lines().any(|l| l == timeouts) {
            break;
        }
        assert!(
            first_opened.elapsed() <= HANDSHAKE_TIMEOUT + SLACK,
            "not all 50 silent handshakes timed out {:?} after they began:\n{text}",
            first_opened.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for mut socket in idle {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
            .await
            .expect("the node closed the socket")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    // Garbage instead of a ClientHello is a handshake error, nothing more.
    let mut junk = tokio::net::TcpStream::connect(f.node.https).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut junk, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let errors = r#"outpost_tls_handshakes_total{result="error",version="none"} 1"#;
    while !f.node.scrape().await.lines().any(|l| l == errors) {
        assert!(
            started.elapsed() <= SLACK,
            "garbage was not refused at once"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_can_redirect_to_https() {
    let node = TestNode::start_with_server(
        ServerConfig {
            redirect_http: true,
            ..quick_server()
        },
        vec![],
    )
    .await;
    node.node
        .apply(vec![spec("acme", "web", &["a.example.com"], "acme\n")])
        .await
        .unwrap();
    let r = node.get("a.example.com:8080", "/path?q=1").await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.headers["location"],
        format!("https://a.example.com:{}/path?q=1", node.https.port()).as_str()
    );
}

/// Connection info reaches routing: the same check without sockets.
#[tokio::test]
async fn requests_without_sni_are_routed_by_host_alone() {
    let node = Node::new(&PoolConfig::default(), Metrics::new()).unwrap();
    node.apply(vec![spec("acme", "web", &["a.example.com"], "acme\n")])
        .await
        .unwrap();
    let req = http::Request::get("/")
        .header("host", "a.example.com")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let conn = Conn {
        tls: true,
        sni: None,
    };
    assert_eq!(node.handle(req, &conn).await.status(), 200);
}
