//! The `outpost` binary end to end: `outpost dev` brings up a control plane
//! and a node (real listeners, real sled under a temp dir), and the CLI
//! drives them — apps, deploy (waiting for the node), env, rollback,
//! certificates, errors — exactly as a tenant would type it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outpost_test_fixtures as fixtures;

use crate::support::{BIN, start_dev};

/// One HTTP/1.0 request to the node; (status, headers+body text).
fn get(addr: &str, host: &str, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(tcp, "GET {path} HTTP/1.0\r\nhost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn dev_serves_the_example_and_the_cli_deploys_sets_env_and_rolls_back() {
    let state = tempfile::tempdir().unwrap();
    let dev = start_dev(state.path(), &[]);
    // The example worker answers on the printed address right away.
    let (status, text) = get(&dev.http, "hello.localhost", "/");
    assert_eq!(status, 200);
    assert!(text.ends_with("Hello from C!\n"), "{text}");

    let token = dev.tenant_token();
    let files = tempfile::tempdir().unwrap();
    let v1 = write(files.path(), "v1.wasm", &fixtures::hello("v1\n"));
    let v2 = write(files.path(), "v2.wasm", &fixtures::hello("v2\n"));

    let created = dev.json(
        &token,
        &["apps", "create", "web", "--route", "web.localhost"],
    );
    assert_eq!(created["routes"], serde_json::json!(["web.localhost"]));
    let out = dev.ok(&token, &["deploy", "web", &v1]);
    assert!(out.contains("Deployed web version 1 (sha256:"), "{out}");
    assert!(out.contains("https://web.localhost/"), "{out}");
    // deploy waited for the node: it serves v1 now, no polling needed.
    assert!(get(&dev.http, "web.localhost", "/").1.ends_with("v1\n"));
    let deployed = dev.json(&token, &["deploy", "web", &v2]);
    assert_eq!(deployed["deployment"]["version"], 2);
    assert_eq!(deployed["rollout"]["applied"], deployed["rollout"]["nodes"]);
    assert!(get(&dev.http, "web.localhost", "/").1.ends_with("v2\n"));

    let list = dev.ok(&token, &["deployments", "web"]);
    assert!(list.lines().nth(2).unwrap().starts_with("2*"), "{list}");
    dev.ok(&token, &["rollback", "web", "1"]);
    assert!(get(&dev.http, "web.localhost", "/").1.ends_with("v1\n"));

    // env: the echo worker reports GREETING in x-echo-env.
    let echo = write(
        files.path(),
        "echo.wasm",
        &std::fs::read(fixtures::c_guest("echo")).unwrap(),
    );
    dev.ok(
        &token,
        &["apps", "create", "echo", "--route", "echo.localhost"],
    );
    dev.ok(
        &token,
        &["env", "set", "echo", "GREETING=bonjour", "OTHER=1"],
    );
    dev.ok(&token, &["deploy", "echo", &echo]);
    let (_, text) = get(&dev.http, "echo.localhost", "/");
    assert!(
        text.to_ascii_lowercase().contains("x-echo-env: bonjour"),
        "{text}"
    );
    dev.ok(&token, &["env", "set", "echo", "GREETING=hallo"]);
    let started = Instant::now();
    while !get(&dev.http, "echo.localhost", "/")
        .1
        .to_ascii_lowercase()
        .contains("x-echo-env: hallo")
    {
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        dev.json(&token, &["env", "list", "echo"]),
        serde_json::json!(["GREETING", "OTHER"])
    );
    dev.ok(&token, &["env", "unset", "echo", "OTHER"]);
    assert_eq!(
        dev.json(&token, &["env", "list", "echo"]),
        serde_json::json!(["GREETING"])
    );

    // secrets: the value from standard input or a file, never an argument;
    // the trailing newline `echo` adds is not part of it.
    let echoed = |want: &str| {
        let (_, text) = get(&dev.http, "echo.localhost", "/");
        text.to_ascii_lowercase()
            .contains(&format!("x-echo-env: {want}"))
    };
    let set = dev.with_stdin(
        &token,
        &["secrets", "set", "echo", "GREETING"],
        b"from-stdin\n",
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(
        echoed("from-stdin"),
        "the node serves the new value once set returns"
    );
    let file = write(files.path(), "secret.txt", b"from-file\r\n");
    dev.ok(
        &token,
        &["secrets", "set", "echo", "GREETING", "--file", &file],
    );
    assert!(echoed("from-file"));
    let empty = dev.with_stdin(&token, &["secrets", "set", "echo", "GREETING"], b"\n");
    assert!(!empty.status.success());
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("empty"),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
    assert!(echoed("from-file"), "a refused value changes nothing");

    // Errors: one line, non-zero exit, nothing changed.
    let err = dev.fails(
        &token,
        &["deploy", "web", &write(files.path(), "bad.wasm", b"junk")],
    );
    assert!(err.contains("not a valid worker"), "{err}");
    let err = dev.fails(&token, &["rollback", "web", "9"]);
    assert!(err.contains("not found"), "{err}");
    let err = dev.fails("wrong-token-0123456789", &["apps", "list"]);
    assert!(err.contains("outpost login"), "{err}");
    let err = dev.fails(&token, &["deploy", "web", "/no/such/file.wasm"]);
    assert!(err.contains("/no/such/file.wasm"), "{err}");
    assert!(get(&dev.http, "web.localhost", "/").1.ends_with("v1\n"));

    // Guest output comes back through `outpost logs`.
    let talker = write(
        files.path(),
        "talker.wasm",
        &fixtures::stdout("talking to the log"),
    );
    dev.ok(
        &token,
        &["apps", "create", "talker", "--route", "talker.localhost"],
    );
    dev.ok(&token, &["deploy", "talker", &talker]);
    for _ in 0..3 {
        assert_eq!(get(&dev.http, "talker.localhost", "/").0, 200);
    }
    let started = Instant::now();
    let lines = loop {
        let lines = dev.json_lines(&token, &["logs", "talker"]);
        if lines.len() >= 3 {
            break lines;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{lines:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(lines[0]["text"], "talking to the log");
    assert_eq!(lines[0]["stream"], "stdout");
    assert_eq!(lines[0]["node"], "dev");
    assert_ne!(lines[0]["request_id"], lines[1]["request_id"]);
    let human = dev.ok(&token, &["logs", "talker"]);
    assert!(
        human
            .lines()
            .all(|l| l.contains(" dev req=") && l.ends_with("stdout: talking to the log")),
        "{human}"
    );
    // --follow streams new lines as they come.
    let mut follow = Command::new(BIN)
        .args(["logs", "talker", "--follow"])
        .env("OUTPOST_URL", format!("http://{}", dev.api))
        .env("OUTPOST_TOKEN", &token)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut followed = BufReader::new(follow.stdout.take().unwrap()).lines();
    for _ in 0..lines.len() {
        followed.next().unwrap().unwrap();
    }
    assert_eq!(get(&dev.http, "talker.localhost", "/").0, 200);
    let new = followed.next().unwrap().unwrap();
    assert!(new.ends_with("stdout: talking to the log"), "{new}");
    let _ = follow.kill();
    let _ = follow.wait();
    // An app that isn't there is an error, not an empty stream.
    let err = dev.fails(&token, &["logs", "nope"]);
    assert!(err.contains("not found"), "{err}");

    // Outbound allow-list: set at creation, replaced later, checked.
    let app = dev.json(
        &token,
        &[
            "apps",
            "create",
            "caller",
            "--route",
            "caller.localhost",
            "--allow-outbound",
            "API.example.com",
            "--allow-outbound",
            "db.example.com:8080",
        ],
    );
    assert_eq!(
        app["allow_outbound"],
        serde_json::json!(["api.example.com", "db.example.com:8080"])
    );
    let app = dev.json(
        &token,
        &["apps", "allow-outbound", "caller", "other.example.com"],
    );
    assert_eq!(
        app["allow_outbound"],
        serde_json::json!(["other.example.com"])
    );
    let err = dev.fails(
        &token,
        &["apps", "allow-outbound", "caller", "http://x.example.com/"],
    );
    assert!(err.contains("a host, not a URL"), "{err}");
    let err = dev.fails(&token, &["apps", "allow-outbound", "caller", "127.0.0.1"]);
    assert!(err.contains("IP addresses cannot be allowed"), "{err}");

    // Certificates for one of the tenant's hosts.
    let ca = fixtures::tls::TestCa::new();
    let issued = ca.issue(&["caller.localhost"]);
    let cert = write(files.path(), "cert.pem", issued.chain_pem.as_bytes());
    let key = write(files.path(), "key.pem", issued.key_pem.as_bytes());
    let put = dev.json(
        &token,
        &[
            "certs",
            "put",
            "caller.localhost",
            "--cert",
            &cert,
            "--key",
            &key,
        ],
    );
    assert_eq!(put["names"], serde_json::json!(["caller.localhost"]));
    let listed = dev.json(&token, &["certs", "list"]);
    assert_eq!(listed[0]["hostname"], "caller.localhost");
    let err = dev.fails(
        &token,
        &[
            "certs",
            "put",
            "web.example.org",
            "--cert",
            &cert,
            "--key",
            &key,
        ],
    );
    assert!(err.contains("not the host of any of your routes"), "{err}");
    dev.ok(&token, &["certs", "delete", "caller.localhost"]);
    assert_eq!(dev.json(&token, &["certs", "list"]), serde_json::json!([]));

    // The table view.
    let apps = dev.ok(&token, &["apps", "list"]);
    assert!(apps.starts_with("APP"), "{apps}");
    assert!(
        apps.contains("web") && apps.contains("echo") && apps.contains("hello"),
        "{apps}"
    );
}

#[test]
fn dev_keeps_its_state_across_runs_and_login_saves_the_token() {
    let state = tempfile::tempdir().unwrap();
    let path = state.path().to_path_buf();
    let dev = start_dev(&path, &[]);
    let token = dev.tenant_token();
    let files = tempfile::tempdir().unwrap();
    let v1 = write(files.path(), "v1.wasm", &fixtures::hello("kept\n"));
    dev.ok(
        &token,
        &["apps", "create", "web", "--route", "web.localhost"],
    );
    dev.ok(&token, &["deploy", "web", &v1]);
    // login saves URL + token; later commands need neither.
    let login = Command::new(BIN)
        .args([
            "login",
            "--url",
            &format!("http://{}", dev.api),
            "--token",
            &token,
        ])
        .env("OUTPOST_CONFIG_DIR", path.join("cli-config"))
        .env_remove("OUTPOST_URL")
        .env_remove("OUTPOST_TOKEN")
        .output()
        .unwrap();
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let saved = std::fs::read_to_string(path.join("cli-config/config.toml")).unwrap();
    assert!(saved.contains(&token));

    // Stop it (SIGKILL even: every acknowledged write is durable) and
    // start again on the same state.
    drop(dev);
    let dev = start_dev(&path, &[]);
    assert_eq!(dev.tenant_token(), token);
    assert!(get(&dev.http, "web.localhost", "/").1.ends_with("kept\n"));
    let versions = dev.json(&token, &["deployments", "hello"]);
    assert_eq!(
        versions.as_array().unwrap().len(),
        1,
        "the example was not redeployed"
    );
}

#[test]
fn dev_stops_cleanly_on_sigterm() {
    let state = tempfile::tempdir().unwrap();
    let mut dev = start_dev(state.path(), &[]);
    assert_eq!(get(&dev.http, "hello.localhost", "/").0, 200);
    let pid = dev.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "outpost dev ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // The ports are free again and the state opens.
    assert!(TcpStream::connect(&dev.http).is_err());
    let again = start_dev(state.path(), &[]);
    assert_eq!(get(&again.http, "hello.localhost", "/").0, 200);
}

/// The operator's and the tenant's lifecycle commands against `outpost
/// dev`: grants decide what a tenant may route, named tokens are revoked
/// at once, a disabled tenant cannot deploy, a deleted one is gone.
#[test]
fn tenants_domains_tokens_and_lifecycle_through_the_cli() {
    let state = tempfile::tempdir().unwrap();
    let dev = start_dev(state.path(), &[]);
    let admin = dev.admin_token();
    let created = dev.json(
        &admin,
        &["tenants", "create", "shop", "--domain", "shop.localhost"],
    );
    let shop = created["token"].as_str().unwrap().to_string();
    dev.ok(
        &shop,
        &["apps", "create", "web", "--route", "www.shop.localhost"],
    );
    let err = dev.fails(
        &shop,
        &["apps", "create", "grab", "--route", "hello.localhost/x"],
    );
    assert!(err.contains("not under a domain granted"), "{err}");
    let granted = dev.json(
        &admin,
        &[
            "tenants",
            "domains",
            "shop",
            "shop.localhost",
            "store.localhost",
        ],
    );
    assert_eq!(
        granted["domains"],
        serde_json::json!(["shop.localhost", "store.localhost"])
    );
    dev.ok(
        &shop,
        &["apps", "create", "store", "--route", "store.localhost"],
    );

    let ci = dev.json(&shop, &["tokens", "create", "ci"]);
    let ci = ci["token"].as_str().unwrap().to_string();
    let names = dev.json(&ci, &["tokens", "list"]);
    assert_eq!(names[0]["name"], "ci");
    assert_eq!(names[1]["name"], "default");
    assert!(!names.to_string().contains(&ci[4..]));
    dev.ok(&shop, &["tokens", "revoke", "ci"]);
    let err = dev.fails(&ci, &["apps", "list"]);
    assert!(err.contains("outpost login"), "{err}");

    let files = tempfile::tempdir().unwrap();
    let wasm = write(files.path(), "v1.wasm", &fixtures::hello("shop\n"));
    dev.ok(&admin, &["tenants", "disable", "shop"]);
    let err = dev.fails(&shop, &["deploy", "web", &wasm, "--no-wait"]);
    assert!(err.contains("disabled"), "{err}");
    let list = dev.json(&admin, &["tenants", "list"]);
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "shop")
        .unwrap();
    assert_eq!(listed["disabled"], true);
    assert_eq!(listed["usage"]["hosts"], 2);
    dev.ok(&admin, &["tenants", "enable", "shop"]);
    dev.ok(&shop, &["deploy", "web", &wasm]);
    assert!(
        get(&dev.http, "www.shop.localhost", "/")
            .1
            .ends_with("shop\n")
    );

    let err = dev.fails(&admin, &["tenants", "delete", "shop"]);
    assert!(err.contains("--yes"), "{err}");
    dev.ok(&admin, &["tenants", "delete", "shop", "--yes"]);
    let err = dev.fails(&shop, &["apps", "list"]);
    assert!(err.contains("outpost login"), "{err}");
    let started = Instant::now();
    while get(&dev.http, "www.shop.localhost", "/").0 != 404 {
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `PUT /v1/nodes/{node}/status` on the dev control plane with `token`:
/// the status code.
fn report_status(api: &str, node: &str, token: &str) -> u16 {
    let body = r#"{"applied_revision":0}"#;
    let mut tcp = TcpStream::connect(api).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "PUT /v1/nodes/{node}/status HTTP/1.0\r\nhost: {api}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    out[9..12].parse().unwrap()
}

/// The operator gives a node its own identity, sees it in the fleet, and
/// revokes it, all through the CLI; `outpost nodes` alone still lists the
/// fleet.
#[test]
fn node_identities_are_added_listed_and_revoked_through_the_cli() {
    let state = tempfile::tempdir().unwrap();
    let dev = start_dev(state.path(), &[]);
    let admin = dev.admin_token();

    let out = dev.ok(&admin, &["nodes", "add", "edge-1"]);
    let mut lines = out.lines();
    let token = lines.next().unwrap().to_string();
    assert!(token.starts_with("opn_edge-1_"), "{out}");
    let hint = lines.next().unwrap();
    assert!(
        hint.contains("--node-token") && hint.contains("OUTPOST_NODE_TOKEN"),
        "{out}"
    );
    assert_eq!(lines.next(), None, "{out}");
    let created = dev.json(&admin, &["nodes", "add", "edge-2"]);
    assert_eq!(created["name"], "edge-2");
    assert!(
        created["token"]
            .as_str()
            .unwrap()
            .starts_with("opn_edge-2_")
    );
    let err = dev.fails(&admin, &["nodes", "add", "edge-1"]);
    assert!(err.contains("exists"), "{err}");
    let err = dev.fails(&admin, &["nodes", "add", "watch"]);
    assert!(err.contains("/v1/nodes/"), "{err}");
    let err = dev.fails(&dev.tenant_token(), &["nodes", "add", "edge-3"]);
    assert!(err.contains("admin"), "{err}");

    let listed = dev.json(&admin, &["nodes", "identities"]);
    assert_eq!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["edge-1", "edge-2"]
    );
    assert!(!listed.to_string().contains(&token[11..]));
    let table = dev.ok(&admin, &["nodes", "identities"]);
    assert!(table.starts_with("NODE"), "{table}");

    // The node reports with its token and shows up under its identity,
    // beside the dev node on the shared token.
    assert_eq!(report_status(&dev.api, "edge-1", &token), 204);
    let fleet = dev.ok(&admin, &["nodes"]);
    assert!(fleet.contains("IDENTITY"), "{fleet}");
    let row = |id: &str| {
        fleet
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no {id} in {fleet}"))
            .to_string()
    };
    assert!(row("edge-1").trim_end().ends_with("edge-1"), "{fleet}");
    assert!(row("dev").trim_end().ends_with("shared token"), "{fleet}");

    let out = dev.ok(&admin, &["nodes", "revoke", "edge-1"]);
    assert!(out.contains("Revoked node identity edge-1"), "{out}");
    assert_eq!(report_status(&dev.api, "edge-1", &token), 401);
    let listed = dev.json(&admin, &["nodes", "identities"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let err = dev.fails(&admin, &["nodes", "revoke", "edge-1"]);
    assert!(err.contains("not found"), "{err}");
}

/// A node that reports in but never catches up: `outpost deploy` gives up
/// after --wait-timeout and names it (the change itself is saved).
#[test]
fn a_deploy_that_gives_up_waiting_names_the_node_behind() {
    let state = tempfile::tempdir().unwrap();
    let dev = start_dev(state.path(), &[]);
    let tokens: toml::Value =
        toml::from_str(&std::fs::read_to_string(state.path().join("dev.toml")).unwrap()).unwrap();
    let node_token = tokens["node"].as_str().unwrap();
    assert_eq!(report_status(&dev.api, "ghost-7", node_token), 204);

    let token = dev.tenant_token();
    let files = tempfile::tempdir().unwrap();
    let wasm = write(files.path(), "v1.wasm", &fixtures::hello("v1\n"));
    dev.ok(
        &token,
        &["apps", "create", "web", "--route", "web.localhost"],
    );
    let out = dev.outpost(&token, &["deploy", "web", &wasm, "--wait-timeout", "1"]);
    assert!(!out.status.success(), "the ghost node never serves it");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only 1/2 node(s) serve revision"), "{err}");
    assert!(err.contains("behind: ghost-7"), "{err}");
    // Saved all the same: the live node serves it.
    assert!(get(&dev.http, "web.localhost", "/").1.ends_with("v1\n"));
}
