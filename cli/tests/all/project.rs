//! `outpost new` and `outpost build`: a project that builds from its
//! template, a build that refuses what the nodes cannot run (naming why),
//! and the template's WIT kept equal to what the nodes implement.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use outpost_test_fixtures as fixtures;

use crate::support::{BIN, start_dev};

/// `outpost ARGS` in `dir`, with cargo's and pip's install folders on
/// PATH (where wit-bindgen and wasm-tools land).
fn outpost(dir: &Path, args: &[&str]) -> Output {
    let home = std::env::var("HOME").unwrap_or_default();
    let path = format!(
        "{home}/.cargo/bin:/usr/local/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

use crate::support::http_get as get;

/// `outpost new demo --lang LANG` -> build -> deploy; an edit rebuilt and
/// deployed; a deploy with nothing new; a broken edit whose build fails
/// with the tool's own error (`broken` is the source, `error` what the
/// tool says).
fn new_build_deploy(lang: &str, source: &str, broken: &str, error: &str) {
    let root = tempfile::tempdir().unwrap();
    let out = outpost(root.path(), &["new", "demo", "--lang", lang]);
    assert!(out.status.success(), "{}", text(&out));
    let dir = root.path().join("demo");
    for file in [
        "outpost.toml",
        source,
        "build.sh",
        "README.md",
        "wit/app.wit",
        "wit/deps/http.wit",
    ] {
        assert!(dir.join(file).is_file(), "{lang}: no {file}");
    }
    let out = outpost(&dir, &["build"]);
    assert!(out.status.success(), "{lang}: {}", text(&out));
    assert!(text(&out).contains("Built "), "{}", text(&out));

    let state = tempfile::tempdir().unwrap();
    let dev = start_dev(state.path(), &[]);
    let token = dev.tenant_token();
    let deployed = dev.outpost_in(&dir, &token, &["deploy"]);
    assert!(deployed.status.success(), "{lang}: {}", text(&deployed));
    let served = get(&dev.http, "demo.localhost");
    assert!(served.ends_with("Hello from demo!\n"), "{lang}: {served}");

    // An edit, rebuilt: the next deploy uploads it; then nothing to do.
    let code = std::fs::read_to_string(dir.join(source)).unwrap();
    std::fs::write(
        dir.join(source),
        code.replace("Hello from demo!", "Edited!"),
    )
    .unwrap();
    let out = outpost(&dir, &["build"]);
    assert!(out.status.success(), "{lang}: {}", text(&out));
    let deployed = dev.outpost_in(&dir, &token, &["deploy"]);
    assert!(
        text(&deployed).contains("Deployed demo version 2"),
        "{lang}: {}",
        text(&deployed)
    );
    assert!(get(&dev.http, "demo.localhost").ends_with("Edited!\n"));
    let again = dev.outpost_in(&dir, &token, &["deploy"]);
    assert!(
        text(&again).contains("demo is up to date"),
        "{lang}: {}",
        text(&again)
    );

    // A broken edit: the build fails with the tool's error.
    std::fs::write(dir.join(source), broken).unwrap();
    let out = outpost(&dir, &["build"]);
    assert!(!out.status.success(), "{lang}: a broken source built");
    let said = text(&out);
    assert!(
        said.contains(error),
        "{lang}: the tool's error is shown: {said}"
    );
    assert!(said.contains("the build failed"), "{lang}: {said}");

    // `outpost dev --watch` in the project: it serves the project, an
    // edit is served within a bound, and a broken edit prints the tool's
    // error while the last good version keeps serving.
    let good = code.replace("Hello from demo!", "Edited!");
    std::fs::write(dir.join(source), &good).unwrap();
    let watch_state = tempfile::tempdir().unwrap();
    let (watching, lines) = crate::support::start_dev_in(&dir, watch_state.path(), &["--watch"]);
    assert!(get(&watching.http, "demo.localhost").ends_with("Edited!\n"));
    std::fs::write(dir.join(source), good.replace("Edited!", "Watched!")).unwrap();
    wait_for_body(
        &watching,
        "demo.localhost",
        "Watched!\n",
        Duration::from_secs(180),
    );
    std::fs::write(dir.join(source), broken).unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !seen.iter().any(|l: &String| l.contains("keeps serving")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        seen.push(
            lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{lang}: no 'keeps serving' within 180 s: {seen:#?}")),
        );
    }
    assert!(
        seen.iter().any(|l| l.contains(error)),
        "{lang}: the tool's error is printed: {seen:#?}"
    );
    assert!(get(&watching.http, "demo.localhost").ends_with("Watched!\n"));
}

#[test]
#[ignore = "needs the C toolchain (guests/build.sh c installs it)"]
fn a_new_c_project_builds_and_deploys_from_its_manifest() {
    new_build_deploy("c", "app.c", "this is not C;\n", "app.c:1:");
}

#[test]
#[ignore = "needs node and npm (guests/build.sh js installs them); downloads componentize-js into the project"]
fn a_new_js_project_builds_and_deploys_from_its_manifest() {
    new_build_deploy(
        "js",
        "app.js",
        "this is not javascript(\n",
        "failed to parse JS source",
    );
}

#[test]
#[ignore = "needs python3 with venv; installs componentize-py from PyPI into the project's .venv"]
fn a_new_python_project_builds_and_deploys_from_its_manifest() {
    new_build_deploy("python", "app.py", "this is not python(\n", "SyntaxError");
}

/// `outpost new my-app --lang rust`, in a temp dir: the project's dir.
fn new_rust_project(root: &Path) -> PathBuf {
    let out = outpost(root, &["new", "my-app", "--lang", "rust"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("rustup target add wasm32-wasip2"),
        "the next steps name the target: {}",
        text(&out)
    );
    root.join("my-app")
}

#[test]
fn a_new_rust_project_is_a_crate_with_a_valid_manifest_and_names_its_target() {
    let root = tempfile::tempdir().unwrap();
    let dir = new_rust_project(root.path());
    for file in [
        "outpost.toml",
        "Cargo.toml",
        "src/lib.rs",
        "README.md",
        ".gitignore",
    ] {
        assert!(dir.join(file).is_file(), "no {file}");
    }
    assert!(!dir.join("wit").exists(), "the wasi crate carries the WIT");

    // The manifest loads as `outpost build`, `dev` and `deploy` load it,
    // and points at what cargo builds: the crate's name has `_` for `-`.
    let loaded = outpost_cli::manifest::load(Some(&dir.join("outpost.toml"))).unwrap();
    assert_eq!(loaded.manifest.app.name, "my-app");
    assert_eq!(loaded.manifest.app.routes, ["my-app.localhost"]);
    assert_eq!(
        loaded.manifest.app.component,
        "target/wasm32-wasip2/release/my_app.wasm"
    );
    let build = loaded.manifest.build.expect("a [build] section");
    assert!(
        build
            .command
            .starts_with("cargo build --release --target wasm32-wasip2"),
        "{}",
        build.command
    );
    assert_eq!(build.watch, ["src", "Cargo.toml"]);

    let cargo: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
    assert_eq!(cargo["package"]["name"].as_str(), Some("my-app"));
    assert_eq!(cargo["package"]["edition"].as_str(), Some("2024"));
    assert_eq!(
        cargo["lib"]["crate-type"],
        toml::Value::Array(vec!["cdylib".into(), "rlib".into()])
    );
    assert!(
        cargo["target"]["cfg(target_arch = \"wasm32\")"]["dependencies"]["wasi"].is_str(),
        "wasi is a wasm32-only dependency: {cargo:#?}"
    );
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    assert!(lib.contains("Hello from my-app!"), "{lib}");
    assert!(!lib.contains("{{"), "a placeholder is left: {lib}");

    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for needed in [
        "rustup target add wasm32-wasip2",
        "cargo test",
        "outpost build",
        "outpost dev --watch",
        "outpost deploy",
    ] {
        assert!(readme.contains(needed), "README lacks {needed:?}: {readme}");
    }
    assert!(
        std::fs::read_to_string(dir.join(".gitignore"))
            .unwrap()
            .lines()
            .any(|l| l == "target/")
    );

    // A package name cannot start with a digit, so neither can the app's.
    let out = outpost(root.path(), &["new", "9lives", "--lang", "rust"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cannot start with a digit"),
        "{}",
        text(&out)
    );
    assert!(!root.path().join("9lives").exists());
}

#[test]
#[ignore = "resolves the wasi crate from crates.io in the generated project"]
fn a_new_rust_project_passes_its_own_tests_and_its_build_names_the_missing_target() {
    let root = tempfile::tempdir().unwrap();
    let dir = new_rust_project(root.path());

    // The app's logic is plain Rust: its tests run natively, where the
    // wasm glue is not compiled at all.
    let tested = Command::new(env!("CARGO"))
        .arg("test")
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .unwrap();
    assert!(tested.status.success(), "cargo test: {}", text(&tested));
    assert!(
        text(&tested).contains("every_request_gets_the_greeting_as_plain_text ... ok"),
        "{}",
        text(&tested)
    );

    // `outpost build` with the wasm32-wasip2 target builds the component;
    // without it (as on this repository's machines) the failure says how
    // to get the target.
    let out = outpost(&dir, &["build"]);
    let said = text(&out);
    assert!(
        said.contains("Building my-app: cargo build --release --target wasm32-wasip2"),
        "{said}"
    );
    if out.status.success() {
        assert!(
            said.contains("Built target/wasm32-wasip2/release/my_app.wasm"),
            "{said}"
        );
    } else {
        assert!(
            said.contains("target may not be installed")
                && said.contains("rustup target add wasm32-wasip2"),
            "the failure names the missing target and how to add it: {said}"
        );
        assert!(said.contains("the build failed"), "{said}");
    }
}

/// A project whose build copies `wasm` into place.
fn project_copying(wasm: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("given.wasm"), wasm).unwrap();
    std::fs::write(
        dir.path().join("outpost.toml"),
        "manifest_version = 1\n[app]\nname = \"x\"\nroutes = [\"x.localhost\"]\ncomponent = \"out/app.wasm\"\n[build]\ncommand = \"mkdir -p out && cp given.wasm out/app.wasm\"\n",
    )
    .unwrap();
    dir
}

#[test]
fn build_refuses_what_the_nodes_cannot_run_and_says_why() {
    for (wasm, why) in [
        (fixtures::core_module(), "component"),
        (fixtures::unknown_import(), "import"),
        (fixtures::no_handler(), "wasi:http/proxy"),
    ] {
        let dir = project_copying(&wasm);
        let out = outpost(dir.path(), &["build"]);
        assert!(
            !out.status.success(),
            "accepted a component that cannot run ({why})"
        );
        let said = text(&out);
        assert!(
            said.contains("out/app.wasm") && said.contains(why),
            "{why}: {said}"
        );
    }
    let dir = project_copying(&fixtures::hello("ok\n"));
    let out = outpost(dir.path(), &["build"]);
    assert!(out.status.success(), "{}", text(&out));

    // A build command that fails is the build's failure, with its status.
    std::fs::write(
        dir.path().join("outpost.toml"),
        "manifest_version = 1\n[app]\nname = \"x\"\nroutes = [\"x.localhost\"]\ncomponent = \"out/app.wasm\"\n[build]\ncommand = \"echo compiler says no >&2; exit 3\"\n",
    )
    .unwrap();
    let out = outpost(dir.path(), &["build"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("compiler says no"), "{said}");
    assert!(said.contains("the build failed (exit status: 3)"), "{said}");
}

#[test]
fn new_refuses_a_bad_name_or_a_directory_with_files() {
    let root = tempfile::tempdir().unwrap();
    let out = outpost(root.path(), &["new", "Bad_Name", "--lang", "c"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("\"Bad_Name\""), "{}", text(&out));
    std::fs::create_dir(root.path().join("taken")).unwrap();
    std::fs::write(root.path().join("taken/keep.txt"), "mine").unwrap();
    let out = outpost(root.path(), &["new", "taken", "--lang", "c"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(root.path().join("taken/keep.txt")).unwrap(),
        "mine"
    );
    assert!(!root.path().join("taken/outpost.toml").exists());
}

/// wasmtime-wasi-http's `wit/deps`, as cargo resolved it.
fn crate_wit() -> PathBuf {
    let meta = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        meta.status.success(),
        "{}",
        String::from_utf8_lossy(&meta.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&meta.stdout).unwrap();
    let manifest = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wasmtime-wasi-http")
        .expect("wasmtime-wasi-http is a dependency")["manifest_path"]
        .as_str()
        .unwrap()
        .to_string();
    Path::new(&manifest).parent().unwrap().join("wit/deps")
}

#[test]
fn the_templates_wit_is_what_the_nodes_implement() {
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/wit/deps");
    let theirs = crate_wit();
    let names = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&ours),
        names(&theirs),
        "copy {} again",
        theirs.display()
    );
    for name in names(&theirs) {
        assert_eq!(
            std::fs::read(ours.join(&name)).unwrap(),
            std::fs::read(theirs.join(&name)).unwrap(),
            "templates/wit/deps/{name} differs from {}: copy it again",
            theirs.display()
        );
    }
}

/// A project whose "build" copies `src/app.wasm` into place: the watch
/// loop exercised without any toolchain.
fn copying_project(first: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/app.wasm"), first).unwrap();
    std::fs::write(
        dir.path().join("outpost.toml"),
        "manifest_version = 1\n[app]\nname = \"live\"\nroutes = [\"live.localhost\", \"live.example.com\"]\ncomponent = \"build/app.wasm\"\nsecrets = [\"TOKEN\"]\n[build]\ncommand = \"test -s src/app.wasm && mkdir -p build && cp src/app.wasm build/app.wasm\"\nwatch = [\"src\"]\n",
    )
    .unwrap();
    dir
}

/// Polls `host` until its body ends with `want` (bounded).
fn wait_for_body(dev: &crate::support::Dev, host: &str, want: &str, within: Duration) {
    let started = std::time::Instant::now();
    loop {
        let got = get(&dev.http, host);
        if got.ends_with(want) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{host} still answers {got:?} after {within:?}, want …{want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) for a stderr line containing `text`.
fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<String>,
    text: &str,
    within: Duration,
) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(text) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line with {text:?} within {within:?}"),
        }
    }
}

#[test]
fn dev_watch_serves_the_project_reloads_edits_and_keeps_the_last_good_version() {
    let project = copying_project(&fixtures::hello("v1\n"));
    let dir = project.path();
    // A secret for outpost dev only, from .dev.vars.
    std::fs::write(dir.join(".dev.vars"), "TOKEN=dev-only\n").unwrap();
    let state = tempfile::tempdir().unwrap();
    let (dev, lines) = crate::support::start_dev_in(dir, state.path(), &["--watch"]);
    // Served under *.localhost only; the real domain's route is a fleet's.
    assert!(get(&dev.http, "live.localhost").ends_with("v1\n"));
    assert!(get(&dev.http, "live.example.com").starts_with("HTTP/1.0 404"));
    let token = dev.tenant_token();
    let shown = dev.json(&token, &["apps", "show", "live"]);
    assert_eq!(shown["routes"], serde_json::json!(["live.localhost"]));
    assert_eq!(shown["env_keys"], serde_json::json!(["TOKEN"]));
    assert!(
        dev.json(&token, &["apps", "list"])
            .as_array()
            .unwrap()
            .len()
            == 1,
        "no example app"
    );

    // An edit: the next requests answer it, within a bound.
    std::fs::write(dir.join("src/app.wasm"), fixtures::hello("v2\n")).unwrap();
    wait_for_body(&dev, "live.localhost", "v2\n", Duration::from_secs(30));

    // A broken edit (not a component): the check's error is printed and
    // v2 keeps serving; so does a build command that fails.
    std::fs::write(dir.join("src/app.wasm"), b"not wasm at all").unwrap();
    wait_for_line(&lines, "keeps serving", Duration::from_secs(30));
    assert!(get(&dev.http, "live.localhost").ends_with("v2\n"));
    std::fs::write(dir.join("src/app.wasm"), b"").unwrap();
    let line = wait_for_line(&lines, "the build failed", Duration::from_secs(30));
    assert!(line.contains("exit status: 1"), "{line}");
    assert!(get(&dev.http, "live.localhost").ends_with("v2\n"));
    assert_eq!(
        dev.json(&token, &["deployments", "live"])
            .as_array()
            .unwrap()
            .len(),
        2,
        "nothing broken was uploaded"
    );

    // Fixed: served again. A change outside `watch` builds nothing.
    std::fs::write(dir.join("src/app.wasm"), fixtures::hello("v3\n")).unwrap();
    wait_for_body(&dev, "live.localhost", "v3\n", Duration::from_secs(30));
    std::fs::write(dir.join("notes.txt"), "not watched").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        lines.try_iter().all(|l| !l.contains("change seen")),
        "a file outside build.watch started a build"
    );
}

#[test]
fn dev_refuses_watch_without_a_project_and_two_apps_of_one_name() {
    let empty = tempfile::tempdir().unwrap();
    let out = outpost(empty.path(), &["dev", "--watch", "--state-dir", "s"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--watch rebuilds a project"),
        "{}",
        text(&out)
    );
    assert!(
        !empty.path().join("s").exists(),
        "refused before any state was made"
    );

    let a = copying_project(&fixtures::hello("a\n"));
    let b = copying_project(&fixtures::hello("b\n"));
    let (ma, mb) = (a.path().join("outpost.toml"), b.path().join("outpost.toml"));
    let out = outpost(
        empty.path(),
        &[
            "dev",
            "--state-dir",
            "s",
            "--manifest",
            ma.to_str().unwrap(),
            "--manifest",
            mb.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("both name app \"live\""),
        "{}",
        text(&out)
    );
}

#[test]
fn dev_refuses_a_dev_vars_name_the_manifest_does_not_declare_secret() {
    let project = copying_project(&fixtures::hello("a\n"));
    std::fs::write(
        project.path().join(".dev.vars"),
        "TOKEN=fine\nGREETING=undeclared-value\n",
    )
    .unwrap();
    let mut args = vec!["dev", "--state-dir", "s"];
    args.extend(crate::support::FREE_PORTS);
    let out = outpost(project.path(), &args);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(".dev.vars line 2: \"GREETING\" is not in app.secrets"),
        "{said}"
    );
    assert!(
        !said.contains("undeclared-value"),
        "the value was printed: {said}"
    );
}
