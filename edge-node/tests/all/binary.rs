//! The `edge-node` binary as scripts use it: flags, the readiness lines,
//! and failing fast (before binding anything) on bad input.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use outpost_test_fixtures as fixtures;

const BIN: &str = env!("CARGO_BIN_EXE_edge-node");

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

/// Kills the child when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns the binary with `args`; returns it with the HTTP and metrics
/// addresses read from its two readiness lines.
fn spawn(args: &[&str]) -> (Running, String, String) {
    let child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let listening = lines.next().unwrap().unwrap();
    let metrics = lines.next().unwrap().unwrap();
    let http = listening
        .strip_prefix("Listening on http://")
        .and_then(|s| s.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected first line {listening:?}"));
    let metrics = metrics
        .strip_prefix("Metrics on http://")
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected second line {metrics:?}"));
    (child, http.to_string(), metrics.to_string())
}

fn http_get(addr: &str, host: &str, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // HTTP/1.0 so the body is close-delimited, not chunked.
    write!(tcp, "GET {path} HTTP/1.0\r\nhost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serves_apps_from_flags_and_prints_where() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.wasm", &fixtures::hello("from a\n"));
    let b = write(dir.path(), "b.wasm", &fixtures::hello("from b v2\n"));
    let (_child, http, metrics) = spawn(&[
        "--http",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--app",
        &format!("a.example.com={a}"),
        "--app",
        &format!("api.example.com/v2={b}"),
        "--fuel",
        "100000000",
        "--timeout-ms",
        "5000",
    ]);
    let (http, metrics) = (http.as_str(), metrics.as_str());
    assert!(!http.ends_with(":0"), "the real port is printed");

    let a = http_get(http, "a.example.com", "/");
    assert!(a.starts_with("HTTP/1.0 200"), "{a}");
    assert!(a.ends_with("from a\n"), "{a}");
    let b = http_get(http, "api.example.com", "/v2/x");
    assert!(b.ends_with("from b v2\n"), "{b}");
    let none = http_get(http, "api.example.com", "/v1");
    assert!(none.starts_with("HTTP/1.0 404"), "{none}");
    let m = http_get(metrics, "localhost", "/metrics");
    let served =
        r#"outpost_http_requests_total{app="a.example.com",status="2xx",tenant="default"} 1"#;
    assert!(m.lines().any(|l| l.trim_end() == served), "{m}");
}

/// Runs the binary expecting failure; returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success(), "exited 0 with {args:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("Listening on"),
        "it bound before failing: {stdout}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_flags_fail_fast_naming_every_problem() {
    let err = fails(&[
        "--http",
        "127.0.0.1:0",
        "--app",
        "bad route!=/nope.wasm",
        "--memory-mib",
        "0",
    ]);
    assert!(err.contains("invalid route \"bad route!\""), "{err}");
    assert!(err.contains("memory must be at least 1 MiB"), "{err}");
}

#[test]
fn bad_wasm_fails_before_any_port_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.wasm", b"\0asm but not really");
    // Hold the port: had the node bound before compiling, the error would be
    // "address in use" rather than about the component.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().to_string();
    let err = fails(&[
        "--http",
        &port,
        "--metrics",
        "127.0.0.1:0",
        "--app",
        &format!("x.example.com={bad}"),
    ]);
    assert!(err.contains("not a valid worker"), "{err}");
    assert!(err.contains("x.example.com"), "{err}");
}

#[test]
fn a_config_file_works_like_flags() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.wasm", &fixtures::hello("from the file\n"));
    let cfg = write(
        dir.path(),
        "edge.toml",
        br#"
http = "127.0.0.1:0"
metrics = "127.0.0.1:0"
[limits]
timeout_ms = 5000
[[app]]
name = "web"
tenant = "acme"
routes = ["file.example.com"]
wasm = "a.wasm"
"#,
    );
    let (_child, http, _) = spawn(&["--config", &cfg]);
    let http = http.as_str();
    let r = http_get(http, "file.example.com", "/");
    assert!(r.ends_with("from the file\n"), "{r}");
}

