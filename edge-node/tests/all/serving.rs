//! Request/response plumbing, loading, and observability of a real node.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use outpost_edge_node::metrics::Metrics;
use outpost_edge_node::{Error, Node};
use outpost_runtime::router::Route;
use outpost_runtime::{AppSpec, Limits, PoolConfig};
use outpost_test_fixtures as fixtures;

use crate::support::{TestNode, app, quick_limits};

#[tokio::test]
async fn echo_round_trips_method_path_headers_and_a_5_mib_body() {
    let node = TestNode::start(vec![(
        &["echo.example.com"],
        app("t", "echo", fixtures::echo(), Limits::default()),
    )])
    .await;
    let body: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let req = Request::put(format!("http://{}/upload/x?y=1", node.http))
        .header("host", "echo.example.com")
        .header("x-custom", "hello there")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let r = node.request(req).await;
    assert_eq!(r.status, 200);
    let sep = r
        .body
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("blank line after the headers");
    let head = String::from_utf8_lossy(&r.body[..sep]).into_owned();
    assert!(head.starts_with("PUT /upload/x?y=1\n"), "{head}");
    assert!(head.contains("\nx-custom: hello there"), "{head}");
    assert!(head.contains("\ncontent-length: 5242880"), "{head}");
    assert!(r.body[sep + 2..] == body[..], "the body came back altered");
}

#[tokio::test]
async fn a_multi_mib_response_streams_in_full() {
    let node = TestNode::start(vec![(
        &["big.example.com"],
        app("t", "big", fixtures::large(8 << 20), Limits::default()),
    )])
    .await;
    let r = node.get("big.example.com", "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 8 << 20);
    assert_eq!(&r.body[..20], b"0123456789abcdef0123");
}

#[tokio::test]
async fn guest_stdout_is_captured_per_app_and_tagged() {
    let node = TestNode::start(vec![(
        &["log.example.com"],
        app(
            "t",
            "logger",
            fixtures::stdout("hello from the guest"),
            Limits::default(),
        ),
    )])
    .await;
    let r = node.get("log.example.com", "/").await;
    assert_eq!(r.text(), "logged\n");
    let app = node.node.route("log.example.com", "/").unwrap();
    let lines = app.recent_logs();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].text, "hello from the guest");
    assert!(lines[0].request_id > 0);
}

#[tokio::test]
async fn guest_output_over_its_budget_is_dropped_and_counted() {
    let limits = Limits {
        max_log_bytes_per_request: 5,
        ..Limits::default()
    };
    let node = TestNode::start(vec![(
        &["log.example.com"],
        app("t", "logger", fixtures::stdout("0123456789"), limits),
    )])
    .await;
    assert_eq!(node.get("log.example.com", "/").await.status, 200);
    let app = node.node.route("log.example.com", "/").unwrap();
    assert_eq!(app.recent_logs()[0].text, "01234");
    assert_eq!(
        node.metric(r#"outpost_runtime_guest_log_dropped_bytes_total{app="logger",tenant="t"}"#)
            .await,
        6.0
    );
}

#[tokio::test]
async fn the_committed_c_guests_serve() {
    let hello = std::fs::read(fixtures::c_guest("hello")).expect("guests/c/hello/hello.wasm");
    let echo = std::fs::read(fixtures::c_guest("echo")).expect("guests/c/echo/echo.wasm");
    let mut echo_spec = app("t", "c-echo", echo, Limits::default());
    echo_spec.env = vec![("GREETING".into(), "bonjour".into())];
    let node = TestNode::start(vec![
        (
            &["c.example.com"],
            app("t", "c-hello", hello, Limits::default()),
        ),
        (&["echo.example.com"], echo_spec),
    ])
    .await;
    let r = node.get("c.example.com", "/").await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "Hello from C!\n")
    );
    let r = node
        .send("POST", "echo.example.com", "/p?q=1", b"payload".to_vec())
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("POST /p?q=1\n"), "{}", r.text());
    assert!(r.text().ends_with("payload"), "{}", r.text());
    assert_eq!(r.headers["x-echo-env"], "bonjour");
}

fn spec(name: &str, wasm: Vec<u8>) -> (Vec<Route>, AppSpec) {
    (
        vec![format!("{name}.example.com").parse().unwrap()],
        app("t", name, wasm, quick_limits()),
    )
}

