//! Hostile HTTP clients against a real in-process control plane: the edge
//! node's hostile-client tests (`edge-node/tests/all/hostile.rs`) again,
//! on the API listener, which has the same defences (`outpost-serve`).
//!
//! In every test a well-behaved client keeps asking for `/healthz` while
//! the attack runs; each of its requests must get 200 within a generous
//! bound (its latencies are printed, never asserted). Each test holds
//! [`alone`]: they open hundreds of sockets and time what the server does
//! with them, which other tests of this binary running at once on two
//! cores would blur.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use outpost_control_plane::config::ServerConfig;
use outpost_control_plane::store::SledStore;
use outpost_test_fixtures::wire::{self, Latencies};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{ControlPlane, client};

/// One hostile test at a time (see the module doc).
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    ALONE.lock().await
}

/// What a timeout may overrun its configured value by in these tests:
/// hundreds of clients on two cores, each polling in 200 ms steps.
const SLACK: Duration = Duration::from_secs(1);

/// A control plane on 127.0.0.1:0 under `server`, with its data directory.
async fn control_plane(server: ServerConfig) -> (ControlPlane, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SledStore::open(dir.path()).unwrap());
    let cp = ControlPlane::start_with_server(
        store,
        "127.0.0.1:0".parse().unwrap(),
        outpost_control_plane::api::DEFAULT_MAX_MODULE_BYTES,
        server,
    )
    .await;
    (cp, dir)
}

