//! `outpost deploy` from `outpost.toml`, against `outpost dev`: the app
//! created from the manifest, a second deploy that changes nothing and
//! says so, `--dry-run` that changes nothing, and a bad manifest refused
//! with the line of each problem.

use std::path::Path;
use std::process::Output;

use outpost_test_fixtures as fixtures;

use crate::support::{Dev, start_dev};

fn get(addr: &str, host: &str) -> String {
    crate::support::http_get(addr, host).to_ascii_lowercase()
}

/// A project dir holding `outpost.toml`'s component, `build/app.wasm`.
fn project_with(wasm: &[u8]) -> tempfile::TempDir {
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir(project.path().join("build")).unwrap();
    std::fs::write(project.path().join("build/app.wasm"), wasm).unwrap();
    project
}

fn manifest(dir: &Path, routes: &str, greeting: &str, extra: &str) {
    std::fs::write(
        dir.join("outpost.toml"),
        format!(
            r#"manifest_version = 1

[app]
name = "site"
routes = [{routes}]
component = "build/app.wasm"
secrets = ["API_KEY"]
{extra}
[app.env]
GREETING = "{greeting}"
"#
        ),
    )
    .unwrap();
}

/// (stdout, stderr) of a run that must succeed.
fn ok(dev: &Dev, dir: &Path, token: &str, args: &[&str]) -> (String, String) {
    let out: Output = dev.outpost_in(dir, token, args);
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(out.status.success(), "outpost {args:?}: {stderr}");
    (stdout, stderr)
}

