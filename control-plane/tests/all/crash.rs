//! Crash safety of the control plane: the real binary is `kill -9`ed at a
//! random moment while clients deploy and change routes and env, again and
//! again over the same data directory. After every restart the store opens,
//! every acknowledged (2xx) deploy is listed with its digest, versions and
//! revisions never go backwards, and the snapshot nodes get agrees with
//! what the API shows.
//!
//! The kill points come from a seeded generator; the seed is printed, and
//! `OUTPOST_CRASH_SEED` replays a run (`OUTPOST_CRASH_ROUNDS` changes the
//! number of rounds, 20 by default, at most 200).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{ADMIN, NODE};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use outpost_test_fixtures as fixtures;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_control-plane");

/// splitmix64: small, seedable, good enough to pick kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The binary, killed with SIGKILL when dropped (a failed assertion must
/// not leave it running).
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    /// Starts the binary over `data` and waits for its `Listening on` line;
    /// the store opening cleanly is a precondition of that line.
    async fn start(data: &std::path::Path) -> Process {
        // Every acknowledged version must survive: none is pruned here.
        let config = data.join("versions.toml");
        std::fs::write(&config, "[quotas]\nversions_per_app = 1000\n").unwrap();
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(data)
            .env("OUTPOST_ADMIN_TOKEN", ADMIN)
            .env("OUTPOST_NODE_TOKEN", NODE)
            .env("OUTPOST_CERT_KEY", crate::support::CERT_KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // The line comes once the store is open and the port bound; a
        // store that fails to open makes the process exit instead (EOF).
        let first = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let first = tokio::time::timeout(Duration::from_secs(60), first)
            .await
            .expect("the control plane printed nothing for 60 s")
            .unwrap()
            .unwrap();
        let addr = first
            .trim_end()
            .strip_prefix("Listening on http://")
            .and_then(|s| s.strip_suffix('/'))
            .unwrap_or_else(|| panic!("the store did not open cleanly: first line {first:?}"))
            .parse()
            .unwrap();
        Process { child, addr }
    }

    fn kill(&mut self) {
        // `Child::kill` is SIGKILL: no shutdown code runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request; `None` if the connection broke (the process died).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    ctype: &str,
    body: Vec<u8>,
) -> Option<(u16, Value)> {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let exchange = async {
        let resp = crate::support::client().request(req).await.ok()?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.ok()?.to_bytes();
        Some((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .expect("a request hung for 60 s")
}

async fn must(addr: SocketAddr, method: &str, path: &str, token: &str, body: Value) -> Value {
    let (status, body) = call(
        addr,
        method,
        path,
        token,
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
    .expect("the control plane is up");
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {body}"
    );
    body
}

/// What clients were told, across every round.
#[derive(Default)]
struct Acked {
    /// Acknowledged deploys: version → digest.
    deploys: BTreeMap<u64, String>,
    /// The last acknowledged env value and routes, and the ones sent but
    /// unanswered when the process died (they may or may not have landed).
    env: Option<String>,
    env_in_flight: Option<String>,
    routes: Option<Vec<String>>,
    routes_in_flight: Option<Vec<String>>,
    /// Acknowledged writes since the last check (each bumps the revision).
    writes: u64,
}

/// The routes the route-changing client sets in step `tag`.
fn routes_for(tag: &str) -> Vec<String> {
    vec!["web.example.com".to_string(), format!("{tag}.example.com")]
}

/// The snapshot a node would get first (sent in parts), whole.
async fn snapshot(addr: SocketAddr) -> Value {
    let path = "/v1/nodes/watch?revision=0&node=crash";
    let (status, lines) = crate::support::watch_lines_until(addr, path, "snapshot_end").await;
    assert_eq!(status, 200);
    let mut assembly = outpost_proto::SnapshotAssembly::default();
    for line in lines {
        let event = serde_json::from_str(&line).unwrap();
        if let Some(snapshot) = assembly.take(event).unwrap() {
            return serde_json::to_value(snapshot).unwrap();
        }
    }
    panic!("the stream ended before a whole snapshot");
}

/// Checks the restarted store against what clients were told; returns the
/// current revision.
async fn check(addr: SocketAddr, token: &str, acked: &mut Acked, last_revision: u64) -> u64 {
    let listed = must(addr, "GET", "/v1/apps/web/deployments", token, Value::Null).await;
    let listed = crate::support::versions(&listed);
    for (version, digest) in &acked.deploys {
        assert_eq!(
            listed.get(version),
            Some(digest),
            "acknowledged deploy v{version} lost or changed after kill -9"
        );
    }
    // Versions are 1..=n without holes: none half-written.
    let versions: Vec<u64> = listed.keys().copied().collect();
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    // A deploy that landed without its answer is durable too: from now on
    // it is part of what must survive.
    acked.deploys = listed.clone();

    let app = must(addr, "GET", "/v1/apps/web", token, Value::Null).await;
    // The API never echoes env values; the snapshot for nodes carries them.
    let snap = snapshot(addr).await;
    let served = &snap["apps"]["acme/web"];
    let env = served["env"]["ROUND"].as_str().map(str::to_string);
    if env != acked.env {
        assert!(
            env.is_some() && env == acked.env_in_flight,
            "env {env:?}: neither the acknowledged {:?} nor the in-flight {:?}",
            acked.env,
            acked.env_in_flight
        );
    }
    acked.env = env;
    let routes: Vec<String> = serde_json::from_value(app["routes"].clone()).unwrap();
    if Some(&routes) != acked.routes.as_ref() {
        assert_eq!(
            Some(&routes),
            acked.routes_in_flight.as_ref(),
            "routes: neither acknowledged {:?} nor in flight",
            acked.routes
        );
    }
    acked.routes = Some(routes.clone());
    let active = app["active_version"].as_u64().expect("a version is active");

    let revision = snap["revision"].as_u64().unwrap();
    assert!(
        revision >= last_revision + acked.writes,
        "revision {revision} < {last_revision} + {} acknowledged writes",
        acked.writes
    );
    acked.writes = 0;
    assert_eq!(
        served["digest"].as_str(),
        listed.get(&active).map(|s| s.as_str()),
        "{snap}"
    );
    assert_eq!(served["routes"], json!(routes), "{snap}");
    let keys = if acked.env.is_some() {
        json!(["ROUND"])
    } else {
        json!([])
    };
    assert_eq!(app["env_keys"], keys, "{app}");
    revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let rounds: u64 = std::env::var("OUTPOST_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .min(200);
    let seed: u64 = std::env::var("OUTPOST_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test: {rounds} rounds, seed {seed} (OUTPOST_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();

    let mut process = Process::start(dir.path()).await;
    let tenant = must(
        process.addr,
        "POST",
        "/v1/tenants",
        ADMIN,
        json!({"name": "acme", "domains": crate::support::TEST_DOMAINS}),
    )
    .await;
    let token = tenant["token"].as_str().unwrap().to_string();
    let app = json!({"name": "web", "routes": ["web.example.com"]});
    must(process.addr, "POST", "/v1/apps", &token, app).await;
    let acked = Arc::new(Mutex::new(Acked::default()));
    acked.lock().unwrap().routes = Some(vec!["web.example.com".into()]);
    // A first version, so the app is in every snapshot from the start.
    let initial = fixtures::hello("initial\n");
    let digest = outpost_runtime::disk::digest_of(&initial);
    let path = "/v1/apps/web/deployments";
    let got = call(
        process.addr,
        "POST",
        path,
        &token,
        "application/wasm",
        initial,
    )
    .await;
    assert_eq!(got.as_ref().map(|g| g.0), Some(201), "{got:?}");
    acked.lock().unwrap().deploys.insert(1, digest);
    let mut revision = 0;
    let mut mid_write = 0;
    let mut total_acked = 0;

    for round in 0..rounds {
        // No client runs during a check: take the record out of the lock
        // rather than hold the lock across awaits.
        let mut record = std::mem::take(&mut *acked.lock().unwrap());
        revision = check(process.addr, &token, &mut record, revision).await;
        *acked.lock().unwrap() = record;
        let in_flight = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let round_acked = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        // Two deployers and one client changing env and routes.
        for c in 0..3u64 {
            let (addr, token) = (process.addr, token.clone());
            let (acked, in_flight, stop) = (acked.clone(), in_flight.clone(), stop.clone());
            let round_acked = round_acked.clone();
            clients.push(tokio::spawn(async move {
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let tag = format!("r{round}-c{c}-{i}");
                    // Build the request first so that "in flight" means
                    // sent to the process, not being prepared.
                    let (method, path, ctype, body) = if c < 2 {
                        let wasm = fixtures::hello(&format!("{tag}\n"));
                        ("POST", "/v1/apps/web/deployments", "application/wasm", wasm)
                    } else if i % 2 == 0 {
                        acked.lock().unwrap().env_in_flight = Some(tag.clone());
                        let body = json!({"ROUND": tag}).to_string().into_bytes();
                        ("PUT", "/v1/apps/web/env", "application/json", body)
                    } else {
                        let routes = routes_for(&tag);
                        acked.lock().unwrap().routes_in_flight = Some(routes.clone());
                        let body = json!({ "routes": routes }).to_string().into_bytes();
                        ("PUT", "/v1/apps/web/routes", "application/json", body)
                    };
                    let digest = outpost_runtime::disk::digest_of(&body);
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let answered = call(addr, method, path, &token, ctype, body).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    if let Some((status, body)) = &answered
                        && (200..300).contains(status)
                    {
                        let mut a = acked.lock().unwrap();
                        a.writes += 1;
                        if c < 2 {
                            a.deploys.insert(body["version"].as_u64().unwrap(), digest);
                        } else if i % 2 == 0 {
                            a.env = Some(tag);
                        } else {
                            a.routes = Some(routes_for(&tag));
                        }
                    }
                    match answered {
                        Some((status, body)) => {
                            assert!((200..300).contains(&status), "{status} {body}");
                            round_acked.fetch_add(1, Ordering::SeqCst);
                        }
                        // The process is gone: this request never got an
                        // answer, so it promised nothing.
                        None => return,
                    }
                }
            }));
        }
        // The kill lands 0-300 ms into the traffic. This sleep picks the
        // crash point; it waits for nothing.
        let delay = Duration::from_millis(rng.next() % 301);
        tokio::time::sleep(delay).await;
        let busy = in_flight.load(Ordering::SeqCst);
        process.kill();
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.await.unwrap();
        }
        if busy > 0 {
            mid_write += 1;
        }
        let n = round_acked.load(Ordering::SeqCst);
        total_acked += n;
        eprintln!(
            "round {round}: killed after {delay:?}, {n} writes acknowledged, {busy} in flight"
        );
        process = Process::start(dir.path()).await;
    }
    let mut record = std::mem::take(&mut *acked.lock().unwrap());
    check(process.addr, &token, &mut record, revision).await;
    eprintln!(
        "crash test: {rounds} kills, {mid_write} with writes in flight, {total_acked} writes acknowledged, {} deploys survived, seed {seed}",
        record.deploys.len()
    );
    assert!(
        total_acked > 0,
        "no write was ever acknowledged: the test tested nothing"
    );
}