#[tokio::test]
async fn bad_components_are_refused_with_a_reason_and_change_nothing() {
    let node = Node::new(&PoolConfig::default(), Metrics::new()).unwrap();
    node.apply(vec![spec("good", fixtures::hello("good\n"))])
        .await
        .unwrap();
    for (bytes, needle) in [
        (b"definitely not wasm".to_vec(), "magic header"),
        (fixtures::core_module(), "component"),
        (fixtures::unknown_import(), "outpost:missing/nothing"),
        (fixtures::hello("x")[..100].to_vec(), ""),
    ] {
        let err = node
            .apply(vec![
                spec("good", fixtures::hello("replaced\n")),
                spec("bad", bytes),
            ])
            .await
            .unwrap_err();
        let Error::Runtime(outpost_runtime::Error::InvalidWasm { what, reason }) = &err else {
            panic!("{err}")
        };
        assert!(what.contains("\"bad\""), "{what}");
        assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
        // The previous table is still the one served.
        assert!(node.route("bad.example.com", "/").is_none());
        assert_eq!(node.route("good.example.com", "/").unwrap().name(), "good");
    }
}

#[tokio::test]
async fn a_component_without_the_http_handler_is_refused() {
    let node = Node::new(&PoolConfig::default(), Metrics::new()).unwrap();
    let err = node
        .apply(vec![spec("nohandler", fixtures::no_handler())])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("incoming-handler"), "{err}");
}

#[tokio::test]
async fn a_memory_limit_below_the_initial_memory_is_refused_at_load() {
    let node = Node::new(&PoolConfig::default(), Metrics::new()).unwrap();
    // The fixtures start with 128 KiB of memory; a 64 KiB limit can never fit.
    let mut s = spec("tiny", fixtures::hello("x"));
    s.1.limits.memory_bytes = 64 * 1024;
    let err = node.apply(vec![s]).await.unwrap_err();
    assert!(err.to_string().contains("memory"), "{err}");
}

#[tokio::test]
async fn without_room_for_the_pool_the_node_falls_back_to_on_demand() {
    // Ten million 4 GiB memory slots cannot be reserved on any machine.
    let pool = PoolConfig {
        max_memories: 10_000_000,
        ..PoolConfig::default()
    };
    let node = TestNode::start_with(
        pool,
        vec![(
            &["a.example.com"],
            app("t", "a", fixtures::hello("a\n"), Limits::default()),
        )],
    )
    .await;
    assert!(!node.node.runtime().is_pooling());
    assert_eq!(node.get("a.example.com", "/").await.text(), "a\n");
    assert_eq!(node.metric("outpost_runtime_pooling_allocator").await, 0.0);

    let pooled = TestNode::start(vec![]).await;
    assert!(pooled.node.runtime().is_pooling());
    assert_eq!(
        pooled.metric("outpost_runtime_pooling_allocator").await,
        1.0
    );
}

