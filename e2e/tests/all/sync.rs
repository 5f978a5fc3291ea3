//! End to end: a real control plane and two real edge nodes in sync mode,
//! all on 127.0.0.1:0, talking HTTP. Deploys reach both nodes; nodes keep
//! serving when the control plane is gone, restart from their cache, and
//! catch up when it returns.

use std::time::{Duration, Instant};

use crate::support::{ADMIN, ControlPlane, EdgeNode};
use outpost_test_fixtures as fixtures;
use serde_json::{Value, json};
use sha2::Digest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_reach_every_node_which_survive_the_control_plane() {
    let data = tempfile::tempdir().unwrap();
    let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = cp.addr;
    let token = cp.acme_with_web_app().await;

    let nodes = [
        EdgeNode::start(addr, caches[0].path(), "edge-1").await,
        EdgeNode::start(addr, caches[1].path(), "edge-2").await,
    ];
    // Before any deploy the route is unknown to the nodes.
    assert_eq!(nodes[0].get("web.example.com").await.0, 404);

    cp.deploy(&token, fixtures::hello("v1\n")).await;
    for (i, node) in nodes.iter().enumerate() {
        let took = node.until_serves("web.example.com", "v1\n").await;
        println!("deploy v1 reached node {i} in {took:?}");
    }
    cp.deploy(&token, fixtures::hello("v2\n")).await;
    for node in &nodes {
        node.until_serves("web.example.com", "v2\n").await;
    }
    let (status, _) = cp
        .json(
            "POST",
            "/v1/apps/web/rollback",
            &token,
            json!({"version": 1}),
        )
        .await;
    assert_eq!(status, 200);
    for node in &nodes {
        node.until_serves("web.example.com", "v1\n").await;
    }

    // Both nodes report the revision they serve.
    let started = Instant::now();
    loop {
        let (status, list) = cp.json("GET", "/v1/nodes", ADMIN, Value::Null).await;
        assert_eq!(status, 200);
        let revisions: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap().to_string(),
                    n["applied_revision"].as_u64().unwrap(),
                )
            })
            .collect();
        let (_, app) = cp.json("GET", "/v1/apps/web", &token, Value::Null).await;
        assert_eq!(app["active_version"], 1);
        if revisions.len() == 2
            && revisions.iter().all(|(_, r)| *r == revisions[0].1)
            && revisions[0].1 >= 4
        {
            assert_eq!(revisions[0].0, "edge-1");
            assert_eq!(revisions[1].0, "edge-2");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nodes report {revisions:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The control plane goes away: nodes keep serving what they have.
    cp.stop().await;
    for node in &nodes {
        assert_eq!(node.get("web.example.com").await, (200, "v1\n".into()));
    }

    // A node restarted while the control plane is down serves from cache:
    // `start` applied it before binding, so its very first request gets v1.
    let [first, second] = nodes;
    let served = first.metrics.render();
    first.stop();
    let first = EdgeNode::start(addr, caches[0].path(), "edge-1").await;
    let applied = "outpost_sync_applied_revision ";
    let revision = |text: &str| -> u64 {
        let line = text.lines().find_map(|l| l.strip_prefix(applied));
        line.expect("the applied revision is exported")
            .parse()
            .unwrap()
    };
    assert_eq!(first.restored_revision, revision(&served));
    assert_eq!(first.get("web.example.com").await, (200, "v1\n".into()));
    // ... without compiling: v1's compiled code came from the disk cache.
    let text = first.metrics.render();
    for line in [
        r#"outpost_runtime_compile_cache_lookups_total{result="hit"} 1"#,
        r#"outpost_runtime_compile_cache_lookups_total{result="miss"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }

    // The control plane returns on the same address with all its state;
    // both nodes reconnect and follow the next deploy.
    let cp = ControlPlane::start(data.path(), addr).await;
    let (status, app) = cp.json("GET", "/v1/apps/web", &token, Value::Null).await;
    assert_eq!((status, app["active_version"].as_u64()), (200, Some(1)));
    cp.deploy(&token, fixtures::hello("v3\n")).await;
    for node in [&first, &second] {
        node.until_serves("web.example.com", "v3\n").await;
    }

    // Deltas add and remove single apps; the others keep serving.
    let (status, body) = cp
        .json(
            "POST",
            "/v1/apps",
            &token,
            json!({"name": "api", "routes": ["api.example.com"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    cp.deploy_to("api", &token, fixtures::hello("api\n")).await;
    for node in [&first, &second] {
        node.until_serves("api.example.com", "api\n").await;
    }
    let (status, _) = cp.json("DELETE", "/v1/apps/web", &token, Value::Null).await;
    assert_eq!(status, 204);
    for node in [&first, &second] {
        let started = Instant::now();
        while node.get("web.example.com").await.0 != 404 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "web still served"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(node.get("api.example.com").await, (200, "api\n".into()));
    }
    first.stop();
    second.stop();
    cp.stop().await;
}

/// A tenant's certificate uploaded through the API is what a node presents
/// for its host over HTTPS (h2 and HTTP/1.1), and a rotation reaches the
/// node without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_certificates_are_served_by_nodes_and_rotate() {
    use outpost_test_fixtures::tls::{Client, Issued, TestCa, https_get};
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let token = cp.acme_with_web_app().await;
    cp.deploy(&token, fixtures::hello("secure\n")).await;
    let node = EdgeNode::start(cp.addr, cache.path(), "edge-1").await;
    node.until_serves("web.example.com", "secure\n").await;

    let ca = TestCa::new();
    let roots = [ca.root()];
    let upload = |issued: &Issued| json!({"cert_chain_pem": issued.chain_pem, "private_key_pem": issued.key_pem});
    let presented = |alpn: &'static str| {
        let roots = roots.clone();
        let https = node.https;
        async move {
            let client = Client {
                roots: &roots,
                alpn: &[alpn],
                tls12_only: false,
            };
            https_get(client, https, "web.example.com", "web.example.com").await
        }
    };
    // Before the upload the node's self-signed default fails verification.
    assert!(presented("h2").await.is_err());

    for round in 0..2 {
        let issued = ca.issue(&["web.example.com"]);
        let (status, body) = cp
            .json(
                "PUT",
                "/v1/certificates/web.example.com",
                &token,
                upload(&issued),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let started = Instant::now();
        loop {
            if let Ok(r) = presented("h2").await
                && r.peer_leaf == issued.leaf_der
            {
                assert_eq!((r.status, r.body.as_str()), (200, "secure\n"));
                assert_eq!(r.version, http::Version::HTTP_2);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "round {round}: the node never presented the uploaded certificate"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = presented("http/1.1").await.unwrap();
        assert!(r.peer_leaf == issued.leaf_der);
        assert_eq!((r.status, r.version), (200, http::Version::HTTP_11));
    }
    node.stop();
    cp.stop().await;
}

/// Files of `dir` with extension `ext`.
fn cached(dir: &std::path::Path, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(ext))
        .collect();
    names.sort();
    names
}

/// With no room for unused entries, a node keeps only what it serves:
/// the replaced version's module and compiled code are deleted, and a
/// rollback to it fetches and compiles it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_prunes_versions_it_no_longer_serves() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let token = cp.acme_with_web_app().await;
    let node = EdgeNode::start_keeping(cp.addr, cache.path(), "edge-1", 0).await;
    let (modules, compiled) = (cache.path().join("modules"), cache.path().join("compiled"));
    let v1 = fixtures::hello("v1\n");
    let v1_name = format!("{}.wasm", hex(&sha2::Sha256::digest(&v1)));

    cp.deploy(&token, v1).await;
    node.until_serves("web.example.com", "v1\n").await;
    assert_eq!(cached(&modules, ".wasm"), std::slice::from_ref(&v1_name));
    assert_eq!(cached(&compiled, ".cwasm").len(), 1);

    let v2 = fixtures::hello("v2\n");
    let v2_name = format!("{}.wasm", hex(&sha2::Sha256::digest(&v2)));
    let v2_len = v2.len() as f64;
    cp.deploy(&token, v2).await;
    node.until_serves("web.example.com", "v2\n").await;
    // Pruning follows the apply (modules, then compiled code, then the
    // gauges); give all three a bounded moment.
    let kept_modules = format!("outpost_sync_cache_bytes{{kind=\"modules\"}} {v2_len}");
    let started = Instant::now();
    while cached(&modules, ".wasm") != [v2_name.clone()]
        || cached(&compiled, ".cwasm").len() != 1
        || !node.metrics.render().contains(&kept_modules)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "modules left: {:?}, compiled left: {:?}, scrape: {}",
            cached(&modules, ".wasm"),
            cached(&compiled, ".cwasm"),
            node.metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, _) = cp
        .json(
            "POST",
            "/v1/apps/web/rollback",
            &token,
            json!({"version": 1}),
        )
        .await;
    assert_eq!(status, 200);
    node.until_serves("web.example.com", "v1\n").await;
    let started = Instant::now();
    while cached(&modules, ".wasm") != [v1_name.clone()] {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A snapshot far larger than one part (120 apps with 30 KB of env each,
/// over 20 MB as one line at the worst escaping) arrives as
/// `snapshot_begin`, several `snapshot_part`s of about a MiB, and
/// `snapshot_end`, and a fresh node serves every app from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_arrives_in_bounded_parts_and_syncs() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let big = "x".repeat(30_000);
    let mut hosts = Vec::new();
    for t in 0..3 {
        let token = cp.tenant(&format!("t{t}")).await;
        for a in 0..40 {
            let name = format!("app{a}");
            let host = format!("{name}.t{t}.example.com");
            let app = json!({"name": name, "routes": [host]});
            let (status, body) = cp.json("POST", "/v1/apps", &token, app).await;
            assert_eq!(status, 201, "{body}");
            let env = json!({"BIG": big});
            let (status, body) = cp
                .json("PUT", &format!("/v1/apps/{name}/env"), &token, env)
                .await;
            assert_eq!(status, 200, "{body}");
            cp.deploy_to(&name, &token, fixtures::hello(&format!("{host}\n")))
                .await;
            hosts.push(host);
        }
    }

    // What the stream looks like: parts, each line bounded.
    let (status, lines) = cp.watch_lines_until("snapshot_end").await;
    assert_eq!(status, 200);
    let parts = lines
        .iter()
        .filter(|l| l.contains(r#""type":"snapshot_part""#))
        .count();
    assert!(parts >= 3, "{parts} parts for a 3.6 MB snapshot");
    let longest = lines.iter().map(String::len).max().unwrap();
    assert!(
        longest <= outpost_proto::SNAPSHOT_PART_BYTES + 512 * 1024,
        "a {longest}-byte line"
    );

    let node = EdgeNode::start(cp.addr, cache.path(), "fresh").await;
    for host in &hosts {
        node.until_serves(host, &format!("{host}\n")).await;
    }
    node.stop();
    cp.stop().await;
}
