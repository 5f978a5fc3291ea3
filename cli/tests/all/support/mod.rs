//! Harness shared by the CLI's end-to-end tests: `outpost dev` as a child
//! process on ports picked by the kernel, and the `outpost` binary run
//! against it.

#![allow(dead_code)] // each test binary uses part of the harness

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_outpost");

/// `GET /` with this `Host` over HTTP/1.0: the whole response, head and
/// body.
pub fn http_get(addr: &str, host: &str) -> String {
    use std::io::Read as _;
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(tcp, "GET / HTTP/1.0\r\nhost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    out
}

/// `outpost dev`, killed when the test ends.
pub struct Dev {
    pub child: Child,
    pub http: String,
    pub api: String,
    pub state: std::path::PathBuf,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `outpost dev`'s listeners, each on a port the kernel picks.
pub const FREE_PORTS: [&str; 8] = [
    "--api",
    "127.0.0.1:0",
    "--http",
    "127.0.0.1:0",
    "--https",
    "127.0.0.1:0",
    "--metrics",
    "127.0.0.1:0",
];

pub fn start_dev(state: &Path, extra: &[&str]) -> Dev {
    spawn_dev(None, state, extra).0
}

/// `outpost dev` run in `dir` (a project's directory), with its stderr
/// lines sent to the receiver as they come.
pub fn start_dev_in(
    dir: &Path,
    state: &Path,
    extra: &[&str],
) -> (Dev, std::sync::mpsc::Receiver<String>) {
    let (dev, stderr) = spawn_dev(Some(dir), state, extra);
    (dev, stderr.expect("captured"))
}

fn spawn_dev(
    dir: Option<&Path>,
    state: &Path,
    extra: &[&str],
) -> (Dev, Option<std::sync::mpsc::Receiver<String>>) {
    let mut command = Command::new(BIN);
    if let Some(dir) = dir {
        let home = std::env::var("HOME").unwrap_or_default();
        let path = format!(
            "{home}/.cargo/bin:/usr/local/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        command
            .current_dir(dir)
            .env("PATH", path)
            .stderr(Stdio::piped());
    } else {
        command.stderr(Stdio::inherit());
    }
    let mut child = command
        .args(["dev", "--state-dir"])
        .arg(state)
        .args(FREE_PORTS)
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // stderr, if captured, goes to a channel (and is echoed for the log).
    let stderr = child.stderr.take().map(|err| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[dev] {line}");
                let _ = tx.send(line);
            }
        });
        rx
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut http = None;
    let mut api = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("Listening on http://") {
            http = Some(addr.trim_end_matches('/').to_string());
        }
        if let Some(addr) = line.strip_prefix("Control plane on http://") {
            api = Some(addr.trim_end_matches('/').to_string());
        }
        if line.starts_with("  CLI:") {
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let dev = Dev {
        child,
        http: http.expect("dev printed its HTTP address"),
        api: api.expect("dev printed its control plane address"),
        state: state.to_path_buf(),
    };
    (dev, stderr)
}

impl Dev {
    /// The admin token `outpost dev` generated.
    pub fn admin_token(&self) -> String {
        let text = std::fs::read_to_string(self.state.join("dev.toml")).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        value["admin"].as_str().unwrap().to_string()
    }

    pub fn tenant_token(&self) -> String {
        let text = std::fs::read_to_string(self.state.join("dev.toml")).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        value["tenant"].as_str().unwrap().to_string()
    }

    /// Runs `outpost ARGS…` against this dev instance with `token`.
    pub fn outpost(&self, token: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("OUTPOST_URL", format!("http://{}", self.api))
            .env("OUTPOST_TOKEN", token)
            .env("OUTPOST_CONFIG_DIR", self.state.join("cli-config"))
            .output()
            .unwrap()
    }

    /// `outpost ARGS…` run in `dir` (where a project's `outpost.toml` is).
    pub fn outpost_in(&self, dir: &Path, token: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("OUTPOST_URL", format!("http://{}", self.api))
            .env("OUTPOST_TOKEN", token)
            .env("OUTPOST_CONFIG_DIR", self.state.join("cli-config"))
            .output()
            .unwrap()
    }

    /// `outpost ARGS` with `input` on its standard input.
    pub fn with_stdin(&self, token: &str, args: &[&str], input: &[u8]) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .env("OUTPOST_URL", format!("http://{}", self.api))
            .env("OUTPOST_TOKEN", token)
            .env("OUTPOST_CONFIG_DIR", self.state.join("cli-config"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn ok(&self, token: &str, args: &[&str]) -> String {
        let out = self.outpost(token, args);
        assert!(
            out.status.success(),
            "outpost {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, token: &str, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(token, &all)).unwrap()
    }

    pub fn json_lines(&self, token: &str, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.ok(token, &all)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn fails(&self, token: &str, args: &[&str]) -> String {
        let out = self.outpost(token, args);
        assert!(!out.status.success(), "outpost {args:?} succeeded");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one line of error, got {err:?}");
        err
    }
}
