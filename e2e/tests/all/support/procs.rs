//! Workspace binaries as child processes, for the tests that run the
//! fleet as an operator does.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outpost_test_fixtures::wire::good_get;

/// A workspace binary, built by `cargo test --workspace` beside `deps/`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds every binary",
        path.display()
    );
    path
}

/// A child process, killed when the test ends; its stderr in a file.
pub struct Proc {
    child: Child,
    stderr: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `bin` with a clean environment (no `OUTPOST_*` from the
    /// machine) and waits for its banner, up to the line starting with
    /// `last`; returns it with the banner's lines.
    pub fn start(
        bin: &str,
        args: &[&str],
        dir: &Path,
        name: &str,
        last: &str,
    ) -> (Proc, Vec<String>) {
        let stderr = dir.join(format!("{name}.err"));
        let mut child = Command::new(binary(bin))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let proc = Proc { child, stderr };
        let mut lines = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    let done = line.starts_with(last);
                    lines.push(line);
                    if done {
                        return (proc, lines);
                    }
                }
                Err(_) => panic!("{name} printed no {last:?} line; stderr:\n{}", proc.log()),
            }
        }
    }

    /// Kills it at once (`SIGKILL`: a crash, no clean shutdown) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// The address after `prefix` in one of `lines`.
pub fn address(lines: &[String], prefix: &str) -> std::net::SocketAddr {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {lines:?}"))
        .trim_end_matches('/')
        .trim_end_matches("/metrics")
        .parse()
        .unwrap()
}

/// Polls `node` until `host` answers `want`.
pub async fn until_serves(node: std::net::SocketAddr, host: &str, want: &str) {
    let started = Instant::now();
    loop {
        if let Ok((200, body)) = good_get(node, host).await
            && body == want
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{node} never served {want:?} for {host}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
