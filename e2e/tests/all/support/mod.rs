//! Harness for end-to-end tests: the control plane's own test harness
//! (reused as it is), and edge nodes in sync mode started through
//! [`outpost_edge_node::start`], the path the binary takes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use outpost_edge_node::Running;
use outpost_edge_node::config::{Config, SyncSettings};
use outpost_edge_node::metrics::Metrics;
use outpost_edge_node::sync::DEFAULT_KEEP_UNUSED_BYTES;

// The control plane's own test harness, shared; these tests use only part
// of it.
#[allow(dead_code)]
#[path = "../../../../control-plane/tests/all/support/mod.rs"]
mod control_plane;

pub use control_plane::*;

pub mod procs;

/// An edge node following `cp`, caching in `cache_dir`.
pub struct EdgeNode {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub metrics: Metrics,
    /// The revision restored from the cache before the listeners were
    /// bound (0: none).
    pub restored_revision: u64,
    running: Running,
}

impl EdgeNode {
    pub async fn start(cp: SocketAddr, cache_dir: &Path, id: &str) -> EdgeNode {
        Self::start_keeping(cp, cache_dir, id, DEFAULT_KEEP_UNUSED_BYTES).await
    }

    /// [`EdgeNode::start`] keeping `keep_unused` bytes of unused modules
    /// (and of compiled code) in its cache.
    pub async fn start_keeping(
        cp: SocketAddr,
        cache_dir: &Path,
        id: &str,
        keep_unused: u64,
    ) -> EdgeNode {
        Self::start_with(cp, cache_dir, id, |config| {
            config.sync.as_mut().unwrap().keep_unused_bytes = keep_unused;
        })
        .await
    }

    /// [`EdgeNode::start`] with `adjust` applied to its configuration.
    pub async fn start_with(
        cp: SocketAddr,
        cache_dir: &Path,
        id: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> EdgeNode {
        let mut config = Config {
            http: "127.0.0.1:0".parse().unwrap(),
            https: Some("127.0.0.1:0".parse().unwrap()),
            metrics: "127.0.0.1:0".parse().unwrap(),
            sync: Some(SyncSettings {
                url: format!("http://{cp}"),
                ca_file: None,
                registry: None,
                token: NODE.into(),
                cache_dir: cache_dir.to_path_buf(),
                cache_key: None,
                keep_unused_bytes: DEFAULT_KEEP_UNUSED_BYTES,
                node_id: id.into(),
            }),
            ..Config::default()
        };
        adjust(&mut config);
        let running = outpost_edge_node::start(config, std::future::pending())
            .await
            .unwrap();
        EdgeNode {
            http: running.http,
            https: running.https.unwrap(),
            metrics: running.node.metrics().clone(),
            restored_revision: running.restored_revision,
            running,
        }
    }

    pub async fn get(&self, host: &str) -> (u16, String) {
        let (status, _, body) = self.request(host, "/").await;
        (status, body)
    }

    /// The status of `GET /` on `host` and the node's `x-outpost-error`
    /// (empty if none).
    pub async fn get_with_error(&self, host: &str) -> (u16, String) {
        self.get_path_with_error(host, "/").await
    }

    /// [`EdgeNode::get_with_error`] for `path`.
    pub async fn get_path_with_error(&self, host: &str, path: &str) -> (u16, String) {
        let (status, code, _) = self.request(host, path).await;
        (status, code)
    }

    /// `GET path` on `host`: the status, the node's `x-outpost-error`
    /// (empty if none) and the body.
    async fn request(&self, host: &str, path: &str) -> (u16, String, String) {
        let req = Request::get(format!("http://{}{path}", self.http))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        let status = resp.status().as_u16();
        let code = resp
            .headers()
            .get("x-outpost-error")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, code, String::from_utf8_lossy(&body).into_owned())
    }

    /// Waits (bounded) until `host` answers `want`; returns how long it took.
    pub async fn until_serves(&self, host: &str, want: &str) -> Duration {
        let started = Instant::now();
        loop {
            let got = self.get(host).await;
            if got == (200, want.to_string()) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{host} still answers {got:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// This node's metrics, rendered.
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    /// Modules this node fetched from `source` with `result`
    /// (`outpost_sync_module_fetches_total`; 0 before the first).
    pub fn module_fetches(&self, source: &str, result: &str) -> f64 {
        let series =
            format!("outpost_sync_module_fetches_total{{result=\"{result}\",source=\"{source}\"}}");
        self.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The value of `series` (name and labels, as rendered) in this node's
    /// metrics; panics if it is absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    }

    pub fn stop(self) {
        self.running.abort();
    }
}