/// `--https` with the operator's default certificate: a third readiness
/// line, and real TLS clients (h2 and HTTP/1.1) get that certificate.
#[test]
fn https_with_a_default_certificate_from_files() {
    use outpost_test_fixtures::tls::{Client, TestCa, https_get};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let issued = ca.issue(&["a.example.com"]);
    let cert = write(dir.path(), "cert.pem", issued.chain_pem.as_bytes());
    let key = write(dir.path(), "key.pem", issued.key_pem.as_bytes());
    let wasm = write(dir.path(), "a.wasm", &fixtures::hello("over tls\n"));
    let child = Command::new(BIN)
        .args([
            "--http",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--app",
            &format!("a.example.com={wasm}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let lines: Vec<String> = BufReader::new(child.0.stdout.take().unwrap())
        .lines()
        .take(3)
        .map(Result::unwrap)
        .collect();
    assert!(lines[0].starts_with("Listening on http://"), "{lines:?}");
    assert!(lines[2].starts_with("Metrics on http://"), "{lines:?}");
    let https = lines[1]
        .strip_prefix("Listening on https://")
        .and_then(|s| s.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected line {:?}", lines[1]))
        .parse()
        .unwrap();
    let roots = [ca.root()];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for alpn in ["h2", "http/1.1"] {
        let client = Client {
            roots: &roots,
            alpn: &[alpn],
            tls12_only: false,
        };
        let r = runtime
            .block_on(https_get(client, https, "a.example.com", "a.example.com"))
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "over tls\n"), "{alpn}");
        assert!(r.peer_leaf == issued.leaf_der);
    }
}

#[test]
fn bad_tls_settings_fail_fast() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&["--http", "127.0.0.1:0", "--redirect-http"]);
    assert!(err.contains("--redirect-http needs --https"), "{err}");
    let err = fails(&[
        "--https",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert!(
        err.contains("/nonexistent/cert.pem does not exist"),
        "{err}"
    );
    // A key that is not the certificate's.
    let ca = outpost_test_fixtures::tls::TestCa::new();
    let cert = write(
        dir.path(),
        "cert.pem",
        ca.issue(&["a.example.com"]).chain_pem.as_bytes(),
    );
    let key = write(
        dir.path(),
        "key.pem",
        ca.issue(&["a.example.com"]).key_pem.as_bytes(),
    );
    let err = fails(&[
        "--http",
        "127.0.0.1:0",
        "--https",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    assert!(err.contains("does not match"), "{err}");
}

/// The child's peak resident memory so far, in bytes (`VmHWM`).
fn peak_rss(child: &Running) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kib * 1024
}

#[test]
fn node_memory_stays_within_the_per_instance_budget_times_concurrency() {
    const MIB: u64 = 1 << 20;
    const LIMIT_MIB: u64 = 64;
    const CONCURRENT: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    // Eight memories that each grow by 40 MiB and touch every page: 320
    // MiB resident per request if each memory were only capped alone.
    let wasm = write(dir.path(), "m.wasm", &fixtures::many_memories(8, 640));
    let (child, http, _) = spawn(&[
        "--http",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--app",
        &format!("m.example.com={wasm}"),
        "--memory-mib",
        &LIMIT_MIB.to_string(),
    ]);
    let before = peak_rss(&child);
    let replies: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CONCURRENT)
            .map(|_| s.spawn(|| http_get(&http, "m.example.com", "/")))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let grown = peak_rss(&child).saturating_sub(before);
    eprintln!("peak RSS grew by {} MiB", grown / MIB);
    // Each instance holds at most its 64 MiB (and the pool's bookkeeping);
    // twice that per request leaves room for the host's own buffers.
    assert!(
        grown < 2 * LIMIT_MIB * MIB * CONCURRENT,
        "peak RSS grew by {} MiB for {CONCURRENT} requests under a {LIMIT_MIB} MiB limit",
        grown / MIB
    );
    for r in &replies {
        assert!(r.starts_with("HTTP/1.0 503"), "{r}");
        assert!(
            r.to_ascii_lowercase().contains("x-outpost-error: memory"),
            "{r}"
        );
    }
}
