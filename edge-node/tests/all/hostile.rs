//! Hostile HTTP clients and hostile guests against a real in-process node.
//!
//! In every test a well-behaved client keeps asking a normal app for `/`
//! while the attack runs; each of its requests must get 200 within a
//! generous bound (its latencies are printed, never asserted), and the
//! node's `outpost_http_connections_open` gauge must come back to where it
//! started once the attackers are gone.
//!
//! Guest-side abuse already covered elsewhere, not repeated here:
//! a guest holding its request forever → 504 (`limits.rs`,
//! `a_guest_waiting_on_the_host_hits_the_deadline`), deep recursion → 500
//! with the neighbour and later requests fine (`limits.rs`,
//! `unbounded_recursion_overflows_the_stack_cleanly`,
//! `a_trap_fails_only_its_own_request`), outbound HTTP to a host off the
//! allow-list (`outbound.rs`,
//! `allowed_hosts_are_reached_others_denied_and_subrequests_capped`).

use std::time::{Duration, Instant};

use crate::support::wire::{self, Latencies, while_attacking};
use crate::support::{TestNode, app, quick_limits};
use outpost_edge_node::config::{ConnectionConfig, ServerConfig};
use outpost_runtime::{AppSpec, Limits};
use outpost_test_fixtures as fixtures;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GOOD: &str = "good.example.com";
const GOOD_BODY: &str = "still here\n";

/// A node with the good app plus `others`, under `server`. Every test here
/// measures the whole test process (fds, RSS, connection counts, a good
/// client's latency), so it holds [`crate::support::alone`] first.
async fn node(server: ServerConfig, others: Vec<(&[&str], AppSpec)>) -> TestNode {
    let mut apps = vec![(
        &[GOOD][..],
        app(
            "good",
            "hello",
            fixtures::hello(GOOD_BODY),
            Limits::default(),
        ),
    )];
    apps.extend(others);
    TestNode::start_alone(server, apps).await
}

/// What a timeout may overrun its configured value by in these tests:
/// hundreds of clients on two cores, each polling in 200 ms steps.
const SLACK: Duration = Duration::from_secs(1);

fn server() -> ServerConfig {
    server_with(ConnectionConfig::default())
}

/// The node's `[server]` with these connection settings, and a short
/// shutdown grace.
fn server_with(connections: ConnectionConfig) -> ServerConfig {
    ServerConfig {
        connections: ConnectionConfig {
            shutdown_grace: Duration::from_secs(1),
            ..connections
        },
        ..ServerConfig::default()
    }
}

async fn attack<F: std::future::Future>(
    node: &TestNode,
    label: &str,
    f: F,
) -> (F::Output, Latencies) {
    let (out, latencies) = while_attacking(node.http, GOOD, GOOD_BODY, f).await;
    latencies.report(label);
    (out, latencies)
}

