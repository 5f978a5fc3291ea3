//! The API over HTTPS: a control plane in-process with a certificate from
//! a test CA, reached by the client the CLI and the nodes use
//! (`outpost-link`) and by raw TLS clients choosing their ALPN.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use outpost_control_plane::api::DEFAULT_MAX_MODULE_BYTES;
use outpost_control_plane::config::ServerConfig;
use outpost_control_plane::store::SledStore;
use outpost_control_plane::tls::TlsFiles;
use outpost_test_fixtures::tls::{Client as TlsClient, TestCa, https_get};
use outpost_test_fixtures::wire;

use crate::support::{ADMIN, ControlPlane, config, link_get};

/// A control plane serving HTTPS with a certificate for 127.0.0.1 from
/// `ca`, its files and data in `dir`.
async fn https_control_plane(ca: &TestCa, dir: &Path, server: ServerConfig) -> ControlPlane {
    let issued = ca.issue(&["127.0.0.1", "localhost"]);
    let files = TlsFiles {
        cert: dir.join("cp.crt"),
        key: dir.join("cp.key"),
    };
    std::fs::write(&files.cert, &issued.chain_pem).unwrap();
    std::fs::write(&files.key, &issued.key_pem).unwrap();
    let store = Arc::new(SledStore::open(&dir.join("data")).unwrap());
    let mut config = config(
        "127.0.0.1:0".parse().unwrap(),
        DEFAULT_MAX_MODULE_BYTES,
        server,
    );
    config.tls = Some(files);
    ControlPlane::start_with_config(store, config).await
}

fn write_ca(ca: &TestCa, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, ca.root_pem()).unwrap();
    path
}

/// `GET path` with the admin token, trusting `ca_file`.
async fn get(url: &str, ca_file: &Path, path: &str) -> Result<(u16, String), String> {
    link_get(url, ca_file, path, Some(ADMIN)).await
}

fn quick() -> ServerConfig {
    ServerConfig {
        shutdown_grace: Duration::from_secs(1),
        ..ServerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_over_h2_and_http1_and_nothing_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let cp = https_control_plane(&ca, dir.path(), quick()).await;
    let url = format!("https://{}", cp.addr);
    let ca_file = write_ca(&ca, dir.path(), "ca.pem");

    let (status, body) = get(&url, &ca_file, "/v1/tenants").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "[]"));

    for (alpn, version) in [
        ("h2", http::Version::HTTP_2),
        ("http/1.1", http::Version::HTTP_11),
    ] {
        let client = TlsClient {
            roots: &[ca.root()],
            alpn: &[alpn],
            tls12_only: false,
        };
        let reply = https_get(client, cp.addr, "localhost", "localhost")
            .await
            .unwrap();
        assert_eq!(reply.alpn.as_deref(), Some(alpn));
        assert_eq!(reply.version, version);
        // `/` is no API path: the API's own JSON 404 proves HTTP ran.
        assert_eq!(reply.status, 404, "{}", reply.body);
        assert!(
            reply.body.contains(r#""code":"not_found""#),
            "{}",
            reply.body
        );
    }

    // Another CA's client refuses the certificate, and says so.
    let other = write_ca(&TestCa::new(), dir.path(), "other.pem");
    let err = get(&url, &other, "/healthz").await.unwrap_err();
    assert!(err.contains("not trusted"), "{err}");

    // Plain HTTP to the TLS port gets no HTTP answer at all.
    let answer = wire::exchange(
        cp.addr,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(!answer.contains("HTTP/1.1 200"), "{answer}");

    let (_, metrics) = get(&url, &ca_file, "/metrics").await.unwrap();
    let count = |result: &str| -> u64 {
        let series = format!("outpost_cp_tls_handshakes_total{{result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.parse().unwrap())
    };
    assert!(count("ok") >= 3, "{metrics}");
    assert!(count("error") >= 2, "{metrics}");
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_time_out_and_block_no_one() {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(500);
    // Fifty sockets closed on two busy cores, polled in steps.
    const SLACK: Duration = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let cp = https_control_plane(
        &ca,
        dir.path(),
        ServerConfig {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            ..quick()
        },
    )
    .await;
    let url = format!("https://{}", cp.addr);
    let ca_file = write_ca(&ca, dir.path(), "ca.pem");

    let opened = tokio::time::Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..50 {
        stalled.push(tokio::net::TcpStream::connect(cp.addr).await.unwrap());
    }
    // A good client is served while they stall.
    let (status, body) = get(&url, &ca_file, "/healthz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let closed = wire::closed_by(&mut stalled, opened + HANDSHAKE_TIMEOUT + SLACK).await;
    println!(
        "{closed} of 50 stalled handshakes closed {:?} after opening",
        opened.elapsed()
    );
    assert_eq!(closed, 50);
    cp.stop().await;
}
