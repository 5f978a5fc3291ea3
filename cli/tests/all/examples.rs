//! The example workers in C, JavaScript and Python, deployed through the
//! `outpost` CLI to `outpost dev` and checked against their shared
//! contract (examples/README.md): text, env, JSON echo, 404, their log
//! lines through `outpost logs`, then a rollback. Needs the JS and Python builds (`guests/build.sh all`), so it
//! is ignored by default; CI runs it with `--ignored` after building them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One HTTP/1.0 exchange; (status, content-type, body).
fn request(addr: &str, method: &str, host: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        tcp,
        "{method} {path} HTTP/1.0\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (status, ctype, body.to_string())
}

#[test]
#[ignore = "needs guests/build.sh all (JS and Python toolchains)"]
fn c_js_and_python_examples_deploy_through_the_cli() {
    let state = tempfile::tempdir().unwrap();
    let dev = crate::support::start_dev(state.path(), &[]);
    let http = dev.http.clone();
    let token = dev.tenant_token();
    let outpost = |args: &[&str]| dev.ok(&token, args);

    for (lang, greeting, file) in [
        ("c", "C", repo().join("examples/c/example.wasm")),
        (
            "js",
            "JavaScript",
            repo().join("examples/out/js-example.wasm"),
        ),
        (
            "python",
            "Python",
            repo().join("examples/out/python-example.wasm"),
        ),
    ] {
        assert!(
            file.is_file(),
            "{} is missing: run guests/build.sh all",
            file.display()
        );
        let host = format!("{lang}.localhost");
        let app = format!("example-{lang}");
        outpost(&["apps", "create", &app, "--route", &host]);
        outpost(&["env", "set", &app, &format!("GREETING=hi from {lang}")]);
        let deployed = outpost(&["deploy", &app, file.to_str().unwrap()]);
        println!("{deployed}");

        let (status, ctype, body) = request(&http, "GET", &host, "/", "");
        assert_eq!(
            (status, body.as_str()),
            (200, format!("Hello from {greeting}!\n").as_str()),
            "{lang}"
        );
        assert!(ctype.starts_with("text/plain"), "{lang}: {ctype}");
        let (status, ctype, body) = request(&http, "GET", &host, "/env", "");
        assert_eq!(status, 200, "{lang}");
        assert!(ctype.starts_with("application/json"), "{lang}: {ctype}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"GREETING": format!("hi from {lang}")})
        );
        let sent = json!({"a": [1, 2, "x\"y"], "b": null});
        let (status, _, body) = request(&http, "POST", &host, "/echo", &sent.to_string());
        assert_eq!(status, 200, "{lang}: {body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"method": "POST", "path": "/echo", "body": sent}),
            "{lang}"
        );
        assert_eq!(request(&http, "GET", &host, "/nope", "").0, 404, "{lang}");

        // Each request wrote one stderr line; `outpost logs` brings them back.
        let want = [
            format!("{greeting} handled GET /"),
            format!("{greeting} handled GET /env"),
            format!("{greeting} handled POST /echo"),
            format!("{greeting} handled GET /nope"),
        ];
        let started = std::time::Instant::now();
        loop {
            let lines = dev.json_lines(&token, &["logs", &app]);
            let texts: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
            if texts == want {
                assert!(
                    lines
                        .iter()
                        .all(|l| l["stream"] == "stderr" && l["node"] == "dev")
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{lang}: outpost logs gave {texts:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        // A second version, then back to the first.
        outpost(&[
            "deploy",
            &app,
            repo().join("guests/c/hello/hello.wasm").to_str().unwrap(),
        ]);
        assert_eq!(request(&http, "GET", &host, "/", "").2, "Hello from C!\n");
        outpost(&["rollback", &app, "1"]);
        assert_eq!(
            request(&http, "GET", &host, "/", "").2,
            format!("Hello from {greeting}!\n"),
            "{lang}"
        );
    }
}
