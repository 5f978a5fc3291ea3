//! A client that goes away cancels its request's instance: a guest that
//! waits or spins stops holding an instance (and its concurrency slot,
//! and its CPU) at once, instead of running on for nobody until its
//! deadline.

use std::time::{Duration, Instant};

use outpost_runtime::Limits;
use outpost_test_fixtures as fixtures;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{TestNode, app};

const HOST: &str = "slow.example.com";
const IN_FLIGHT: &str = r#"outpost_runtime_instances_in_flight{app="slow",tenant="t"}"#;

/// A node serving `wasm` at [`HOST`], with a deadline far longer than any
/// wait in these tests.
async fn node_with(wasm: Vec<u8>) -> TestNode {
    let limits = Limits {
        timeout: Duration::from_secs(60),
        fuel: u64::MAX / 2,
        max_concurrency: 1,
        ..Limits::default()
    };
    TestNode::start(vec![(&[HOST], app("t", "slow", wasm, limits))]).await
}

/// Polls the in-flight gauge until it reads `want`; returns how long that
/// took, or panics after `within`.
async fn until_in_flight(node: &TestNode, want: f64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let now = node.metric(IN_FLIGHT).await;
        if now == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{IN_FLIGHT} is still {now}, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends a request on a raw connection and leaves it open.
async fn open_request(node: &TestNode) -> TcpStream {
    let mut tcp = TcpStream::connect(node.http).await.unwrap();
    tcp.write_all(format!("GET / HTTP/1.1\r\nhost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tcp
}

/// Starts a request, waits until it holds an instance and `series` (if
/// any) reads 1, disconnects, and checks that the instance goes at once.
async fn a_disconnect_frees_the_instance(wasm: Vec<u8>, series: Option<&str>) {
    let node = node_with(wasm).await;
    let client = open_request(&node).await;
    until_in_flight(&node, 1.0, Duration::from_secs(10)).await;
    if let Some(series) = series {
        let started = Instant::now();
        while node.metric(series).await != 1.0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{series} stays 0"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(client);
    // The guest would hold the instance for 30 s more; 2 s is slack for a
    // loaded machine, not a deadline the guest could meet by itself.
    until_in_flight(&node, 0.0, Duration::from_secs(2)).await;
    // Its concurrency slot (max 1) is free again: a new request gets an
    // instance instead of 503 `concurrency`.
    let again = open_request(&node).await;
    until_in_flight(&node, 1.0, Duration::from_secs(10)).await;
    drop(again);
    until_in_flight(&node, 0.0, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_a_waiting_guest() {
    a_disconnect_frees_the_instance(fixtures::slow(30_000), None).await;
}

/// A spinning guest is moved to the background lane after 10 ms of CPU;
/// the client leaves once it is there, and the cancellation must reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_a_spinning_guest_in_the_background_lane() {
    let demoted = r#"outpost_runtime_demotions_total{app="slow",reason="cpu",tenant="t"}"#;
    a_disconnect_frees_the_instance(fixtures::infinite_loop(), Some(demoted)).await;
}
