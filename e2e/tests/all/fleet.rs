//! The fleet as an operator runs it: the real `control-plane`, `edge-node`
//! and `outpost` binaries as child processes. The control plane serves
//! HTTPS only, with a certificate from a test CA; nodes and the CLI trust
//! that CA through `--ca-file`/`OUTPOST_CA_FILE`; each node has its own
//! identity, created and revoked with `outpost nodes`. No plain-HTTP
//! listener takes part.
//!
//! The binaries are the workspace's own, found beside this test's
//! executable: `cargo test --workspace` builds them before any test runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use outpost_test_fixtures as fixtures;
use outpost_test_fixtures::tls::TestCa;
use outpost_test_fixtures::wire::good_get;
use serde_json::Value;

use crate::support::link_get;
use crate::support::procs::{Proc, address, binary, until_serves};

const ADMIN: &str = "fleet-admin-token-0123456789";
/// The control plane's heartbeat on idle watch streams (`watch.rs`).
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Process start-up and polling on two busy cores.
const SLACK: Duration = Duration::from_secs(3);

/// How the CLI reaches the control plane.
struct Cli {
    url: String,
    ca_file: PathBuf,
    config_dir: PathBuf,
}

impl Cli {
    fn run(&self, token: &str, args: &[&str]) -> Output {
        self.run_with(token, &self.url, &self.ca_file, args)
    }