#[tokio::test]
async fn metrics_listener_serves_prometheus_text_and_health() {
    let node = TestNode::start(vec![(
        &["a.example.com"],
        app("acme", "web", fixtures::hello("a\n"), Limits::default()),
    )])
    .await;
    for _ in 0..3 {
        assert_eq!(node.get("a.example.com", "/").await.status, 200);
    }
    let text = node.scrape().await;
    for line in [
        r#"outpost_http_requests_total{app="web",status="2xx",tenant="acme"} 3"#,
        r#"outpost_http_request_duration_seconds_count{app="web",tenant="acme"} 3"#,
        r#"outpost_runtime_instantiate_duration_seconds_count{app="web",tenant="acme"} 3"#,
        r#"outpost_runtime_compile_duration_seconds_count{app="web",tenant="acme"} 1"#,
        r#"outpost_runtime_instances_in_flight{app="web",tenant="acme"} 0"#,
        "outpost_runtime_apps_loaded 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    let fuel = node
        .metric(r#"outpost_runtime_fuel_consumed_total{app="web",tenant="acme"}"#)
        .await;
    assert!(fuel > 0.0);

    // The instance pool: freed slots are handed back and kept warm for
    // the next request.
    for _ in 0..70 {
        assert_eq!(node.get("a.example.com", "/").await.status, 200);
    }
    let mut warm = 0.0;
    for _ in 0..200 {
        warm = node.metric("outpost_runtime_pool_warm_memories").await;
        if warm >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(warm >= 1.0, "{}", node.scrape().await);
    assert!(node.metric("outpost_runtime_pool_warm_memory_bytes").await > 0.0);
    assert!(node.metric("outpost_runtime_pool_memories_in_use").await <= 1.0);

    let health = node
        .request(
            Request::get(format!("http://{}/healthz", node.metrics))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (health.status.as_u16(), health.text().as_str()),
        (200, "ok\n")
    );
}

#[tokio::test]
async fn removed_apps_stop_serving_and_lose_their_series() {
    let node = TestNode::start(vec![
        (
            &["a.example.com"],
            app("t", "a", fixtures::hello("a\n"), Limits::default()),
        ),
        (
            &["b.example.com"],
            app("t", "b", fixtures::hello("b\n"), Limits::default()),
        ),
    ])
    .await;
    assert_eq!(node.get("b.example.com", "/").await.status, 200);
    node.node
        .apply(vec![spec("a", fixtures::hello("a2\n"))])
        .await
        .unwrap();
    // Routes are swapped whole: a.example.com now answers from the new version.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(node.get("a.example.com", "/").await.text(), "a2\n");
    assert_eq!(node.get("b.example.com", "/").await.status, 404);
    assert!(!node.scrape().await.contains(r#"app="b""#));
}

#[tokio::test]
async fn cleartext_http2_is_served_too() {
    let node = TestNode::start(vec![(
        &["h2.example.com"],
        app("t", "h2", fixtures::echo(), Limits::default()),
    )])
    .await;
    let tcp = tokio::net::TcpStream::connect(node.http).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // HTTP/2 carries the host in :authority, not in a Host header.
    let req = Request::post("http://h2.example.com/two")
        .body(Full::new(Bytes::from_static(b"over h2")))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("POST /two\n"), "{text}");
    assert!(text.ends_with("over h2"), "{text}");
}

#[tokio::test]
async fn reapplying_unchanged_apps_does_not_recompile_them() {
    let node = Node::new(&PoolConfig::default(), Metrics::new()).unwrap();
    let table = || {
        vec![
            spec("a", fixtures::hello("a\n")),
            spec("b", fixtures::hello("b\n")),
        ]
    };
    node.apply(table()).await.unwrap();
    let a1 = node.route("a.example.com", "/").unwrap();
    let b1 = node.route("b.example.com", "/").unwrap();
    node.apply(table()).await.unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &a1,
        &node.route("a.example.com", "/").unwrap()
    ));

    let mut changed = table();
    changed[1].1.env = vec![("K".into(), "v".into())];
    node.apply(changed).await.unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &a1,
        &node.route("a.example.com", "/").unwrap()
    ));
    assert!(!std::sync::Arc::ptr_eq(
        &b1,
        &node.route("b.example.com", "/").unwrap()
    ));
    let text = node.metrics().render();
    for line in [
        r#"outpost_runtime_compile_duration_seconds_count{app="a",tenant="t"} 1"#,
        r#"outpost_runtime_compile_duration_seconds_count{app="b",tenant="t"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_version_it_started_on() {
    let node = TestNode::start(vec![(
        &["a.example.com"],
        app("t", "a", fixtures::slow(700), quick_limits()),
    )])
    .await;
    let in_flight = node.get("a.example.com", "/");
    let swap = async {
        // Swap only once the slow request holds its instance.
        for _ in 0..200 {
            if node
                .metric(r#"outpost_runtime_instances_in_flight{app="a",tenant="t"}"#)
                .await
                == 1.0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        node.node
            .apply(vec![spec("a", fixtures::hello("v2\n"))])
            .await
            .unwrap();
        node.get("a.example.com", "/").await
    };
    let (old, new) = tokio::join!(in_flight, swap);
    assert_eq!((old.status.as_u16(), old.text().as_str()), (200, "awake\n"));
    assert_eq!((new.status.as_u16(), new.text().as_str()), (200, "v2\n"));
}

/// A node that compiled a module once loads it from its compile cache after
/// a restart; a corrupted entry is detected, thrown away and recompiled,
/// never run.
#[tokio::test]
async fn compiled_modules_are_cached_on_disk_and_corrupt_entries_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let lookups = |m: &Metrics| {
        let text = m.render();
        ["hit", "miss", "invalid"].map(|r| {
            let series = format!("outpost_runtime_compile_cache_lookups_total{{result=\"{r}\"}}");
            crate::support::metric_in(&text, &series) as u64
        })
    };
    // Each start is a whole node, started as the binary starts one.
    let start = || async {
        let node = TestNode::start(vec![]).await;
        node.node
            .runtime()
            .enable_compile_cache(dir.path())
            .unwrap();
        node.node
            .apply(vec![spec("web", fixtures::hello("cached\n"))])
            .await
            .unwrap();
        let metrics = node.node.metrics().clone();
        (node, metrics)
    };

    let (_, metrics) = start().await;
    assert_eq!(lookups(&metrics), [0, 1, 0]);
    let mut entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort_by_key(|p| p.extension().map(|e| e.to_owned()));
    let kinds: Vec<_> = entries.iter().filter_map(|p| p.extension()).collect();
    assert_eq!(kinds, ["cwasm", "sum"], "the entry and its checksum");

    // "Restart": a new engine with the same configuration.
    let (served, metrics) = start().await;
    assert_eq!(lookups(&metrics), [1, 0, 0]);
    assert_eq!(served.get("web.example.com", "/").await.text(), "cached\n");

    // Flip one byte of the compiled code: the checksum catches it.
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entries[0], &bytes).unwrap();
    let (served, metrics) = start().await;
    assert_eq!(lookups(&metrics), [0, 0, 1]);
    assert_eq!(served.get("web.example.com", "/").await.text(), "cached\n");

    // The recompiled entry replaced the corrupt one.
    let (_, metrics) = start().await;
    assert_eq!(lookups(&metrics), [1, 0, 0]);

    // A module the cache has never seen is a miss, whatever else it holds.
    let metrics = Metrics::new();
    let node = Node::new(&PoolConfig::default(), metrics.clone()).unwrap();
    node.runtime().enable_compile_cache(dir.path()).unwrap();
    node.apply(vec![spec("other", fixtures::hello("other\n"))])
        .await
        .unwrap();
    assert_eq!(lookups(&metrics), [0, 1, 0]);
}

/// In sync mode a bad app is left out alone; a strict apply of the same
/// spec afterwards (standalone config) is still refused, not waved through
/// because the node remembers the failure.
#[tokio::test]
async fn a_bad_app_is_left_out_alone_and_a_strict_apply_still_refuses_it() {
    let node = Node::new(&PoolConfig::default(), Metrics::new()).unwrap();
    let failed = node
        .apply_each(vec![
            spec("good", fixtures::hello("good\n")),
            spec("bad", fixtures::start_trap()),
        ])
        .await
        .unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        (failed[0].tenant.as_str(), failed[0].name.as_str()),
        ("t", "bad")
    );
    assert!(
        failed[0].reason.contains("unreachable"),
        "{}",
        failed[0].reason
    );
    assert_eq!(node.route("good.example.com", "/").unwrap().name(), "good");
    assert!(node.route("bad.example.com", "/").is_none());
    assert_eq!(node.unavailable(), failed);
    let err = node
        .apply(vec![
            spec("good", fixtures::hello("good\n")),
            spec("bad", fixtures::start_trap()),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    // The refused apply changed nothing.
    assert_eq!(node.unavailable(), failed);
}

/// Past `[app_metrics] max_apps`, a tenant's further apps count into its
/// `app="_other"` series: the tenant's sum stays exact, the series stay
/// bounded, and an app named in `always` keeps its own.
#[tokio::test]
async fn apps_past_the_per_app_bound_count_into_their_tenants_other_series() {
    let node = TestNode::launch(outpost_edge_node::config::Config {
        app_metrics: outpost_runtime::metrics::PerAppSeries {
            max_apps: 1,
            always: vec!["acme/vip".into()],
            ..Default::default()
        },
        ..crate::support::local_config()
    })
    .await;
    let hello = |body: &str| fixtures::hello(body);
    node.install(vec![
        (
            &["a.example.com"],
            app("acme", "a", hello("a\n"), quick_limits()),
        ),
        (
            &["b.example.com"],
            app("acme", "b", hello("b\n"), quick_limits()),
        ),
        (
            &["c.example.com"],
            app("acme", "c", hello("c\n"), quick_limits()),
        ),
        (
            &["vip.example.com"],
            app("acme", "vip", hello("vip\n"), quick_limits()),
        ),
    ])
    .await;
    for host in [
        "a.example.com",
        "b.example.com",
        "c.example.com",
        "vip.example.com",
    ] {
        assert_eq!(node.get(host, "/").await.status, 200);
    }
    let text = node.scrape().await;
    let requests = |app: &str| {
        crate::support::metric_in(
            &text,
            &format!(r#"outpost_http_requests_total{{app="{app}",status="2xx",tenant="acme"}}"#),
        )
    };
    // One of a, b, c got the one place; the other two share `_other`.
    let own: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .filter(|a| text.contains(&format!(r#"app="{a}""#)))
        .collect();
    assert_eq!(own.len(), 1, "{text}");
    assert_eq!(requests(own[0]), 1.0);
    assert_eq!(requests("_other"), 2.0);
    assert_eq!(requests("vip"), 1.0);
}