fn versions(dev: &Dev, token: &str) -> usize {
    dev.json(token, &["deployments", "site"])
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn deploy_brings_the_app_to_its_manifest_and_changes_only_what_differs() {
    let state = tempfile::tempdir().unwrap();
    let dev = start_dev(state.path(), &[]);
    let token = dev.tenant_token();
    let project = project_with(&std::fs::read(fixtures::c_guest("echo")).unwrap());
    let dir = project.path();
    manifest(dir, r#""site.localhost""#, "bonjour", "");

    // A dry run prints the plan and creates nothing.
    let (plan, _) = ok(&dev, dir, &token, &["deploy", "--dry-run"]);
    assert!(plan.contains("+ create app site"), "{plan}");
    assert!(plan.contains("+ upload "), "{plan}");
    assert!(plan.contains("Dry run: nothing was changed."), "{plan}");
    let missing = dev.outpost(&token, &["apps", "show", "site"]);
    assert!(!missing.status.success(), "the dry run created the app");

    let (out, err) = ok(&dev, dir, &token, &["deploy"]);
    assert!(out.contains("+ create app site"), "{out}");
    assert!(out.contains("~ env: set GREETING"), "{out}");
    assert!(out.contains("Deployed site version 1"), "{out}");
    assert!(
        err.contains("secret API_KEY is not set; set it with `outpost secrets set site API_KEY`"),
        "{err}"
    );
    // deploy waited for the node.
    assert!(get(&dev.http, "site.localhost").contains("x-echo-env: bonjour"));

    // Nothing changed: nothing uploaded, and it says so.
    let (out, _) = ok(&dev, dir, &token, &["deploy"]);
    assert!(
        out.starts_with("site is up to date: version 1 runs sha256:"),
        "{out}"
    );
    assert!(out.contains("nothing to upload"), "{out}");
    assert_eq!(versions(&dev, &token), 1);

    // A secret set out of band is neither removed nor warned about.
    let set = dev.with_stdin(&token, &["secrets", "set", "site", "API_KEY"], b"s3cret\n");
    assert!(set.status.success());
    let (out, err) = ok(&dev, dir, &token, &["deploy"]);
    assert!(out.starts_with("site is up to date"), "{out}");
    assert!(!err.contains("not set"), "{err}");

    // A variable set by hand is not in the manifest: deploy removes it.
    dev.ok(&token, &["env", "set", "site", "EXTRA=1"]);
    // New route, new value, new component: the plan lists each, a dry
    // run changes none of them.
    manifest(dir, r#""site.localhost", "www.site.localhost""#, "hola", "");
    std::fs::write(dir.join("build/app.wasm"), fixtures::hello("v2\n")).unwrap();
    let (plan, _) = ok(&dev, dir, &token, &["deploy", "--dry-run"]);
    for line in [
        "~ routes: +www.site.localhost",
        "~ env: set GREETING",
        "~ env: remove EXTRA",
        "+ upload ",
    ] {
        assert!(
            plan.contains(line),
            "{line:?} missing from the plan:\n{plan}"
        );
    }
    assert!(!plan.contains("create app"), "{plan}");
    assert_eq!(versions(&dev, &token), 1);
    assert!(get(&dev.http, "www.site.localhost").starts_with("http/1.0 404"));
    let shown = dev.json(&token, &["apps", "show", "site"]);
    assert_eq!(
        shown["env_keys"],
        serde_json::json!(["API_KEY", "EXTRA", "GREETING"])
    );

    let plan = dev.outpost_in(dir, &token, &["--json", "deploy"]);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["applied"], true);
    assert_eq!(plan["deployment"]["version"], 2);
    assert!(get(&dev.http, "www.site.localhost").ends_with("v2\n"));
    let shown = dev.json(&token, &["apps", "show", "site"]);
    assert_eq!(
        shown["env_keys"],
        serde_json::json!(["API_KEY", "GREETING"])
    );
}

#[test]
fn a_bad_manifest_is_refused_with_the_line_of_each_problem_and_changes_nothing() {
    let state = tempfile::tempdir().unwrap();
    let dev = start_dev(state.path(), &[]);
    let token = dev.tenant_token();
    let project = project_with(&fixtures::hello("x\n"));
    let dir = project.path();

    manifest(dir, r#""site.localhost""#, "x", "memory = 64\n");
    let out = dev.outpost_in(dir, &token, &["deploy"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("outpost.toml") && err.contains("line 8"),
        "{err}"
    );
    assert!(err.contains("unknown field `memory`"), "{err}");

    manifest(dir, r#""site.localhost", "a b""#, "x", "");
    std::fs::write(
        dir.join("outpost.toml"),
        std::fs::read_to_string(dir.join("outpost.toml"))
            .unwrap()
            .replace("name = \"site\"", "name = \"Site\""),
    )
    .unwrap();
    let out = dev.outpost_in(dir, &token, &["deploy"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4: app.name \"Site\""), "{err}");
    assert!(err.contains("line 5: route \"a b\""), "{err}");

    // Another tenant's host in a manifest: the control plane's 409, and
    // nothing of the app is left behind.
    let other = dev.json(
        &dev.admin_token(),
        &[
            "tenants",
            "create",
            "rival",
            "--domain",
            "rival.example.com",
        ],
    );
    let rival = other["token"].as_str().unwrap().to_string();
    manifest(dir, r#""site.localhost""#, "x", "");
    ok(&dev, dir, &token, &["deploy"]);
    let out = dev.outpost_in(dir, &rival, &["deploy"]);
    assert!(
        !out.status.success(),
        "a second tenant deployed over the first's host"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[409]") || err.contains("[403]"), "{err}");
    assert!(
        !dev.outpost(&rival, &["apps", "show", "site"])
            .status
            .success()
    );
    assert!(get(&dev.http, "site.localhost").ends_with("x\n"));
}

/// Every process's command line, joined.
fn all_command_lines() -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            out.push_str(&String::from_utf8_lossy(&raw).replace('\0', " "));
            out.push('\n');
        }
    }
    out
}

#[test]
fn secrets_never_reach_argv_logs_or_api_output() {
    const FROM_STDIN: &str = "marker-stdin-7f3a91c2";
    const FROM_DEV_VARS: &str = "marker-devvars-5e0b44d8";
    let project = project_with(&std::fs::read(fixtures::c_guest("echo")).unwrap());
    let dir = project.path();
    std::fs::write(
        dir.join("outpost.toml"),
        "manifest_version = 1\n[app]\nname = \"vault\"\nroutes = [\"vault.localhost\"]\ncomponent = \"build/app.wasm\"\nsecrets = [\"GREETING\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join(".dev.vars"), format!("GREETING={FROM_DEV_VARS}\n")).unwrap();
    let state = tempfile::tempdir().unwrap();
    let (dev, lines) = crate::support::start_dev_in(dir, state.path(), &[]);
    // The guest gets the .dev.vars value (the echo worker shows GREETING).
    assert!(get(&dev.http, "vault.localhost").contains(&format!("x-echo-env: {FROM_DEV_VARS}")));

    // `secrets set` reads stdin: while it runs, no process's argv holds
    // the value.
    let token = dev.tenant_token();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let scanner = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let mut seen = false;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                seen |= all_command_lines().contains(FROM_STDIN);
            }
            seen
        })
    };
    let set = dev.with_stdin(
        &token,
        &["secrets", "set", "vault", "GREETING"],
        FROM_STDIN.as_bytes(),
    );
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(
        !scanner.join().unwrap(),
        "the secret was in a process's argv"
    );
    assert!(get(&dev.http, "vault.localhost").contains(&format!("x-echo-env: {FROM_STDIN}")));

    // Nothing the CLI or the API prints holds either value.
    let mut printed = String::from_utf8_lossy(&set.stdout).into_owned();
    printed += &String::from_utf8_lossy(&set.stderr);
    for args in [
        vec!["--json", "apps", "show", "vault"],
        vec!["apps", "show", "vault"],
        vec!["--json", "env", "list", "vault"],
        vec!["--json", "apps", "list"],
        vec!["--json", "deployments", "vault"],
    ] {
        let out = dev.outpost(&token, &args);
        printed += &String::from_utf8_lossy(&out.stdout);
        printed += &String::from_utf8_lossy(&out.stderr);
    }
    let plan = dev.outpost_in(dir, &token, &["--json", "deploy", "--dry-run"]);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    printed += &String::from_utf8_lossy(&plan.stdout);
    assert!(printed.contains("GREETING"), "the name is shown: {printed}");
    for marker in [FROM_STDIN, FROM_DEV_VARS] {
        assert!(!printed.contains(marker), "{marker} printed:\n{printed}");
    }
    // Nor does outpost dev's own output.
    drop(dev);
    let logged: Vec<String> = lines.iter().collect();
    for marker in [FROM_STDIN, FROM_DEV_VARS] {
        assert!(
            !logged.iter().any(|l| l.contains(marker)),
            "{marker} in outpost dev's output: {logged:#?}"
        );
    }
}

/// A manifest asking for more than the tenant's apps get is refused
/// before anything changes, naming each limit and the command that would
/// raise it; once the operator raises the tenant's limits, it deploys.
#[test]
fn a_manifest_asking_for_more_than_the_tenant_gets_is_refused_before_anything_changes() {
    let state = tempfile::tempdir().unwrap();
    let dev = start_dev(state.path(), &[]);
    let token = dev.tenant_token();
    let project = project_with(&fixtures::hello("big\n"));
    let dir = project.path();
    manifest(
        dir,
        r#""site.localhost""#,
        "x",
        "[app.limits]\nmemory_mib = 512\ntimeout_ms = 1000\nmax_concurrency = 200\n",
    );
    for args in [&["deploy"][..], &["deploy", "--dry-run"]] {
        let out = dev.outpost_in(dir, &token, args);
        assert!(!out.status.success(), "{args:?} went through");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("app.limits.memory_mib = 512, but tenant dev's apps get 128"),
            "{err}"
        );
        assert!(
            err.contains("app.limits.max_concurrency = 200, but tenant dev's apps get 64"),
            "{err}"
        );
        // Asking for less than the tenant gets is fine and not mentioned.
        assert!(!err.contains("timeout_ms"), "{err}");
        assert!(
            err.contains("outpost tenants limits dev --memory-mib 512 --max-concurrency 200"),
            "{err}"
        );
    }
    assert!(
        !dev.outpost(&token, &["apps", "show", "site"])
            .status
            .success(),
        "a refused deploy created the app"
    );
    dev.ok(
        &dev.admin_token(),
        &[
            "tenants",
            "limits",
            "dev",
            "--memory-mib",
            "512",
            "--max-concurrency",
            "200",
        ],
    );
    ok(&dev, dir, &token, &["deploy"]);
    assert!(get(&dev.http, "site.localhost").ends_with("big\n"));
}

/// Under `outpost dev`, the manifest's limits are the dev tenant's, so the
/// app gets what it asks for (and a deploy's limit check passes).
#[test]
fn outpost_dev_gives_the_app_the_limits_its_manifest_asks_for() {
    let project = project_with(&fixtures::hello("roomy\n"));
    let dir = project.path();
    manifest(
        dir,
        r#""site.localhost""#,
        "x",
        "[app.limits]\nmemory_mib = 300\ntimeout_ms = 2000\n",
    );
    let state = tempfile::tempdir().unwrap();
    let (dev, _lines) = crate::support::start_dev_in(dir, state.path(), &[]);
    assert!(get(&dev.http, "site.localhost").ends_with("roomy\n"));
    let who = dev.json(&dev.tenant_token(), &["whoami"]);
    assert_eq!(who["limits"]["memory_mib"], 300, "{who}");
    assert_eq!(who["limits"]["timeout_ms"], 2000, "{who}");
    assert_eq!(who["limits"]["fuel"], 1_000_000_000u64, "{who}");
    ok(&dev, dir, &dev.tenant_token(), &["deploy"]);
}