    fn run_with(&self, token: &str, url: &str, ca_file: &Path, args: &[&str]) -> Output {
        Command::new(binary("outpost"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("OUTPOST_URL", url)
            .env("OUTPOST_CA_FILE", ca_file)
            .env("OUTPOST_TOKEN", token)
            .env("OUTPOST_CONFIG_DIR", &self.config_dir)
            .output()
            .unwrap()
    }

    /// `outpost ARGS --json`, which must succeed; its output.
    fn json(&self, token: &str, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.run(token, &args);
        assert!(
            out.status.success(),
            "outpost {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A series of the control plane's `/metrics`, over HTTPS trusting `ca_file`.
async fn cp_metric(url: &str, ca_file: &Path, series: &str) -> f64 {
    let (_, text) = link_get(url, ca_file, "/metrics", None).await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

fn node_args<'a>(url: &'a str, ca: &'a str, token: &'a str, cache: &'a str) -> Vec<&'a str> {
    vec![
        "--control-plane",
        url,
        "--ca-file",
        ca,
        "--node-token",
        token,
        "--cache-dir",
        cache,
        "--http",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_fleet_with_node_identities_serves_refuses_strangers_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let text = |p: &PathBuf| p.to_str().unwrap().to_string();
    let ca = TestCa::new();
    let issued = ca.issue(&["127.0.0.1", "localhost"]);
    std::fs::write(path("cp.crt"), &issued.chain_pem).unwrap();
    std::fs::write(path("cp.key"), &issued.key_pem).unwrap();
    std::fs::write(path("ca.pem"), ca.root_pem()).unwrap();
    std::fs::write(path("wrong-ca.pem"), TestCa::new().root_pem()).unwrap();
    std::fs::write(path("v1.wasm"), fixtures::hello("v1\n")).unwrap();
    std::fs::write(path("v2.wasm"), fixtures::hello("v2\n")).unwrap();

    // The control plane: HTTPS only, and no shared node token at all.
    let (_cp, banner) = Proc::start(
        "control-plane",
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &text(&path("cp-data")),
            "--admin-token",
            ADMIN,
            "--tls-cert",
            &text(&path("cp.crt")),
            "--tls-key",
            &text(&path("cp.key")),
        ],
        dir.path(),
        "control-plane",
        "Listening on ",
    );
    let cp = address(&banner, "Listening on https://");
    let url = format!("https://{cp}");
    let cli = Cli {
        url: url.clone(),
        ca_file: path("ca.pem"),
        config_dir: path("cli-config"),
    };

    // The operator: a tenant, and one identity per node.
    let tenant = cli.json(
        ADMIN,
        &["tenants", "create", "acme", "--domain", "example.com"],
    );
    let tenant = tenant["token"].as_str().unwrap().to_string();
    let mut tokens = Vec::new();
    for name in ["edge-1", "edge-2", "edge-3"] {
        let created = cli.json(ADMIN, &["nodes", "add", name]);
        assert_eq!(created["name"], name);
        tokens.push(created["token"].as_str().unwrap().to_string());
    }

    // Two nodes, each with its identity and the CA; ids come from it.
    let ca_file = text(&path("ca.pem"));
    let mut nodes = Vec::new();
    for (i, token) in tokens[..2].iter().enumerate() {
        let cache = text(&path(&format!("cache-{i}")));
        let (proc, lines) = Proc::start(
            "edge-node",
            &node_args(&url, &ca_file, token, &cache),
            dir.path(),
            &format!("edge-{}", i + 1),
            "Metrics on ",
        );
        nodes.push((proc, address(&lines, "Listening on http://")));
    }

    // The tenant deploys through the CLI; both nodes serve it.
    cli.json(
        &tenant,
        &["apps", "create", "web", "--route", "web.example.com"],
    );
    cli.json(&tenant, &["deploy", "web", &text(&path("v1.wasm"))]);
    for (_, http) in &nodes {
        until_serves(*http, "web.example.com", "v1\n").await;
    }
    let fleet = cli.json(ADMIN, &["nodes"]);
    let mut seen: Vec<(String, String)> = fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["identity"].as_str().unwrap_or("shared token").to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("edge-1".to_string(), "edge-1".to_string()),
            ("edge-2".to_string(), "edge-2".to_string())
        ]
    );

    // A node given another CA refuses the control plane and, with no
    // cache to serve, exits non-zero saying why.
    let (mut stranger, _) = Proc::start(
        "edge-node",
        &node_args(
            &url,
            &text(&path("wrong-ca.pem")),
            &tokens[2],
            &text(&path("cache-3")),
        ),
        dir.path(),
        "edge-3",
        "Metrics on ",
    );
    let status = stranger
        .exit_within(Duration::from_secs(30))
        .expect("a node that cannot trust its control plane exits");
    assert!(!status.success());
    let log = stranger.log();
    assert!(
        log.contains("not trusted") && log.contains("--ca-file"),
        "{log}"
    );

    // `outpost login --ca-file` saves the CA with the URL: later commands
    // need neither.
    let saved = Command::new(binary("outpost"))
        .args(["login", "--url", &url, "--ca-file"])
        .arg(path("ca.pem"))
        .args(["--token", &tenant])
        .env_clear()
        .env("OUTPOST_CONFIG_DIR", path("login-config"))
        .output()
        .unwrap();
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let listed = Command::new(binary("outpost"))
        .args(["apps", "list"])
        .env_clear()
        .env("OUTPOST_CONFIG_DIR", path("login-config"))
        .output()
        .unwrap();
    assert!(
        listed.status.success() && String::from_utf8_lossy(&listed.stdout).contains("web"),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    // The CLI with another CA fails the same way, and an http:// URL to
    // the HTTPS port gets nothing back: nothing falls back to plain HTTP.
    let out = cli.run_with(&tenant, &url, &path("wrong-ca.pem"), &["apps", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not trusted"),
        "{err}"
    );
    let out = cli.run_with(
        &tenant,
        &format!("http://{cp}"),
        &path("ca.pem"),
        &["apps", "list"],
    );
    assert!(!out.status.success());
    let out = Command::new(binary("outpost"))
        .args(["apps", "list"])
        .env_clear()
        .env("OUTPOST_URL", format!("http://{cp}"))
        .env("OUTPOST_TOKEN", &tenant)
        .env("OUTPOST_CONFIG_DIR", path("cli-config"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "plain HTTP to the HTTPS port worked");

    // Revoking edge-2 ends its watch stream within one heartbeat.
    let streams = "outpost_cp_watch_streams";
    assert_eq!(cp_metric(&url, &path("ca.pem"), streams).await, 2.0);
    let revoked = Instant::now();
    cli.json(ADMIN, &["nodes", "revoke", "edge-2"]);
    loop {
        if cp_metric(&url, &path("ca.pem"), streams).await == 1.0 {
            break;
        }
        assert!(
            revoked.elapsed() < HEARTBEAT + SLACK,
            "edge-2's stream still open {:?} after its revocation",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "edge-2's stream ended {:?} after its revocation",
        revoked.elapsed()
    );

    // It fetches nothing more: v2 reaches edge-1 only, and edge-2 keeps
    // serving what it has cached.
    cli.json(
        &tenant,
        &["deploy", "web", &text(&path("v2.wasm")), "--no-wait"],
    );
    until_serves(nodes[0].1, "web.example.com", "v2\n").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        good_get(nodes[1].1, "web.example.com").await.unwrap(),
        (200, "v1\n".to_string())
    );
    let log = nodes[1].0.log();
    assert!(log.contains("401"), "{log}");
}
