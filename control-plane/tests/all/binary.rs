//! The `control-plane` binary: readiness line, state kept across restarts,
//! and refusing bad configuration before binding.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_control-plane");
const ADMIN: &str = "admin-token-for-tests";
const NODE: &str = "node-token-for-tests";

struct Running(Child, String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &std::path::Path) -> Running {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("OUTPOST_ADMIN_TOKEN", ADMIN)
        .env("OUTPOST_NODE_TOKEN", NODE)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("Listening on http://")
        .and_then(|s| s.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    Running(child, addr)
}

/// A bare HTTP/1.0 exchange; returns (status line, body).
fn call(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (String, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "{method} {path} HTTP/1.0\r\nhost: cp\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[test]
fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cp = start(dir.path());
        let (status, body) = call(&cp.1, "POST", "/v1/tenants", ADMIN, r#"{"name":"acme"}"#);
        assert!(status.contains(" 201 "), "{status} {body}");
        assert!(body.contains("\"token\":\"opt_"), "{body}");
    }
    let cp = start(dir.path());
    let (status, body) = call(&cp.1, "GET", "/v1/tenants", ADMIN, "");
    assert!(status.contains(" 200 "), "{status}");
    assert!(body.contains("\"name\":\"acme\""), "{body}");
    let (status, _) = call(&cp.1, "GET", "/v1/tenants", "wrong-token", "");
    assert!(status.contains(" 401 "), "{status}");
}

#[test]
fn missing_tokens_fail_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("OUTPOST_ADMIN_TOKEN")
        .env_remove("OUTPOST_NODE_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Listening"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin token is required"), "{err}");
    // The shared node token is optional: nodes may have their own identities.
    assert!(!err.contains("node token"), "{err}");
}

/// Token guessing: after 20 unknown tokens from one address, every further
/// unknown token from it is 429 with Retry-After; the admin, holding a
/// valid token from the same address, is still let in.
#[test]
fn guessing_tokens_gets_an_address_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    assert!(
        call(&cp.1, "GET", "/v1/tenants", ADMIN, "")
            .0
            .contains("200")
    );
    for i in 0..20 {
        let (status, body) = call(
            &cp.1,
            "GET",
            "/v1/tenants",
            &format!("guess-{i:02}-abcdefghij"),
            "",
        );
        assert!(status.contains("401"), "{status} {body}");
    }
    let mut tcp = TcpStream::connect(&cp.1).unwrap();
    write!(
        tcp,
        "GET /v1/tenants HTTP/1.0\r\nauthorization: Bearer guess-20-abcdefghij\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.0 429") || out.starts_with("HTTP/1.1 429"),
        "{out}"
    );
    let retry: u64 = out
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_string)
        })
        .expect("a Retry-After header")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(out.contains("too_many_attempts"), "{out}");
    let (status, body) = call(&cp.1, "GET", "/v1/tenants", ADMIN, "");
    assert!(
        status.contains("200"),
        "a valid token was locked out: {status} {body}"
    );
    // Unauthenticated endpoints still answer.
    assert!(call(&cp.1, "GET", "/healthz", "", "").0.contains("200"));
}
