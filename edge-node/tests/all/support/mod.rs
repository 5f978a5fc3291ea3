//! Shared harness for the edge node's integration tests: starts a real node
//! in-process on `127.0.0.1:0` and talks real HTTP to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outpost_edge_node::config::{ConnectionConfig, ServerConfig};
use outpost_edge_node::{Config, Node};
use outpost_runtime::router::Route;
use outpost_runtime::{AppSpec, Limits, PoolConfig};
use tokio::sync::oneshot;

pub use outpost_test_fixtures::wire;

/// A running node.
/// The test process itself, as a resource. Tests that measure it (its
/// RSS, its open files, a good client's latency while they attack) run
/// alone: they hold it exclusively through [`alone`]. Every other node
/// holds it shared while it lives, so none runs beside them — one test
/// binary runs all topics at once, and two cores are quickly shared out.
static PROCESS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Waits until no other node of this process is running, and keeps others
/// from starting until the guard is dropped.
pub async fn alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    PROCESS.write().await
}

pub struct TestNode {
    /// Shared hold on [`PROCESS`], unless the test holds it alone.
    _shared: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
    pub node: Arc<Node>,
    pub http: SocketAddr,
    /// The HTTPS listener (serves the node's certificates; see `tls.rs`).
    pub https: SocketAddr,
    pub metrics: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Every body byte that arrived, also when the body broke off.
    pub body: Bytes,
    /// Why the body broke off, if it did (a response cut at its cap).
    pub body_error: Option<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The node's own error code, if the node (not a guest) answered.
    pub fn outpost_error(&self) -> Option<&str> {
        self.headers
            .get("x-outpost-error")
            .map(|v| v.to_str().unwrap())
    }
}

/// An app spec for tenant `tenant` named `name`.
pub fn app(tenant: &str, name: &str, wasm: Vec<u8>, limits: Limits) -> AppSpec {
    AppSpec {
        tenant: tenant.into(),
        name: name.into(),
        wasm,
        module: None,
        limits,
        env: Vec::new(),
        allow_outbound: Vec::new(),
        disabled: false,
    }
}

/// Limits with a short timeout, so hostile tests end quickly.
pub fn quick_limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// A node configuration for tests: every listener on a free loopback
/// port, HTTPS on, a short shutdown grace.
pub fn local_config() -> Config {
    Config {
        http: "127.0.0.1:0".parse().unwrap(),
        https: Some("127.0.0.1:0".parse().unwrap()),
        metrics: "127.0.0.1:0".parse().unwrap(),
        server: ServerConfig {
            connections: ConnectionConfig {
                shutdown_grace: Duration::from_secs(1),
                ..ConnectionConfig::default()
            },
            ..ServerConfig::default()
        },
        ..Config::default()
    }
}

impl TestNode {
    pub async fn start(apps: Vec<(&[&str], AppSpec)>) -> TestNode {
        Self::start_with(PoolConfig::default(), apps).await
    }

    pub async fn start_with(pool: PoolConfig, apps: Vec<(&[&str], AppSpec)>) -> TestNode {
        let node = Self::launch(Config {
            pool,
            ..local_config()
        })
        .await;
        node.install(apps).await;
        node
    }

    pub async fn start_with_server(
        server: ServerConfig,
        apps: Vec<(&[&str], AppSpec)>,
    ) -> TestNode {
        let shared = PROCESS.read().await;
        Self::with_server(server, apps, Some(shared)).await
    }

    /// [`TestNode::start_with_server`] for a test that holds [`alone`].
    pub async fn start_alone(server: ServerConfig, apps: Vec<(&[&str], AppSpec)>) -> TestNode {
        Self::with_server(server, apps, None).await
    }

    async fn with_server(
        server: ServerConfig,
        apps: Vec<(&[&str], AppSpec)>,
        shared: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
    ) -> TestNode {
        let config = Config {
            server,
            ..local_config()
        };
        let node = Self::launch_holding(config, shared).await;
        node.install(apps).await;
        node
    }

    /// Starts a node the way the binary does ([`outpost_edge_node::start`]).
    pub async fn launch(config: Config) -> TestNode {
        let shared = PROCESS.read().await;
        Self::launch_holding(config, Some(shared)).await
    }

    async fn launch_holding(
        config: Config,
        shared: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
    ) -> TestNode {
        let (stop, stopped) = oneshot::channel::<()>();
        let running = outpost_edge_node::start(config, async {
            let _ = stopped.await;
        })
        .await
        .expect("the node starts");
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        TestNode {
            _shared: shared,
            node: running.node.clone(),
            http: running.http,
            https: running.https.expect("tests serve HTTPS"),
            metrics: running.metrics,
            stop: Some(stop),
            client,
        }
    }

    /// Serves exactly `apps` (each with its routes) from now on.
    pub async fn install(&self, apps: Vec<(&[&str], AppSpec)>) {
        let apps = apps
            .into_iter()
            .map(|(routes, spec)| {
                let routes: Vec<Route> = routes.iter().map(|r| r.parse().unwrap()).collect();
                (routes, spec)
            })
            .collect();
        self.node.apply(apps).await.expect("apps load");
    }

    pub async fn send(&self, method: &str, host: &str, path: &str, body: Vec<u8>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.http, path))
            .header("host", host)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.request(req).await
    }

    pub async fn request(&self, req: Request<Full<Bytes>>) -> Reply {
        let resp = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .expect("the node answers within 60 s")
            .expect("request");
        let (parts, mut body) = resp.into_parts();
        let mut bytes = Vec::new();
        let mut body_error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Some(data) = frame.data_ref() {
                        bytes.extend_from_slice(data);
                    }
                }
                Err(e) => {
                    body_error = Some(e.to_string());
                    break;
                }
            }
        }
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: bytes.into(),
            body_error,
        }
    }

    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.send("GET", host, path, Vec::new()).await
    }

    /// The node's `/metrics`, scraped over HTTP.
    pub async fn scrape(&self) -> String {
        let req = Request::get(format!("http://{}/metrics", self.metrics))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = self.request(req).await;
        assert_eq!(reply.status, 200);
        reply.text()
    }

    /// The value of one sample line in `/metrics` (`name{labels}`).
    ///
    /// A series that is not in the scrape is a failure, not a zero: a typo
    /// in a name must not pass for "stayed at zero".
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.scrape().await;
        metric_in(&text, series)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestNode {
    /// Starts a node serving `apps` with these connection settings.
    /// Client connections open on the plain HTTP listener, as `/metrics`
    /// reports them.
    pub async fn http_connections_open(&self) -> f64 {
        self.metric(r#"outpost_http_connections_open{listener="http"}"#)
            .await
    }

    /// Waits (bounded, 30 s) until the HTTP connections gauge is back at
    /// `baseline`, and panics with the last value otherwise.
    pub async fn wait_connections_back_to(&self, baseline: f64) {
        let started = std::time::Instant::now();
        loop {
            let open = self.http_connections_open().await;
            if open == baseline {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{open} connections still open, expected {baseline}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The value of `series` (name and labels, exactly as rendered) in a
/// Prometheus text scrape; panics if it is absent.
pub fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no series {series} in the scrape:\n{text}"))
}
