//! The upgrade path from one control plane on sled to control planes on
//! etcd and a registry: `control-plane migrate` (the real binary) moves a
//! populated store, a control plane on etcd serves all of it as it was,
//! and a node switched over keeps its compiled code.

use std::process::{Command, Output};
use std::sync::Arc;

use outpost_control_plane::store::{DirBlobs, EtcdOptions, EtcdStore, Store};
use outpost_oci::RegistryConfig;
use outpost_test_fixtures as fixtures;
use outpost_test_fixtures::etcd::Etcd;
use outpost_test_fixtures::registry::Registry;
use serde_json::{Value, json};

use crate::support::procs::binary;
use crate::support::{ADMIN, CERT_KEY, ControlPlane, EdgeNode};

const SECRET: &str = "migrated-secret-7d1f";

/// `control-plane migrate ARGS` with a clean environment.
fn migrate(args: &[&str]) -> Output {
    Command::new(binary("control-plane"))
        .arg("migrate")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `etcd://` + the members, as `--store` and `--to` take them.
fn etcd_url(etcd: &Etcd, prefix: &str) -> String {
    let hosts: Vec<String> = etcd
        .endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").to_string())
        .collect();
    format!("etcd://{}{prefix}", hosts.join(","))
}

/// The etcd store under `prefix`, read directly (blocks).
fn etcd_store(endpoints: Vec<String>, prefix: &str, blobs: &std::path::Path) -> EtcdStore {
    let options = EtcdOptions {
        prefix: prefix.into(),
        ..EtcdOptions::default()
    };
    EtcdStore::connect(
        &endpoints,
        options,
        Arc::new(DirBlobs::open(blobs).unwrap()),
    )
    .unwrap()
}

fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// How many times `node` looked its compile cache up with `result`.
fn compile_lookups(node: &EdgeNode, result: &str) -> f64 {
    let series = format!("outpost_runtime_compile_cache_lookups_total{{result=\"{result}\"}} ");
    node.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

async fn ok(cp: &ControlPlane, method: &str, path: &str, token: &str, body: Value) -> Value {
    let (status, out) = cp.json(method, path, token, body).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {out}"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_moves_a_sled_installation_into_etcd_and_a_node_keeps_its_compiled_code() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();

    // A populated single-box installation: two tenants, versions, env,
    // a certificate, a named token and a node identity.
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let acme = cp.acme_with_web_app().await;
    let globex = cp.tenant_with_web_app("globex").await;
    ok(
        &cp,
        "PUT",
        "/v1/apps/web/env",
        &acme,
        json!({"API_KEY": SECRET}),
    )
    .await;
    let issued = fixtures::tls::TestCa::new().issue(&["web.example.com"]);
    let cert = json!({"cert_chain_pem": issued.chain_pem, "private_key_pem": issued.key_pem});
    ok(&cp, "PUT", "/v1/certificates/web.example.com", &acme, cert).await;
    let v1 = fixtures::hello("acme v1\n");
    let v1_digest = digest(&v1);
    cp.deploy(&acme, v1).await;
    cp.deploy(&acme, fixtures::hello("acme v2\n")).await;
    cp.deploy(&globex, fixtures::hello("globex v1\n")).await;
    let ci = ok(&cp, "POST", "/v1/tokens", &acme, json!({"name": "ci"})).await;
    let ci = ci["token"].as_str().unwrap().to_string();
    let identity = ok(
        &cp,
        "POST",
        "/v1/nodes/identities",
        ADMIN,
        json!({"name": "edge-m"}),
    )
    .await;
    let node_token = identity["token"].as_str().unwrap().to_string();
    let with_identity = |token: String| {
        move |c: &mut outpost_edge_node::config::Config| {
            c.sync.as_mut().unwrap().token = token;
        }
    };
    let node = EdgeNode::start_with(
        cp.addr,
        cache.path(),
        "edge-m",
        with_identity(node_token.clone()),
    )
    .await;
    node.until_serves("web.example.com", "acme v2\n").await;
    node.until_serves("globex.example.com", "globex v1\n").await;
    let revision = node.metric("outpost_sync_applied_revision");
    assert!(
        compile_lookups(&node, "miss") >= 2.0,
        "the first node compiled what it serves:\n{}",
        node.metrics_text()
    );
    node.stop();
    cp.stop().await;

    let etcd = Etcd::start();
    let registry = Registry::start();
    let registry_url = registry.url("outpost/modules");
    let to = etcd_url(&etcd, "/migrated");
    let from = data.path().to_str().unwrap();
    let args = [
        "--from",
        from,
        "--to",
        &to,
        "--registry",
        &registry_url,
        "--cert-key",
        CERT_KEY,
    ];

    // A wrong key is refused before anything is written.
    let wrong_key = "17".repeat(32);
    let wrong_to = etcd_url(&etcd, "/wrong-key");
    let out = migrate(&[
        "--from",
        from,
        "--to",
        &wrong_to,
        "--registry",
        &registry_url,
        "--cert-key",
        &wrong_key,
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("does not open"), "{}", text(&out));
    let endpoints = etcd.endpoints();
    let written = tokio::task::spawn_blocking(move || {
        let untouched = tempfile::tempdir().unwrap();
        let store = etcd_store(endpoints, "/wrong-key", untouched.path());
        (store.revision().unwrap(), store.tenants().unwrap().len())
    })
    .await
    .unwrap();
    assert_eq!(written, (0, 0), "a refused migrate wrote to etcd");

    let out = migrate(&args);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains(&format!("at revision {revision}:")),
        "{stdout}"
    );
    assert!(stdout.contains("tenants: 2"), "{stdout}");
    assert!(stdout.contains("deployments: 3"), "{stdout}");
    assert!(stdout.contains("modules pushed to"), "{stdout}");
    println!("{stdout}");

    // Run again, it refuses: the prefix now holds a store.
    let out = migrate(&args);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already exists"), "{}", text(&out));

    // A control plane on the copy serves all of it as it was.
    let registry_config = RegistryConfig {
        url: registry_url.clone(),
        ..RegistryConfig::default()
    };
    let cp = crate::ha::control_plane_under(&etcd, "/migrated", &registry_config, "cp-0").await;
    let tenants = ok(&cp, "GET", "/v1/tenants", ADMIN, Value::Null).await;
    assert_eq!(tenants.as_array().map(Vec::len), Some(2), "{tenants}");
    for token in [&acme, &ci] {
        let versions = ok(&cp, "GET", "/v1/apps/web/deployments", token, Value::Null).await;
        assert_eq!(versions.as_array().map(Vec::len), Some(2), "{versions}");
    }
    let tokens = ok(&cp, "GET", "/v1/tokens", &acme, Value::Null).await;
    assert!(
        tokens.to_string().contains("\"ci\"") && tokens.to_string().contains("\"default\""),
        "{tokens}"
    );
    let app = ok(&cp, "GET", "/v1/apps/web", &acme, Value::Null).await;
    assert!(app.to_string().contains("API_KEY"), "{app}");
    assert!(!app.to_string().contains(SECRET), "{app}");
    let app = ok(&cp, "GET", "/v1/apps/web", &globex, Value::Null).await;
    assert!(app.to_string().contains("globex.example.com"), "{app}");
    let certs = ok(&cp, "GET", "/v1/certificates", &acme, Value::Null).await;
    assert!(certs.to_string().contains("web.example.com"), "{certs}");
    // The replaced version's module moved too: the control plane hands it
    // out from the registry.
    let (status, _) = cp
        .call(
            "GET",
            &format!("/v1/modules/{v1_digest}"),
            &node_token,
            "application/json",
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200);

    // The node, switched over with its identity and its cache, resumes at
    // its revision and compiles nothing.
    let node = EdgeNode::start_with(cp.addr, cache.path(), "edge-m", |c| {
        with_identity(node_token.clone())(c);
        c.sync.as_mut().unwrap().registry = Some(registry_config);
    })
    .await;
    assert_eq!(node.restored_revision as f64, revision);
    node.until_serves("web.example.com", "acme v2\n").await;
    assert_eq!(node.get("globex.example.com").await.1, "globex v1\n");
    assert_eq!(
        (
            compile_lookups(&node, "miss"),
            compile_lookups(&node, "hit")
        ),
        (0.0, 2.0),
        "{}",
        node.metrics_text()
    );
    // A version the node never had comes from the registry the copy
    // pushed it to.
    let (status, body) = cp
        .json(
            "POST",
            "/v1/apps/web/rollback",
            &acme,
            json!({"version": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    node.until_serves("web.example.com", "acme v1\n").await;
    assert_eq!(node.module_fetches("registry", "ok"), 1.0);
    node.stop();
    cp.stop().await;
}
