//! Shared harness for the edge node's integration tests: starts a real node
//! in-process on `127.0.0.1:0` and talks real HTTP to it.

#![allow(dead_code)] // each test binary uses part of the harness

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outpost_edge_node::config::ServerConfig;
use outpost_edge_node::metrics::Metrics;
use outpost_edge_node::router::Route;
use outpost_edge_node::runtime::{AppSpec, Limits, PoolConfig};
use outpost_edge_node::server::{self, Listeners};
use outpost_edge_node::{Config, Node};
use tokio::sync::oneshot;

pub mod wire;

/// A running node.
pub struct TestNode {
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
    pub body: Bytes,
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
        limits,
        env: Vec::new(),
        allow_outbound: Vec::new(),
    }
}

/// Limits with a short timeout, so hostile tests end quickly.
pub fn quick_limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

impl TestNode {
    /// Starts a node serving `apps`, each on its routes.
    pub async fn start(apps: Vec<(&[&str], AppSpec)>) -> TestNode {
        Self::start_with(PoolConfig::default(), apps).await
    }

    pub async fn start_with(pool: PoolConfig, apps: Vec<(&[&str], AppSpec)>) -> TestNode {
        let node = Node::new(&pool, Metrics::new()).expect("node");
        let apps = apps
            .into_iter()
            .map(|(routes, spec)| {
                let routes: Vec<Route> = routes.iter().map(|r| r.parse().unwrap()).collect();
                (routes, spec)
            })
            .collect();
        node.apply(apps).await.expect("apps load");
        Self::serve(node).await
    }

    /// Serves an already configured node.
    pub async fn serve(node: Arc<Node>) -> TestNode {
        Self::serve_with(
            node,
            ServerConfig {
                shutdown_grace: Duration::from_secs(1),
                ..ServerConfig::default()
            },
        )
        .await
    }

    /// Serves an already configured node with these connection settings,
    /// on HTTP and HTTPS.
    pub async fn serve_with(node: Arc<Node>, server_config: ServerConfig) -> TestNode {
        let config = Config {
            http: "127.0.0.1:0".parse().unwrap(),
            https: Some("127.0.0.1:0".parse().unwrap()),
            metrics: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        let listeners = Listeners::bind(&config).await.unwrap();
        let http = listeners.http.local_addr().unwrap();
        let https = listeners.https.as_ref().unwrap().local_addr().unwrap();
        let metrics = listeners.metrics.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server::run(node.clone(), listeners, server_config, async {
            let _ = stopped.await;
        }));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http();
        TestNode {
            node,
            http,
            https,
            metrics,
            stop: Some(stop),
            client,
        }
    }

    /// Sends `method path` with `Host: host` and `body`.
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
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
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

    /// The value of one sample line in `/metrics` (`name{labels}`), 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.scrape().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
            .unwrap_or(0.0)
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
    pub async fn start_with_server(
        server_config: ServerConfig,
        apps: Vec<(&[&str], AppSpec)>,
    ) -> TestNode {
        let node = Node::new(&PoolConfig::default(), Metrics::new()).expect("node");
        let apps = apps
            .into_iter()
            .map(|(routes, spec)| {
                let routes: Vec<Route> = routes.iter().map(|r| r.parse().unwrap()).collect();
                (routes, spec)
            })
            .collect();
        node.apply(apps).await.expect("apps load");
        Self::serve_with(node, server_config).await
    }

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
