//! Chaos, with the real binaries on loopback: a 3-member etcd, a
//! registry, two control planes on them (`control-plane --store
//! etcd://…`) and three edge nodes listing both control planes. A client
//! deploys without pause through both control planes while the test
//! kills (`SIGKILL`) and restarts an etcd member, then a control plane,
//! then stops the registry for a while. Afterwards every acknowledged
//! deploy is there (versions gap-free per app, none twice, routes whole),
//! every node serves each app's active version, and the nodes that
//! followed the killed control plane moved to the other within a bound.
//!
//! What it prints (with `--nocapture`) is what `loadtests/README.md`
//! reports: deploys acknowledged and refused per phase, lost (always 0
//! here, or the test fails), and each node's failover time.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use outpost_test_fixtures as fixtures;
use outpost_test_fixtures::etcd::Etcd;
use outpost_test_fixtures::registry::Registry;
use outpost_test_fixtures::wire::good_get;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::procs::{Proc, address, until_serves};
use crate::support::{ADMIN, CERT_KEY, NODE, client};

const APPS: [&str; 3] = ["alpha", "beta", "gamma"];

/// How long a node may take to follow the other control plane once the
/// one it followed is killed: the reconnect backoff starts at 100 ms and
/// the first retry of the dead one fails at once, plus process slack.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

/// One API call with a bound; `Err` when nothing answered (a deploy that
/// is not acknowledged).
async fn call(
    cp: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    ctype: &str,
    body: Vec<u8>,
) -> Result<(u16, Value), String> {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{cp}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let exchange = async {
        let resp = client().request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, value))
    };
    tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .map_err(|_| "timed out".to_string())?
}

async fn json_ok(cp: SocketAddr, method: &str, path: &str, token: &str, body: Value) -> Value {
    let bytes = serde_json::to_vec(&body).unwrap();
    let (status, out) = call(cp, method, path, token, "application/json", bytes)
        .await
        .unwrap();
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {out}"
    );
    out
}

