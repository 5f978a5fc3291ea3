//! Every limit gives its status and reason, and never disturbs a
//! neighbouring app: the neighbour answers 200 while the hostile request is
//! in flight and after it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Reply, TestNode, app, quick_limits};
use outpost_runtime::Limits;
use outpost_test_fixtures as fixtures;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NEIGHBOUR: &str = "neighbour.example.com";
const HOSTILE: &str = "hostile.example.com";

async fn node_with(hostile: Vec<u8>, limits: Limits) -> TestNode {
    TestNode::start(vec![
        (
            &[NEIGHBOUR],
            app(
                "good",
                "hello",
                fixtures::hello("still here\n"),
                Limits::default(),
            ),
        ),
        (&[HOSTILE], app("evil", "hostile", hostile, limits)),
    ])
    .await
}

/// A hostile request that takes longer than this leaves room for many
/// neighbour requests (each a millisecond or two): if none finished while
/// it ran, the node served one request at a time.
const ROOM_FOR_NEIGHBOURS: Duration = Duration::from_millis(200);

/// Runs `hostile` while the neighbour is hit in a loop; checks that the
/// neighbour answered 200 throughout, that replies *finished* while the
/// hostile request was still running (when it ran long enough for that to
/// mean something), and that it answers after.
async fn with_neighbour<F: Future<Output = Reply>>(node: &TestNode, hostile: F) -> Reply {
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let ((reply, lasted), during) = tokio::join!(
        async {
            let r = hostile.await;
            done.store(true, Ordering::SeqCst);
            (r, started.elapsed())
        },
        async {
            let mut during = 0;
            loop {
                let r = node.get(NEIGHBOUR, "/").await;
                assert_eq!(
                    (r.status.as_u16(), r.text().as_str()),
                    (200, "still here\n")
                );
                // Read after the reply: one that ended after the hostile
                // request is not "during".
                if done.load(Ordering::SeqCst) {
                    break during;
                }
                during += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    );
    if lasted > ROOM_FOR_NEIGHBOURS {
        assert!(
            during >= 1,
            "no neighbour reply finished during the {lasted:?} the hostile request ran"
        );
    }
    let after = node.get(NEIGHBOUR, "/").await;
    assert_eq!(after.status, 200);
    reply
}

/// Waits (bounded) until a metric reaches `want`: kills are recorded by the
/// request's task, which may finish just after the response went out.
async fn wait_metric(node: &TestNode, series: &str, want: f64) {
    for _ in 0..200 {
        if node.metric(series).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{series} never reached {want}:\n{}", node.scrape().await);
}

fn kills(reason: &str) -> String {
    format!(r#"outpost_runtime_limit_kills_total{{app="hostile",reason="{reason}",tenant="evil"}}"#)
}

#[tokio::test]
async fn a_spinning_guest_runs_out_of_fuel() {
    let limits = Limits {
        fuel: 20_000_000,
        ..quick_limits()
    };
    let node = node_with(fixtures::infinite_loop(), limits).await;
    let r = with_neighbour(&node, node.get(HOSTILE, "/")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.outpost_error(), Some("fuel"));
    assert!(r.text().contains("fuel"), "{}", r.text());
    wait_metric(&node, &kills("fuel"), 1.0).await;
    let burned = node
        .metric(r#"outpost_runtime_fuel_consumed_total{app="hostile",tenant="evil"}"#)
        .await;
    assert!(burned >= 20_000_000.0, "fuel consumed {burned}");
}

/// A request that passes its foreground CPU budget (10 ms) finishes in the
/// low-priority background lane, and its app's next requests start there;
/// the neighbour never leaves the foreground.
#[tokio::test]
async fn a_spinning_app_is_moved_to_the_background_lane_and_its_neighbour_is_not() {
    // 50 million fuel is some 50 ms of CPU, well past the 10 ms budget.
    // The deadline is generous: a busy machine gives nice-19 threads only
    // a sliver of CPU, and this test is about lanes, not deadlines.
    let limits = Limits {
        fuel: 50_000_000,
        timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    let node = node_with(fixtures::infinite_loop(), limits).await;
    let lane = |what: &str, app: &str, tenant: &str| match what {
        "background" => {
            format!(r#"outpost_runtime_background_requests_total{{app="{app}",tenant="{tenant}"}}"#)
        }
        reason => format!(
            r#"outpost_runtime_demotions_total{{app="{app}",reason="{reason}",tenant="{tenant}"}}"#
        ),
    };

    let r = with_neighbour(&node, node.get(HOSTILE, "/")).await;
    assert_eq!(r.outpost_error(), Some("fuel"));
    // Moved mid-flight once its budget was used up, then demoted again by
    // the fuel kill.
    wait_metric(&node, &lane("cpu", "hostile", "evil"), 1.0).await;
    wait_metric(&node, &lane("limit", "hostile", "evil"), 1.0).await;
    wait_metric(&node, &lane("background", "hostile", "evil"), 1.0).await;

    // Demoted: the next request starts in the background, so it never
    // uses a foreground budget and no new CPU demotion is counted.
    let r = with_neighbour(&node, node.get(HOSTILE, "/")).await;
    assert_eq!(r.outpost_error(), Some("fuel"));
    wait_metric(&node, &lane("limit", "hostile", "evil"), 2.0).await;
    assert_eq!(
        node.metric(&lane("background", "hostile", "evil")).await,
        2.0
    );
    assert_eq!(node.metric(&lane("cpu", "hostile", "evil")).await, 1.0);

    for what in ["background", "cpu", "limit"] {
        assert_eq!(
            node.metric(&lane(what, "hello", "good")).await,
            0.0,
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_spinning_guest_with_fuel_to_spare_hits_the_deadline() {
    let limits = Limits {
        fuel: u64::MAX / 2,
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let node = node_with(fixtures::infinite_loop(), limits).await;
    let r = with_neighbour(&node, node.get(HOSTILE, "/")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.outpost_error(), Some("timeout"));
    wait_metric(&node, &kills("timeout"), 1.0).await;
    wait_metric(
        &node,
        r#"outpost_runtime_instances_in_flight{app="hostile",tenant="evil"}"#,
        0.0,
    )
    .await;
}

#[tokio::test]
async fn a_guest_waiting_on_the_host_hits_the_deadline() {
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let node = node_with(fixtures::slow(60_000), limits).await;
    let r = with_neighbour(&node, node.get(HOSTILE, "/")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.outpost_error(), Some("timeout"));
    wait_metric(&node, &kills("timeout"), 1.0).await;
}

#[tokio::test]
async fn a_memory_bomb_is_refused_memory_and_reported() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..quick_limits()
    };
    let node = node_with(fixtures::memory_bomb(), limits).await;
    let r = with_neighbour(&node, node.get(HOSTILE, "/")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.outpost_error(), Some("memory"));
    wait_metric(&node, &kills("memory"), 1.0).await;
}

#[tokio::test]
async fn host_resources_a_guest_holds_are_capped_and_reported_as_memory() {
    // Well under the cap: served.
    let node = node_with(fixtures::fields_flood(1000), quick_limits()).await;
    let r = node.get(HOSTILE, "/").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "kept them all\n")
    );

    // Twenty thousand header sets, each a host allocation no memory
    // limiter sees: stopped at the cap.
    let node = node_with(fixtures::fields_flood(20_000), quick_limits()).await;
    let r = with_neighbour(&node, node.get(HOSTILE, "/")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.outpost_error(), Some("memory"));
    wait_metric(&node, &kills("memory"), 1.0).await;
}

#[tokio::test]
async fn a_trap_fails_only_its_own_request() {
    let node = node_with(fixtures::trap(), quick_limits()).await;
    for _ in 0..3 {
        let r = with_neighbour(&node, node.get(HOSTILE, "/")).await;
        assert_eq!(r.status, 500);
        assert_eq!(r.outpost_error(), Some("trap"));
        assert!(r.text().contains("unreachable"), "{}", r.text());
    }
    wait_metric(
        &node,
        r#"outpost_runtime_traps_total{app="hostile",tenant="evil"}"#,
        3.0,
    )
    .await;
}

#[tokio::test]
async fn unbounded_recursion_overflows_the_stack_cleanly() {
    let node = node_with(fixtures::deep_recursion(), quick_limits()).await;
    let r = with_neighbour(&node, node.get(HOSTILE, "/")).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.outpost_error(), Some("trap"));
    assert!(r.text().contains("stack"), "{}", r.text());
}

#[tokio::test]
async fn past_max_concurrency_requests_get_503_with_retry_after() {
    let limits = Limits {
        max_concurrency: 1,
        ..quick_limits()
    };
    let node = node_with(fixtures::slow(1500), limits).await;
    let in_flight = r#"outpost_runtime_instances_in_flight{app="hostile",tenant="evil"}"#;
    let (first, second) = tokio::join!(node.get(HOSTILE, "/"), async {
        wait_metric(&node, in_flight, 1.0).await;
        with_neighbour(&node, node.get(HOSTILE, "/")).await
    });
    assert_eq!(
        (first.status.as_u16(), first.text().as_str()),
        (200, "awake\n")
    );
    assert_eq!(second.status, 503);
    assert_eq!(second.outpost_error(), Some("concurrency"));
    assert_eq!(second.headers["retry-after"], "1");
    wait_metric(&node, &kills("concurrency"), 1.0).await;
    // The slot is free again once the first request is done.
    wait_metric(&node, in_flight, 0.0).await;
    assert_eq!(node.get(HOSTILE, "/").await.status, 200);
}

#[tokio::test]
async fn a_request_body_over_the_cap_is_a_413() {
    let limits = Limits {
        max_request_body_bytes: 1024,
        ..quick_limits()
    };
    let node = node_with(fixtures::echo(), limits).await;
    let r = with_neighbour(&node, node.send("POST", HOSTILE, "/", vec![b'x'; 2048])).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.outpost_error(), Some("request_body"));
    let ok = node.send("POST", HOSTILE, "/", vec![b'x'; 1024]).await;
    assert_eq!(ok.status, 200);
    assert!(ok.text().ends_with(&"x".repeat(1024)));
    wait_metric(&node, &kills("request_body"), 1.0).await;
}

#[tokio::test]
async fn a_chunked_body_never_feeds_the_guest_past_the_cap() {
    let limits = Limits {
        max_request_body_bytes: 1024,
        ..quick_limits()
    };
    let node = node_with(fixtures::echo(), limits).await;
    let mut tcp = tokio::net::TcpStream::connect(node.http).await.unwrap();
    let chunk = "y".repeat(1000);
    let mut req = format!(
        "POST / HTTP/1.1\r\nhost: {HOSTILE}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    for _ in 0..4 {
        req += &format!("{:x}\r\n{chunk}\r\n", chunk.len());
    }
    req += "0\r\n\r\n";
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out).await;
    let echoed = out.iter().filter(|b| **b == b'y').count();
    assert!(echoed <= 1024, "the guest saw {echoed} body bytes");
    wait_metric(&node, &kills("request_body"), 1.0).await;
    assert_eq!(node.get(NEIGHBOUR, "/").await.status, 200);
}

#[tokio::test]
async fn a_response_body_over_the_cap_is_cut_off() {
    let limits = Limits {
        max_response_body_bytes: 1 << 20,
        ..quick_limits()
    };
    let node = node_with(fixtures::large(3 << 20), limits).await;
    let r = with_neighbour(&node, node.get(HOSTILE, "/")).await;
    assert_eq!(r.status, 200, "the head was already sent");
    // Cut at the cap: no byte past it, and not cut far before it (a
    // frame of slack).
    assert!(r.body_error.is_some(), "the body ended as if complete");
    let (cap, got) = (1usize << 20, r.body.len());
    assert!(got <= cap, "{got} bytes got through a cap of {cap}");
    assert!(
        got >= cap - 64 * 1024,
        "cut at {got}, far below the cap of {cap}"
    );
    wait_metric(&node, &kills("response_body"), 1.0).await;
}

/// An app whose requests keep trapping is answered 503 `app_throttled`
/// with `Retry-After` by the node itself (no instance: the trap count stops
/// growing; the answer is held up to a second so a client retrying at once
/// cannot turn refusals into a flood), while its neighbour serves; once the
/// pause is over it runs again, and tripping again at once doubles the
/// pause.
#[tokio::test]
async fn an_app_that_keeps_trapping_is_throttled_without_instances_and_its_neighbour_serves() {
    let node = node_with(fixtures::trap(), Limits::default()).await;
    let traps = r#"outpost_runtime_traps_total{app="hostile",tenant="evil"}"#;
    let throttled = kills("app_throttled");
    // The default breaker: 20 kills or traps in 10 s, at least half of
    // the app's requests.
    let mut first = None;
    for i in 0..40 {
        let r = with_neighbour(&node, node.get(HOSTILE, "/")).await;
        if r.outpost_error() == Some("app_throttled") {
            first = Some((i, r));
            break;
        }
        assert_eq!(r.status, 500, "{}", r.text());
    }
    let (tripped_after, r) = first.expect("40 traps in a row never throttled the app");
    assert_eq!(
        tripped_after, 20,
        "throttled after {tripped_after} traps, not 20"
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "1");
    wait_metric(&node, traps, 20.0).await;
    assert_eq!(node.metric(&throttled).await, 1.0);

    // Let back in after the pause: it runs (and traps) again.
    let started = Instant::now();
    loop {
        let r = node.get(HOSTILE, "/").await;
        if r.status == 500 {
            break;
        }
        assert_eq!(r.outpost_error(), Some("app_throttled"));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never let back in"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Tripping again right away: the pause doubles (2 s), so the app is
    // refused for longer than the first pause before it runs again.
    let mut tripped = None;
    for _ in 0..40 {
        let started = Instant::now();
        let r = node.get(HOSTILE, "/").await;
        if r.outpost_error() == Some("app_throttled") {
            tripped = Some(started);
            break;
        }
    }
    let tripped = tripped.expect("never throttled again");
    while node.get(HOSTILE, "/").await.status != 500 {
        assert!(
            tripped.elapsed() < Duration::from_secs(10),
            "never let back in"
        );
    }
    assert!(
        tripped.elapsed() >= Duration::from_millis(1500),
        "the second pause ({:?}) did not double the first (1 s)",
        tripped.elapsed()
    );
    assert_eq!(node.get(NEIGHBOUR, "/").await.status, 200);
}

#[tokio::test]
async fn many_memories_share_the_apps_memory_limit() {
    // Eight memories of 40 MiB each: every one is under the 64 MiB limit
    // on its own, and their 320 MiB sum is five times it.
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..quick_limits()
    };
    let node = node_with(fixtures::many_memories(8, 640), limits).await;
    let r = with_neighbour(&node, node.get(HOSTILE, "/")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.outpost_error(), Some("memory"));
    wait_metric(&node, &kills("memory"), 1.0).await;
}