/// Runs `f` while the good client asks for `/healthz`.
async fn attack<F: std::future::Future>(
    addr: SocketAddr,
    label: &str,
    f: F,
) -> (F::Output, Latencies) {
    let (out, latencies) = wire::while_getting(addr, "control-plane", "/healthz", "ok\n", f).await;
    latencies.report(label);
    (out, latencies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_off_at_the_header_read_timeout() {
    let _alone = alone().await;
    const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
    let (cp, _dir) = control_plane(ServerConfig {
        header_read_timeout: HEADER_READ_TIMEOUT,
        ..ServerConfig::default()
    })
    .await;
    let addr = cp.addr;
    // 200 clients each send a never-ending head, one byte every 200 ms.
    let (lifetimes, _) = attack(addr, "cp slowloris", async {
        let trickle = |_| async {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let head = "GET /v1/apps HTTP/1.1\r\nHost: control-plane\r\nX-Padding: ";
            let started = Instant::now();
            for b in head.bytes().chain(std::iter::repeat(b'a')) {
                if tcp.write_all(&[b]).await.is_err() {
                    break;
                }
                // The server closing the socket shows as EOF on a read.
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) | Err(_) => {}
                }
                assert!(
                    started.elapsed() <= HEADER_READ_TIMEOUT + SLACK,
                    "a slowloris client was not cut off at the header-read timeout"
                );
            }
            started.elapsed()
        };
        futures::future::join_all((0..200).map(trickle)).await
    })
    .await;
    let longest = *lifetimes.iter().max().unwrap();
    eprintln!("[cp slowloris] 200 trickling clients cut off; longest lived {longest:?}");
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_of_every_kind_are_closed_after_the_idle_timeout() {
    let _alone = alone().await;
    // The header-read timeout would close idle HTTP/1.1 keep-alive on its
    // own; make it long so the idle timeout is what is being tested.
    const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
    let (cp, _dir) = control_plane(ServerConfig {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: IDLE_TIMEOUT,
        max_connections: 256,
        ..ServerConfig::default()
    })
    .await;
    let addr = cp.addr;
    let ((silent, keep_alive, h2), _) = attack(addr, "cp idle", async {
        // Sockets that never send a byte.
        let mut silent = Vec::new();
        for _ in 0..100 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        // HTTP/1.1 connections that made one request and then sit idle.
        let mut keep_alive = Vec::new();
        for _ in 0..100 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let req = "GET /healthz HTTP/1.1\r\nHost: control-plane\r\n\r\n";
            tcp.write_all(req.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            keep_alive.push(tcp);
        }
        // h2c connections, settled and then silent.
        let mut h2 = Vec::new();
        for _ in 0..20 {
            h2.push(wire::h2c_connect(addr).await.0);
        }
        (silent, keep_alive, h2)
    })
    .await;
    // 220 idle connections sit under a cap of 256: new clients still got
    // in above; now each must close at its own idle timeout.
    let (closed, took) = wire::until_all_closed(
        silent.into_iter().chain(keep_alive).chain(h2),
        Duration::from_secs(15),
    )
    .await;
    eprintln!("[cp idle] {closed} idle connections all closed {took:?} after the last was opened");
    assert!(
        took <= IDLE_TIMEOUT + SLACK,
        "closed {took:?} after the last was opened"
    );
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_full_of_idle_connections_makes_room_for_new_clients() {
    let _alone = alone().await;
    const CAP: usize = 50;
    // The idle timeout alone would keep the good client out for 30 s.
    let (cp, _dir) = control_plane(ServerConfig {
        max_connections: CAP,
        idle_timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..CAP {
        silent.push(TcpStream::connect(cp.addr).await.unwrap());
    }
    // Every one is accepted at once (the accept loop only accepts); then
    // give them the second of quiet that makes them evictable.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ((), latencies) = attack(cp.addr, "cp cap full of idle", async {
        // A few rounds, each evicting another silent socket.
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    let evicted = wire::count_closed(&mut silent, Duration::from_millis(50)).await;
    eprintln!(
        "[cp cap full of idle] {} good requests served at the cap; {evicted} silent sockets evicted",
        latencies.samples.len()
    );
    assert!(evicted >= 1, "no silent socket made room");
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_heads_get_431_and_long_targets_get_414() {
    let _alone = alone().await;
    let (cp, _dir) = control_plane(ServerConfig::default()).await;
    let addr = cp.addr;
    let wait = Duration::from_secs(10);
    let (answers, _) = attack(addr, "cp oversize", async {
        let mut answers = Vec::new();
        for req in &wire::oversize_heads("/healthz", "/healthz?", "control-plane") {
            answers.push(wire::exchange(addr, req.as_bytes(), wait).await);
        }
        answers
    })
    .await;
    let status = |a: &str| a.lines().next().unwrap_or("").to_string();
    eprintln!(
        "[cp oversize] 100 KiB header: {:?}; 200 headers: {:?}; 10 KiB target: {:?}",
        status(&answers[0]),
        status(&answers[1]),
        status(&answers[2]),
    );
    assert!(answers[0].starts_with("HTTP/1.1 431"), "{}", answers[0]);
    assert!(answers[1].starts_with("HTTP/1.1 431"), "{}", answers[1]);
    assert!(answers[2].starts_with("HTTP/1.1 414"), "{}", answers[2]);
    assert!(
        answers[2].contains(r#""code":"uri_too_long""#),
        "{}",
        answers[2]
    );
    cp.stop().await;
}

/// A log follow stream of a quiet app sends nothing for far longer than
/// the idle timeout; its request is in flight, so it stays open (the node
/// watch stream has heartbeats, a follow stream has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_follow_stream_outlives_the_idle_timeout() {
    let _alone = alone().await;
    const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
    let (cp, _dir) = control_plane(ServerConfig {
        idle_timeout: IDLE_TIMEOUT,
        ..ServerConfig::default()
    })
    .await;
    let token = cp.acme_with_web_app().await;
    let req = Request::get(format!("http://{}/v1/apps/web/logs?follow=true", cp.addr))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // Three idle timeouts without a byte: the stream must still be open.
    let waited = tokio::time::timeout(IDLE_TIMEOUT * 3, body.frame()).await;
    assert!(
        waited.is_err(),
        "the follow stream ended or failed during its quiet: {waited:?}"
    );
    // And it still delivers.
    let line = serde_json::json!([{"tenant": "acme", "app": "web", "request_id": 1,
        "stream": "stdout", "text": "late line", "time_ms": 1}]);
    let (status, body_text) = cp
        .json("POST", "/v1/nodes/edge-1/logs", crate::support::NODE, line)
        .await;
    assert_eq!(status, 204, "{body_text}");
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the line within 10 s")
        .expect("the stream still open")
        .unwrap();
    let data = frame.into_data().unwrap();
    assert!(
        String::from_utf8_lossy(&data).contains("late line"),
        "{data:?}"
    );
    cp.stop().await;
}