fn digest(wasm: &[u8]) -> String {
    let hex: String = sha2::Sha256::digest(wasm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// A control plane process on `listen`, over `etcd` and `registry`, and
/// the address it serves on.
fn control_plane(
    dir: &Path,
    name: &str,
    listen: &str,
    etcd: &str,
    registry: &str,
) -> (Proc, SocketAddr) {
    let config = dir.join("cp.toml");
    // Every version is kept, so every acknowledged one can be checked.
    std::fs::write(&config, "[quotas]\nversions_per_app = 1000\n").unwrap();
    let (proc, lines) = Proc::start(
        "control-plane",
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            listen,
            "--name",
            name,
            "--store",
            etcd,
            "--registry",
            registry,
            "--cert-key",
            CERT_KEY,
            "--admin-token",
            ADMIN,
            "--node-token",
            NODE,
        ],
        dir,
        name,
        "Listening on ",
    );
    (proc, address(&lines, "Listening on http://"))
}

/// A node's `/metrics` says it follows `cp`.
async fn follows(metrics: SocketAddr, cp: SocketAddr) -> bool {
    let series = format!("outpost_sync_control_plane{{url=\"http://{cp}\"}} 1");
    match call(metrics, "GET", "/metrics", "", "text/plain", Vec::new()).await {
        Ok((200, Value::String(text))) => text.lines().any(|l| l == series),
        _ => false,
    }
}

/// What the deploying client saw.
#[derive(Default)]
struct Ledger {
    /// (app, version) -> digest, for every acknowledged deploy.
    acknowledged: BTreeMap<(String, u64), String>,
    /// Digest -> body of every deploy tried, acknowledged or not.
    bodies: HashMap<String, String>,
    /// Per phase: (acknowledged, not acknowledged).
    phases: BTreeMap<&'static str, (u32, u32)>,
    phase: &'static str,
}

impl Ledger {
    /// One deploy of `app`, acknowledged as `version` or not at all.
    fn record(&mut self, app: &str, digest: String, version: Option<u64>) {
        let counts = self.phases.entry(self.phase).or_default();
        let Some(version) = version else {
            counts.1 += 1;
            return;
        };
        counts.0 += 1;
        let twice = self.acknowledged.insert((app.to_string(), version), digest);
        assert!(twice.is_none(), "{app} v{version} acknowledged twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_keeps_every_acknowledged_deploy_through_etcd_control_plane_and_registry_crashes()
{
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::cluster(3);
    let mut registry = Registry::start();
    let store = format!(
        "etcd://{}/outpost-chaos",
        etcd.endpoints()
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let registry_url = registry.url("outpost/modules");
    let cp_dirs: Vec<_> = (0..2).map(|i| dir.path().join(format!("cp-{i}"))).collect();
    let mut cps = Vec::new();
    let mut addrs = Vec::new();
    for (i, cp_dir) in cp_dirs.iter().enumerate() {
        std::fs::create_dir_all(cp_dir).unwrap();
        let name = format!("cp-{i}");
        let (proc, addr) = control_plane(cp_dir, &name, "127.0.0.1:0", &store, &registry_url);
        cps.push(proc);
        addrs.push(addr);
    }

    // The tenant and its apps, through the first control plane.
    let tenant = json_ok(
        addrs[0],
        "POST",
        "/v1/tenants",
        ADMIN,
        json!({"name": "acme", "domains": ["example.com"]}),
    )
    .await;
    let token = tenant["token"].as_str().unwrap().to_string();
    for app in APPS {
        json_ok(
            addrs[0],
            "POST",
            "/v1/apps",
            &token,
            json!({"name": app, "routes": [format!("{app}.example.com")]}),
        )
        .await;
    }

    // Three nodes, each listing both control planes; the first and the
    // third follow control plane 0 first, the second control plane 1.
    let mut nodes = Vec::new();
    for i in 0..3 {
        let order = if i == 1 { [1, 0] } else { [0, 1] };
        let urls = format!("http://{},http://{}", addrs[order[0]], addrs[order[1]]);
        let cache = dir.path().join(format!("cache-{i}"));
        let (proc, lines) = Proc::start(
            "edge-node",
            &[
                "--control-plane",
                &urls,
                "--registry",
                &registry_url,
                "--node-token",
                NODE,
                "--node-id",
                &format!("edge-{i}"),
                "--cache-dir",
                cache.to_str().unwrap(),
                "--http",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
            ],
            dir.path(),
            &format!("edge-{i}"),
            "Metrics on ",
        );
        let http = address(&lines, "Listening on http://");
        let metrics = address(&lines, "Metrics on http://");
        nodes.push((proc, http, metrics));
    }

    // The client: deploys round-robin over the apps and the control
    // planes, as fast as they are acknowledged.
    let ledger = Arc::new(Mutex::new(Ledger {
        phase: "steady",
        ..Ledger::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let deployer = {
        let (ledger, stop, token, addrs) =
            (ledger.clone(), stop.clone(), token.clone(), addrs.clone());
        tokio::spawn(async move {
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let app = APPS[k % APPS.len()];
                let cp = addrs[(k / APPS.len()) % 2];
                let body = format!("{app} deploy {k}\n");
                let wasm = fixtures::hello(&body);
                let digest = digest(&wasm);
                ledger.lock().unwrap().bodies.insert(digest.clone(), body);
                let path = format!("/v1/apps/{app}/deployments");
                let outcome = call(cp, "POST", &path, &token, "application/wasm", wasm).await;
                let version = match outcome {
                    Ok((201, out)) => out["version"].as_u64(),
                    _ => None,
                };
                ledger.lock().unwrap().record(app, digest, version);
                k += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let phase = |name: &'static str| ledger.lock().unwrap().phase = name;
    let pause = |s: u64| tokio::time::sleep(Duration::from_secs(s));

    pause(3).await;
    // 1. The etcd leader crashes; the other two elect another and keep
    // a quorum. Then a follower crashes: the control planes' clients
    // still pick it, and must go to the others.
    phase("etcd leader down");
    let leader = etcd.leader().expect("etcd has a leader");
    etcd.kill_member(leader);
    pause(4).await;
    tokio::task::block_in_place(|| etcd.restart_member(leader));
    phase("etcd leader back");
    pause(2).await;
    let follower = (0..3)
        .find(|i| Some(*i) != etcd.leader())
        .expect("a follower");
    phase("etcd follower down");
    etcd.kill_member(follower);
    pause(4).await;
    tokio::task::block_in_place(|| etcd.restart_member(follower));
    phase("etcd follower back");
    pause(2).await;

    // 2. A control plane crashes: its nodes move to the other.
    phase("control plane down");
    let killed = Instant::now();
    cps[0].kill();
    let mut failovers = Vec::new();
    for (i, (_, _, metrics)) in nodes.iter().enumerate() {
        if i == 1 {
            continue;
        }
        while !follows(*metrics, addrs[1]).await {
            assert!(
                killed.elapsed() < FAILOVER_BOUND,
                "edge-{i} still not on the other control plane after {:?}",
                killed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        failovers.push((i, killed.elapsed()));
    }
    pause(3).await;
    // Back on its port, which the nodes still list.
    let (proc, addr) = control_plane(
        &cp_dirs[0],
        "cp-0",
        &addrs[0].to_string(),
        &store,
        &registry_url,
    );
    assert_eq!(addr, addrs[0]);
    cps[0] = proc;
    phase("control plane back");
    pause(3).await;

    // 3. The registry goes away for a while: uploads cannot be stored,
    // so deploys are refused, never half-made.
    phase("registry down");
    registry.stop();
    // Nodes serve on from their caches meanwhile.
    for app in APPS {
        for (_, http, _) in &nodes {
            let host = format!("{app}.example.com");
            let (status, _) = good_get(*http, &host).await.unwrap();
            assert_eq!(status, 200, "{host} on {http} while the registry is down");
        }
    }
    pause(4).await;
    registry.restart();
    phase("registry back");
    pause(4).await;
    stop.store(true, Ordering::Relaxed);
    deployer.await.unwrap();

    // Every acknowledged deploy is there, versions gap-free, none twice.
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let mut served = Vec::new();
    for app in APPS {
        for cp in &addrs {
            let listed = json_ok(
                *cp,
                "GET",
                &format!("/v1/apps/{app}/deployments"),
                &token,
                Value::Null,
            )
            .await;
            let by_version = crate::support::versions(&listed);
            assert_eq!(
                by_version.len(),
                listed.as_array().unwrap().len(),
                "{app}: a version listed twice on {cp}"
            );
            let numbers: Vec<u64> = by_version.keys().copied().collect();
            let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
            assert_eq!(numbers, expected, "{app}: versions not gap-free on {cp}");
            for ((acked_app, version), digest) in &ledger.acknowledged {
                if acked_app == app {
                    assert_eq!(
                        by_version.get(version),
                        Some(digest),
                        "{app} v{version}: acknowledged, then lost"
                    );
                }
            }
            let shown = json_ok(*cp, "GET", &format!("/v1/apps/{app}"), &token, Value::Null).await;
            assert_eq!(
                shown["routes"],
                json!([format!("{app}.example.com")]),
                "{shown}"
            );
            let active = shown["active_version"].as_u64().unwrap();
            assert_eq!(active, *by_version.keys().last().unwrap(), "{shown}");
            let body = ledger.bodies[&by_version[&active]].clone();
            if cp == &addrs[0] {
                served.push((app, body));
            }
        }
    }
    // And every node serves each app's active version.
    for (app, body) in &served {
        for (_, http, _) in &nodes {
            until_serves(*http, &format!("{app}.example.com"), body).await;
        }
    }

    let acknowledged = ledger.acknowledged.len();
    println!("chaos: {acknowledged} deploys acknowledged, 0 lost");
    for (phase, (acked, refused)) in &ledger.phases {
        println!("  {phase}: {acked} acknowledged, {refused} not acknowledged");
    }
    for (i, took) in &failovers {
        println!("  edge-{i} followed the other control plane {took:?} after the kill");
    }
    assert!(acknowledged > 30, "too few deploys to mean anything");
    // With one etcd member of three gone, etcd has a quorum: past the
    // election, deploys go on (the client retries the members it can
    // reach). With one control plane gone, those through the other do.
    for phase in ["etcd leader down", "etcd follower down"] {
        let (acked, refused) = ledger.phases[phase];
        assert!(
            acked >= refused,
            "most deploys refused while {phase}: {:?}",
            ledger.phases
        );
    }
    assert!(
        ledger.phases["control plane down"].0 > 0,
        "no deploy acknowledged while a control plane was down: {:?}",
        ledger.phases
    );
}