fn rss_mib() -> f64 {
    wire::rss_kib() as f64 / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_off_at_the_header_read_timeout() {
    let _alone = crate::support::alone().await;
    const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
    let node = node(
        server_with(ConnectionConfig {
            header_read_timeout: HEADER_READ_TIMEOUT,
            ..ConnectionConfig::default()
        }),
        vec![],
    )
    .await;
    let baseline = node.http_connections_open().await;
    // 200 clients each send a never-ending head, one byte every 200 ms.
    let (lifetimes, _) = attack(&node, "slowloris", async {
        let trickle = |_| async {
            let mut tcp = TcpStream::connect(node.http).await.unwrap();
            let head = format!("GET / HTTP/1.1\r\nHost: {GOOD}\r\nX-Padding: ");
            let started = Instant::now();
            let bytes = head.bytes().chain(std::iter::repeat(b'a'));
            for b in bytes {
                if tcp.write_all(&[b]).await.is_err() {
                    break;
                }
                // The node closing the socket shows as EOF on a read.
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => {}
                    Err(_) => {}
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
    eprintln!("[slowloris] 200 trickling clients cut off; longest lived {longest:?}");
    assert!(longest <= HEADER_READ_TIMEOUT + SLACK, "{longest:?}");
    node.wait_connections_back_to(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_of_every_kind_are_closed_after_the_idle_timeout() {
    let _alone = crate::support::alone().await;
    // The header-read timeout would close idle HTTP/1.1 keep-alive on its
    // own; make it long so the idle timeout is what is being tested.
    const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
    let node = node(
        server_with(ConnectionConfig {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: IDLE_TIMEOUT,
            max_connections: 256,
            ..ConnectionConfig::default()
        }),
        vec![],
    )
    .await;
    let baseline = node.http_connections_open().await;
    let ((silent, keep_alive, h2), _) = attack(&node, "idle", async {
        // Sockets that never send a byte.
        let mut silent = Vec::new();
        for _ in 0..100 {
            silent.push(TcpStream::connect(node.http).await.unwrap());
        }
        // HTTP/1.1 connections that made one request and then sit idle.
        let mut keep_alive = Vec::new();
        for _ in 0..100 {
            let mut tcp = TcpStream::connect(node.http).await.unwrap();
            let req = format!("GET / HTTP/1.1\r\nHost: {GOOD}\r\n\r\n");
            tcp.write_all(req.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            keep_alive.push(tcp);
        }
        // h2c connections, settled and then silent.
        let mut h2 = Vec::new();
        for _ in 0..20 {
            h2.push(wire::h2c_connect(node.http).await.0);
        }
        (silent, keep_alive, h2)
    })
    .await;
    // 220 idle connections sit under a cap of 256: new clients still get in.
    let (closed, took) = wire::until_all_closed(
        silent.into_iter().chain(keep_alive).chain(h2),
        Duration::from_secs(15),
    )
    .await;
    eprintln!(
        "[idle] {closed} idle connections (100 silent, 100 HTTP/1.1 keep-alive, 20 h2c) all closed {took:?} after the last was opened"
    );
    // Each closes at its own idle timeout; the last was opened at `started`.
    assert!(
        took <= IDLE_TIMEOUT + SLACK,
        "closed {took:?} after the last was opened"
    );
    node.wait_connections_back_to(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_full_of_idle_connections_makes_room_for_new_clients() {
    let _alone = crate::support::alone().await;
    // The idle timeout alone would keep the good client out for 30 s.
    let node = node(
        server_with(ConnectionConfig {
            max_connections: 64,
            idle_timeout: Duration::from_secs(30),
            ..ConnectionConfig::default()
        }),
        vec![],
    )
    .await;
    let baseline = node.http_connections_open().await;
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(TcpStream::connect(node.http).await.unwrap());
    }
    let started = Instant::now();
    while node.http_connections_open().await < 64.0 {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give them the second of quiet that makes them evictable.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ((), latencies) = attack(&node, "cap full of idle", async {
        // A few rounds, each evicting another silent socket.
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    assert!(latencies.samples.len() >= 2);
    let evicted = wire::count_closed(&mut silent, Duration::from_millis(50)).await;
    eprintln!(
        "[cap full of idle] {} good requests served at the cap; {evicted} silent sockets evicted",
        latencies.samples.len()
    );
    // The first good request took a silent socket's place; the ones after
    // it found the slot it left behind.
    assert!(evicted >= 1, "no silent socket made room");
    drop(silent);
    node.wait_connections_back_to(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_heads_get_431_and_long_targets_get_414() {
    let _alone = crate::support::alone().await;
    let node = node(
        server(),
        vec![(
            &["echo.example.com"],
            app("t", "echo", fixtures::echo(), quick_limits()),
        )],
    )
    .await;
    let baseline = node.http_connections_open().await;
    let wait = Duration::from_secs(10);
    let (answers, _) = attack(&node, "oversize", async {
        let [big_header, many_headers, long_target] =
            wire::oversize_heads("/", "/", "echo.example.com");
        // Longer than the whole head may be: hyper's own limit answers.
        let huge_target = format!(
            "GET /{} HTTP/1.1\r\nHost: echo.example.com\r\n\r\n",
            "p".repeat(70 * 1024)
        );
        let mut answers = Vec::new();
        for req in [&big_header, &many_headers, &long_target, &huge_target] {
            answers.push(wire::exchange(node.http, req.as_bytes(), wait).await);
        }
        // Nine more rounds, so the good client has an attack to live through.
        for _ in 0..9 {
            for (req, first) in [&big_header, &many_headers, &long_target, &huge_target]
                .into_iter()
                .zip(answers.clone())
            {
                let again = wire::exchange(node.http, req.as_bytes(), wait).await;
                assert_eq!(again.lines().next(), first.lines().next());
            }
        }
        answers
    })
    .await;
    let status = |a: &str| a.lines().next().unwrap_or("").to_string();
    eprintln!(
        "[oversize] 100 KiB header: {:?}; 200 headers: {:?}; 10 KiB target: {:?}; 70 KiB target: {:?}",
        status(&answers[0]),
        status(&answers[1]),
        status(&answers[2]),
        status(&answers[3])
    );
    assert!(answers[0].starts_with("HTTP/1.1 431"), "{}", answers[0]);
    assert!(answers[1].starts_with("HTTP/1.1 431"), "{}", answers[1]);
    assert!(answers[2].starts_with("HTTP/1.1 414"), "{}", answers[2]);
    assert!(answers[2].contains("x-outpost-error: uri_too_long"));
    // 70 KiB is over both hyper's 64 KiB target limit and the 64 KiB head
    // buffer; the buffer is hit first, so this is a 431, not a 414.
    assert!(answers[3].starts_with("HTTP/1.1 431"), "{}", answers[3]);
    // None of them reached the guest.
    let served = r#"outpost_http_requests_total{app="echo",status="2xx",tenant="t"}"#;
    assert_eq!(node.metric(served).await, 0.0);
    node.wait_connections_back_to(baseline).await;
}

/// A request with `body` after a chunked head, for host `host`.
fn chunked(host: &str, body: &str) -> String {
    format!("POST / HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunked_bodies_never_reach_the_guest_as_data() {
    let _alone = crate::support::alone().await;
    let node = node(
        server(),
        vec![(
            &["echo.example.com"],
            app("t", "echo", fixtures::echo(), quick_limits()),
        )],
    )
    .await;
    let baseline = node.http_connections_open().await;
    let host = "echo.example.com";
    // Everything after the first framing error carries MARKER; the echo
    // guest would send it back if it ever got those bytes as body.
    let cases = [
        ("invalid hex size", "zz\r\nMARKER\r\n0\r\n\r\n".to_string()),
        (
            "missing CRLF after data",
            "5\r\nhelloMARKER\r\n0\r\n\r\n".to_string(),
        ),
        (
            "size overflow",
            "fffffffffffffffffff\r\nMARKER\r\n0\r\n\r\n".to_string(),
        ),
        ("size with junk", "5x\r\nMARKER\r\n0\r\n\r\n".to_string()),
    ];
    let (answers, _) = attack(&node, "bad chunked", async {
        let mut answers = Vec::new();
        for (what, body) in cases.iter().cycle().take(cases.len() * 10) {
            let a = wire::exchange(
                node.http,
                chunked(host, body).as_bytes(),
                Duration::from_secs(10),
            )
            .await;
            answers.push((what, a));
        }
        // Truncated: the client stops mid-chunk and half-closes.
        let mut tcp = TcpStream::connect(node.http).await.unwrap();
        tcp.write_all(chunked(host, "a\r\nhel").as_bytes())
            .await
            .unwrap();
        tcp.shutdown().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
            .await
            .expect("the node answers or closes a truncated body")
            .ok();
        answers.push((&"truncated", String::from_utf8_lossy(&out).into_owned()));
        answers
    })
    .await;
    let mut printed = std::collections::HashSet::new();
    for (what, answer) in &answers {
        let first = answer.lines().next().unwrap_or("(closed)");
        if printed.insert((*what, first)) {
            eprintln!("[bad chunked] {what}: {first}");
        }
        // The guest may have started answering before the bad frame came
        // in (it streams), and sees a body stream error; it never sees the
        // bytes after the error as data.
        assert!(!answer.contains("MARKER"), "{what}: the guest got garbage");
    }
    node.wait_connections_back_to(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_requests_never_reach_another_tenant() {
    let _alone = crate::support::alone().await;
    let node = node(
        server(),
        vec![
            (
                &["a.example.com"],
                app("ta", "a", fixtures::echo(), quick_limits()),
            ),
            (
                &["b.example.com"],
                app("tb", "b", fixtures::echo(), quick_limits()),
            ),
        ],
    )
    .await;
    let baseline = node.http_connections_open().await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: b.example.com\r\n\r\n";
    let chunked_then_smuggled = format!("0\r\n\r\n{smuggled}");
    let n = chunked_then_smuggled.len();
    let head = "POST / HTTP/1.1\r\nHost: a.example.com\r\n";
    let cases = vec![
        // CL.TE: a front end trusting Content-Length would forward the
        // smuggled request as body; the node decodes chunked (TE wins) and
        // must then close the connection (RFC 9112 §6.3).
        (
            "CL + TE",
            format!(
                "{head}Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "TE + CL",
            format!(
                "{head}Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "two Content-Lengths",
            format!(
                "{head}Content-Length: 5\r\nContent-Length: {}\r\n\r\nhello{smuggled}",
                5 + smuggled.len()
            ),
        ),
        (
            "Content-Length list",
            format!(
                "{head}Content-Length: 5, {}\r\n\r\nhello{smuggled}",
                5 + smuggled.len()
            ),
        ),
        (
            "TE xchunked",
            format!("{head}Transfer-Encoding: xchunked\r\n\r\n{chunked_then_smuggled}"),
        ),
        (
            "TE chunked, identity",
            format!("{head}Transfer-Encoding: chunked, identity\r\n\r\n{chunked_then_smuggled}"),
        ),
        (
            "TE twice, last not chunked",
            format!(
                "{head}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "space before colon",
            format!("{head}Transfer-Encoding : chunked\r\n\r\n{chunked_then_smuggled}"),
        ),
        (
            "vertical tab in value",
            format!("{head}Transfer-Encoding: \x0bchunked\r\n\r\n{chunked_then_smuggled}"),
        ),
        (
            "TE on HTTP/1.0",
            format!(
                "POST / HTTP/1.0\r\nHost: a.example.com\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
        (
            "obs-fold TE",
            format!(
                "{head}X-Foo: bar\r\n Transfer-Encoding: chunked\r\n\r\n{chunked_then_smuggled}"
            ),
        ),
    ];
    let (answers, _) = attack(&node, "smuggling", async {
        let mut answers = Vec::new();
        for (what, req) in cases.iter().cycle().take(cases.len() * 10) {
            let a = wire::exchange(node.http, req.as_bytes(), Duration::from_secs(10)).await;
            answers.push((*what, a));
        }
        answers
    })
    .await;
    let mut printed = std::collections::HashSet::new();
    for (what, answer) in &answers {
        let first = answer.lines().next().unwrap_or("(closed)");
        let responses = answer.matches("HTTP/1.").count();
        if printed.insert((*what, first)) {
            eprintln!("[smuggling] {what}: {first} ({responses} response(s))");
        }
        assert!(!answer.contains("GET /smuggled"), "{what}: {answer}");
        assert!(responses <= 1, "{what}: {answer}");
    }
    let b_served = r#"outpost_http_requests_total{app="b",status="2xx",tenant="tb"}"#;
    assert_eq!(node.metric(b_served).await, 0.0, "tenant b saw a request");
    // The series is live: a real request to b shows up in it.
    let (status, _) = wire::good_get(node.http, "b.example.com").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(node.metric(b_served).await, 1.0);
    node.wait_connections_back_to(baseline).await;
}

/// h2 settings every HTTP/2 test pins explicitly.
fn h2_server() -> ServerConfig {
    server_with(ConnectionConfig {
        h2_max_concurrent_streams: 100,
        h2_max_pending_accept_reset_streams: 20,
        ..ConnectionConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_ends_the_connection_and_memory_stays_bounded() {
    let _alone = crate::support::alone().await;
    let node = node(
        h2_server(),
        vec![(
            &["victim.example.com"],
            app("t", "victim", fixtures::hello("ok\n"), quick_limits()),
        )],
    )
    .await;
    let baseline = node.http_connections_open().await;
    let rss_before = rss_mib();
    // CVE-2023-44487: three waves of ten connections, each trying to open
    // and at once cancel 5000 streams.
    let (seen, _) = attack(&node, "h2 rapid reset", async {
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.extend(
                futures::future::join_all(
                    (0..10).map(|_| wire::h2_rapid_reset(node.http, "victim.example.com", 5000)),
                )
                .await,
            );
        }
        seen
    })
    .await;
    let rss_after = rss_mib();
    let ran: f64 = {
        let mut total = 0.0;
        for class in ["2xx", "4xx", "5xx"] {
            let series = format!(
                r#"outpost_http_requests_total{{app="victim",status="{class}",tenant="t"}}"#
            );
            total += node.metric(&series).await;
        }
        total
    };
    let written: Vec<u32> = seen.iter().map(|s| s.sent).collect();
    eprintln!(
        "[h2 rapid reset] 30 connections; HEADERS+RST_STREAM pairs written before the node closed each: {written:?}; GOAWAY codes {:?}; responses {}",
        seen.iter()
            .map(|s| s.goaway)
            .collect::<std::collections::BTreeSet<_>>(),
        seen.iter().map(|s| s.responses).sum::<u32>()
    );
    eprintln!(
        "[h2 rapid reset] guest requests that completed: {ran}; RSS {rss_before:.1} MiB before, {rss_after:.1} MiB after"
    );
    // Past 20 streams reset before they were accepted the node answers
    // GOAWAY ENHANCE_YOUR_CALM (0xb) and closes: no connection gets to
    // push all 5000 through.
    for s in &seen {
        assert_eq!(s.goaway, Some(0xb), "{s:?}");
    }
    assert!(
        rss_after - rss_before < 256.0,
        "RSS grew {rss_before} → {rss_after} MiB"
    );
    node.wait_connections_back_to(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_past_the_concurrency_cap_are_refused() {
    let _alone = crate::support::alone().await;
    let limits = Limits {
        max_concurrency: 2000,
        ..quick_limits()
    };
    let node = node(
        h2_server(),
        vec![(
            &["slow.example.com"],
            app("t", "slow", fixtures::slow(1000), limits),
        )],
    )
    .await;
    let baseline = node.http_connections_open().await;
    let rss_before = rss_mib();
    // 1000 streams at once on one connection to an app that takes 1 s:
    // only 100 may be open together.
    let (seen, _) = attack(&node, "h2 stream flood", async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let (tcp, _) = wire::h2c_connect(node.http).await;
            let (mut rd, mut wr) = tcp.into_split();
            let mut buf = Vec::new();
            for i in 0..1000 {
                wire::get_headers(&mut buf, 1 + 2 * i, "slow.example.com");
            }
            wr.write_all(&buf).await.unwrap();
            let mut seen = wire::H2Seen {
                sent: 1000,
                ..wire::H2Seen::default()
            };
            while seen.responses + seen.refused < 1000 && seen.goaway.is_none() {
                let Some(f) = wire::read_frame(&mut rd).await else {
                    break;
                };
                seen.record(&f);
            }
            seen
        })
        .await
        .expect("every stream is answered or refused within 30 s")
    })
    .await;
    let rss_after = rss_mib();
    eprintln!(
        "[h2 stream flood] {} streams: {} answered, {} refused (REFUSED_STREAM), GOAWAY {:?}; RSS {rss_before:.1} → {rss_after:.1} MiB",
        seen.sent, seen.responses, seen.refused, seen.goaway
    );
    assert_eq!(seen.goaway, None);
    assert_eq!(seen.responses + seen.refused, 1000);
    // The first 100 are served. All 1000 arrive within milliseconds while
    // each takes a second, so hardly any more fit; twice the cap is slack
    // for a slow machine.
    assert!(seen.responses >= 100 && seen.responses <= 200, "{seen:?}");
    assert!(rss_after - rss_before < 256.0);
    node.wait_connections_back_to(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_past_the_cap_are_closed_at_once() {
    let _alone = crate::support::alone().await;
    const ATTACKERS: usize = 10_000;
    const CAP: usize = 512;
    // Each attacker costs this process one fd, each accepted one another.
    let needed = (ATTACKERS + CAP + 1024) as u64;
    let (soft, hard) = wire::nofile_limits();
    if soft < needed {
        // Root (as in CI) may raise the hard limit too.
        let status = std::process::Command::new("prlimit")
            .args([
                "--pid",
                &std::process::id().to_string(),
                &format!("--nofile={needed}:{}", hard.max(needed)),
            ])
            .status();
        if !matches!(status, Ok(s) if s.success()) || wire::nofile_limits().0 < needed {
            fixtures::cannot_run(&format!(
                "could not raise the open-files limit to {needed} (hard limit {hard})"
            ));
            return;
        }
    }
    let node = node(
        server_with(ConnectionConfig {
            max_connections: CAP,
            idle_timeout: Duration::from_secs(2),
            ..ConnectionConfig::default()
        }),
        vec![],
    )
    .await;
    let baseline = node.http_connections_open().await;
    let fds_before = wire::open_fds();
    let rss_before = rss_mib();
    let peak = std::sync::atomic::AtomicU64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (lifetimes, latencies) = attack(&node, "10k connections", async {
        let sample = async {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let open = node.http_connections_open().await as u64;
                peak.fetch_max(open, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let flood = async {
            use futures::StreamExt;
            // Each attacker connects, says nothing and waits for the node
            // to close its socket: at once past the cap, after the idle
            // timeout otherwise.
            //
            // At most 256 handshakes are in flight at once: the node's
            // listen backlog is 1024, and past it the kernel (not the node)
            // leaves clients waiting for SYN-ACK retransmits for many
            // seconds, which would measure the kernel, not the node.
            let connecting = tokio::sync::Semaphore::new(256);
            let lifetimes: Vec<Option<Duration>> = futures::stream::iter(0..ATTACKERS)
                .map(|_| async {
                    let permit = connecting.acquire().await.unwrap();
                    let tcp = TcpStream::connect(node.http).await;
                    drop(permit);
                    let mut tcp = tcp.ok()?;
                    let started = Instant::now();
                    let mut buf = [0u8; 16];
                    let read = tokio::time::timeout(Duration::from_secs(60), tcp.read(&mut buf));
                    match read.await {
                        Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
                        Ok(Ok(_)) => panic!("the node sent bytes to a silent client"),
                        Err(_) => panic!("an attacker's socket was held for 60 s"),
                    }
                })
                .buffer_unordered(ATTACKERS)
                .collect()
                .await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            lifetimes
        };
        tokio::join!(sample, flood).1
    })
    .await;
    let failed = lifetimes.iter().filter(|l| l.is_none()).count();
    let lifetimes: Vec<Duration> = lifetimes.into_iter().flatten().collect();
    let refused = lifetimes
        .iter()
        .filter(|l| **l < Duration::from_secs(1))
        .count();
    let held = lifetimes.len() - refused;
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    node.wait_connections_back_to(baseline).await;
    // Closed sockets leave this process's fd table at once; poll briefly
    // for the node's tasks to drop theirs.
    let started = Instant::now();
    let mut fds_after = wire::open_fds();
    while fds_after > fds_before + 8 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        fds_after = wire::open_fds();
    }
    let rss_after = rss_mib();
    eprintln!(
        "[10k connections] cap {CAP}: {refused} closed within 1 s (past the cap), {held} held for a second or more (then evicted to make room, or closed idle), {failed} connects failed; gauge peak {peak}; good client retries {}; fds {fds_before} → {fds_after}; RSS {rss_before:.1} → {rss_after:.1} MiB",
        latencies.retries
    );
    assert!(peak <= CAP as u64, "gauge peaked at {peak}");
    assert!(refused > 0 && held > 0, "{refused} refused, {held} held");
    assert!(
        fds_after <= fds_before + 8,
        "fds {fds_before} → {fds_after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_and_memory_stays_bounded() {
    let _alone = crate::support::alone().await;
    let limits = Limits {
        timeout: Duration::from_secs(3),
        max_response_body_bytes: 1 << 30,
        ..Limits::default()
    };
    let node = node(
        server_with(ConnectionConfig {
            idle_timeout: Duration::from_secs(2),
            ..ConnectionConfig::default()
        }),
        vec![(
            &["large.example.com"],
            app("t", "large", fixtures::large(512 << 20), limits),
        )],
    )
    .await;
    let baseline = node.http_connections_open().await;
    let rss_before = rss_mib();
    let mut rss_peak = rss_before;
    let ((), _) = attack(&node, "never reads", async {
        // Twenty clients ask for 512 MiB each and never read a byte.
        let mut stalled = Vec::new();
        for _ in 0..20 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let mut tcp = socket.connect(node.http).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: large.example.com\r\n\r\n")
                .await
                .unwrap();
            stalled.push(tcp);
        }
        // The node lets go of them while they still hold their sockets.
        let started = Instant::now();
        loop {
            rss_peak = rss_peak.max(rss_mib());
            if node.http_connections_open().await == baseline {
                break;
            }
            // The guest's deadline (3 s) ends the response; the idle
            // timeout (2 s, no byte moved) would end it even sooner.
            assert!(
                started.elapsed() <= Duration::from_secs(3) + SLACK,
                "stalled readers still connected past the guest's deadline"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "[never reads] node dropped 20 stalled readers after {:?}",
            started.elapsed()
        );
        drop(stalled);
    })
    .await;
    let kills = node
        .metric(r#"outpost_runtime_limit_kills_total{app="large",reason="timeout",tenant="t"}"#)
        .await;
    eprintln!(
        "[never reads] RSS {rss_before:.1} MiB before, {rss_peak:.1} MiB peak; guest timeouts {kills}"
    );
    // Buffering the answers would take 10 GiB.
    assert!(
        rss_peak - rss_before < 256.0,
        "RSS peaked at {rss_peak} MiB"
    );
    node.wait_connections_back_to(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_flooding_stdout_is_capped_and_counted() {
    let _alone = crate::support::alone().await;
    const CHUNKS: u32 = 16 * 1024; // 64 MiB of output per request
    let limits = Limits::default();
    let cap = limits.max_log_bytes_per_request;
    let node = node(
        server(),
        vec![(
            &["flood.example.com"],
            app("t", "flood", fixtures::stdout_flood(CHUNKS), limits),
        )],
    )
    .await;
    let baseline = node.http_connections_open().await;
    let rss_before = rss_mib();
    let (answers, _) = attack(&node, "stdout flood", async {
        futures::future::join_all((0..4).map(|_| wire::good_get(node.http, "flood.example.com")))
            .await
    })
    .await;
    let rss_after = rss_mib();
    for a in answers {
        assert_eq!(a.unwrap(), (200, "flooded\n".to_string()));
    }
    let written = u64::from(CHUNKS) * 4096;
    let dropped = node
        .metric(r#"outpost_runtime_guest_log_dropped_bytes_total{app="flood",tenant="t"}"#)
        .await;
    eprintln!(
        "[stdout flood] 4 requests × {written} bytes of stdout, cap {cap}/request: dropped {dropped}; RSS {rss_before:.1} → {rss_after:.1} MiB"
    );
    assert_eq!(dropped, (4 * (written - cap)) as f64);
    assert!(rss_after - rss_before < 64.0);
    node.wait_connections_back_to(baseline).await;
}
