//! Secrets hygiene: a full run — tenant creation, deploy, an env var with a
//! recognisable secret value, a certificate with its private key, an edge
//! node syncing through the real watch path and serving over HTTP and
//! HTTPS, guest stdout shipped to the control plane — with every log line
//! captured at trace level (debug for the compiler and the database), then
//! searched for secrets.
//!
//! What must never appear: the tenant token (except in the one response
//! that creates it), the admin and node tokens, the env value and the
//! private key's PEM body — in any log line, in either `/metrics`, or in
//! any API response. One documented exception: the node receives env
//! values and private keys in the watch snapshot (it needs them to serve;
//! see SECURITY.md), so the watch stream is read by the node only and not
//! collected here.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::support::{ADMIN, ControlPlane, EdgeNode, NODE};
use serde_json::{Value, json};

const ENV_SECRET: &str = "envsecret-5f1d9c27a0b34e68";
const HOST: &str = "web.example.com";

/// Everything the tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Records every response body, tagged with the request that got it.
#[derive(Default)]
struct Responses(Vec<(String, String)>);

impl Responses {
    async fn call(
        &mut self,
        cp: &ControlPlane,
        method: &str,
        path: &str,
        token: &str,
        body: Value,
    ) -> (u16, Value) {
        let (status, body) = cp.json(method, path, token, body).await;
        self.0.push((format!("{method} {path}"), body.to_string()));
        (status, body)
    }
}

/// A GET whose body is not JSON (NDJSON logs, Prometheus text).
async fn raw_get(cp: &ControlPlane, path: &str, token: &str) -> String {
    let req = http::Request::get(format!("http://{}{path}", cp.addr))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = crate::support::client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The base64 lines of a PEM block: the secret part of a key.
fn pem_body(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_metrics_or_responses() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Trace everything of ours and of the HTTP stack; the compiler and the
    // database only at debug (at trace they log every instruction and page,
    // none of which can hold a request's data).
    let filter = tracing_subscriber::EnvFilter::new(
        "trace,cranelift_codegen=debug,cranelift_frontend=debug,regalloc2=debug,\
         wasmtime_cranelift=debug,cranelift_bforest=debug,sled=debug,wasmtime=debug",
    );
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let mut responses = Responses::default();

    // The one response allowed to hold the tenant token.
    let (status, created) = cp
        .json(
            "POST",
            "/v1/tenants",
            ADMIN,
            json!({"name": "acme", "domains": crate::support::TEST_DOMAINS}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_string();

    let (status, body) = responses
        .call(
            &cp,
            "POST",
            "/v1/apps",
            &token,
            json!({"name": "web", "routes": [HOST]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, env_view) = responses
        .call(
            &cp,
            "PUT",
            "/v1/apps/web/env",
            &token,
            json!({"API_KEY": ENV_SECRET}),
        )
        .await;
    assert_eq!(status, 200, "{env_view}");
    assert_eq!(env_view["env_keys"], json!(["API_KEY"]), "{env_view}");
    let version = cp
        .deploy(
            &token,
            outpost_test_fixtures::stdout("guest-line-from-acme"),
        )
        .await;
    assert_eq!(version, 1);

    let issued = outpost_test_fixtures::tls::TestCa::new().issue(&[HOST]);
    let key_body = pem_body(&issued.key_pem);
    assert!(!key_body.is_empty());
    let (status, body) = responses
        .call(
            &cp,
            "PUT",
            &format!("/v1/certificates/{HOST}"),
            &token,
            json!({"cert_chain_pem": issued.chain_pem, "private_key_pem": issued.key_pem}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // A node syncs everything (env and key included) and serves it.
    let node = EdgeNode::start(cp.addr, cache.path(), "node-1").await;
    node.until_serves(HOST, "logged\n").await;
    // The guest's line reaches the control plane's log buffer (bounded
    // wait: nodes ship logs in batches).
    let started = std::time::Instant::now();
    let logs = loop {
        let logs = raw_get(&cp, "/v1/apps/web/logs", &token).await;
        if logs.contains("guest-line-from-acme") {
            break logs;
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "guest logs never arrived: {logs}"
        );
        let (_, text) = node.get(HOST).await;
        assert_eq!(text, "logged\n");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    responses.0.push(("GET /v1/apps/web/logs".into(), logs));

    // Every read a tenant, an admin or a node makes, and the error paths
    // (wrong kind of token, unknown token, bad input).
    for (method, path, who) in [
        ("GET", "/v1/tenants", ADMIN),
        ("GET", "/v1/apps", token.as_str()),
        ("GET", "/v1/apps/web/deployments", token.as_str()),
        ("GET", "/v1/certificates", token.as_str()),
        ("GET", "/v1/certificates", ADMIN),
        ("GET", "/v1/nodes", ADMIN),
        ("GET", "/v1/rollout", token.as_str()),
        ("GET", "/v1/apps/web", token.as_str()),
        ("GET", "/v1/apps/web", ADMIN),
        ("GET", "/v1/apps/web", NODE),
        ("GET", "/v1/tenants", token.as_str()),
        ("GET", "/v1/tenants", NODE),
        (
            "GET",
            "/v1/apps",
            "opt_0000000000000000000000000000000000000000000000000000000000000000",
        ),
        ("GET", "/v1/openapi.json", ADMIN),
    ] {
        responses.call(&cp, method, path, who, Value::Null).await;
    }
    let (status, body) = responses
        .call(
            &cp,
            "PUT",
            "/v1/apps/web/env",
            &token,
            json!({"": ENV_SECRET}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = responses
        .call(
            &cp,
            "PUT",
            "/v1/certificates/other.example.com",
            &token,
            json!({"cert_chain_pem": issued.chain_pem, "private_key_pem": issued.key_pem}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("not_your_route")),
        "{body}"
    );

    let cp_metrics = raw_get(&cp, "/metrics", "").await;
    assert!(cp_metrics.contains("outpost_"), "{cp_metrics}");
    let node_metrics = node.metrics.render();
    assert!(node_metrics.contains("outpost_"), "{node_metrics}");
    node.stop();
    cp.stop().await;

    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    // The capture really is at trace level and saw the run.
    assert!(log.contains("TRACE"), "no trace-level line captured");
    assert!(
        log.contains("guest-line-from-acme"),
        "guest output not in the log"
    );
    eprintln!("captured {} log lines", log.lines().count());

    let mut secrets: Vec<(&str, String)> = vec![
        ("tenant token", token.clone()),
        (
            "tenant token hex",
            token.trim_start_matches("opt_").to_string(),
        ),
        ("admin token", ADMIN.to_string()),
        ("node token", NODE.to_string()),
        ("env value", ENV_SECRET.to_string()),
    ];
    secrets.extend(key_body.iter().map(|l| ("private key PEM line", l.clone())));

    let mut leaks = Vec::new();
    // Configs that hold tokens print without them, should anyone log one.
    let sync_config = outpost_edge_node::sync::SyncConfig {
        url: format!("http://{}", "127.0.0.1:1"),
        ca_file: None,
        registry: None,
        token: NODE.into(),
        defaults: Default::default(),
        node_id: "node-1".into(),
    };
    if format!("{sync_config:?}").contains(NODE) {
        leaks.push(format!("node token in SyncConfig's Debug: {sync_config:?}"));
    }
    for (what, secret) in &secrets {
        for line in log.lines().filter(|l| l.contains(secret.as_str())) {
            leaks.push(format!("{what} in log: {line}"));
        }
        if cp_metrics.contains(secret.as_str()) {
            leaks.push(format!("{what} in control-plane /metrics"));
        }
        if node_metrics.contains(secret.as_str()) {
            leaks.push(format!("{what} in node /metrics"));
        }
        for (request, body) in &responses.0 {
            if body.contains(secret.as_str()) {
                leaks.push(format!("{what} in the response to {request}: {body}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The files under `dir` holding `needle`, as `grep -r` would find them.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .collect()
}

#[tokio::test]
async fn no_env_value_or_private_key_is_stored_in_clear_by_the_control_plane_or_the_node() {
    const MARKER: &str = "at-rest-marker-3c9e61f0b27d";
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let token = cp.acme_with_web_app().await;
    let (status, body) = cp
        .json(
            "PUT",
            "/v1/apps/web/env",
            &token,
            json!({"API_KEY": MARKER}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Changed again through the other write path, so both are covered.
    let (status, body) = cp
        .json(
            "PATCH",
            "/v1/apps/web/env",
            &token,
            json!({"DB_PASSWORD": MARKER}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let issued = outpost_test_fixtures::tls::TestCa::new().issue(&[HOST]);
    let (status, body) = cp
        .json(
            "PUT",
            &format!("/v1/certificates/{HOST}"),
            &token,
            json!({"cert_chain_pem": issued.chain_pem, "private_key_pem": issued.key_pem}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    cp.deploy(&token, outpost_test_fixtures::hello("at rest\n"))
        .await;

    // The node got everything (it serves the app, so it applied and saved
    // the snapshot carrying the env and the key).
    let node = EdgeNode::start(cp.addr, cache.path(), "node-1").await;
    node.until_serves(HOST, "at rest\n").await;
    node.stop();
    cp.stop().await;
    assert!(cache.path().join("snapshot.json").exists());

    let mut needles = vec![MARKER.to_string()];
    needles.extend(pem_body(&issued.key_pem));
    for dir in [data.path(), cache.path()] {
        for needle in &needles {
            let found = files_holding(dir, needle);
            assert!(found.is_empty(), "{needle:?} in clear in {found:?}");
        }
    }
    // And what nodes need still reaches them: a new node restores the
    // sealed cache with the same node token.
    let node = EdgeNode::start(cp_addr_gone(), cache.path(), "node-1").await;
    assert_eq!(node.get(HOST).await, (200, "at rest\n".to_string()));
    node.stop();
}

/// An address nothing listens on: the node has only its cache.
fn cp_addr_gone() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
