//! Harness for end-to-end tests: a real control plane and real edge nodes
//! in sync mode, in-process on 127.0.0.1, talking HTTP.

#![allow(dead_code)] // each test binary uses part of the harness

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outpost_control_plane::api::{ApiState, DEFAULT_MAX_MODULE_BYTES};
use outpost_control_plane::secrets::Sealer;
use outpost_control_plane::server;
use outpost_control_plane::store::{SledStore, Store};
use outpost_edge_node::config::ServerConfig;
use outpost_edge_node::metrics::Metrics;
use outpost_edge_node::runtime::{Limits, PoolConfig, Runtime};
use outpost_edge_node::server::Listeners;
use outpost_edge_node::sync::{self, Cache, SyncConfig};
use outpost_edge_node::{Config, Node};
use serde_json::Value;
use tokio::sync::oneshot;

pub const ADMIN: &str = "admin-token-for-tests";
pub const NODE: &str = "node-token-for-tests";
pub const CERT_KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A control plane serving on `addr` (0 = any port) from `data`.
pub struct ControlPlane {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl ControlPlane {
    pub async fn start(data: &Path, addr: SocketAddr) -> ControlPlane {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(data).unwrap());
        Self::start_with(store, addr, DEFAULT_MAX_MODULE_BYTES).await
    }

    /// A control plane over any `store` (a faulty one, say), refusing
    /// modules over `max_module_bytes`.
    pub async fn start_with(
        store: Arc<dyn Store>,
        addr: SocketAddr,
        max_module_bytes: u64,
    ) -> ControlPlane {
        let pool = PoolConfig {
            enabled: false,
            ..PoolConfig::default()
        };
        let validator = Arc::new(Runtime::new(&pool, Metrics::new()).unwrap());
        let state = ApiState::new(
            store,
            ADMIN,
            NODE,
            validator,
            max_module_bytes,
            Sealer::from_hex(CERT_KEY).unwrap(),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            server::run(listener, state, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        ControlPlane {
            addr,
            stop: Some(stop),
            done,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        // Watch streams never end on their own: don't wait for them.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.done).await;
        self.done.abort();
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        ctype: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn json(&self, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(
            method,
            path,
            token,
            "application/json",
            body.to_string().into_bytes(),
        )
        .await
    }

    /// Creates tenant `acme` with an app `web` on `web.example.com`;
    /// returns the tenant's token.
    pub async fn acme_with_web_app(&self) -> String {
        let (status, tenant) = self
            .json(
                "POST",
                "/v1/tenants",
                ADMIN,
                serde_json::json!({"name": "acme"}),
            )
            .await;
        assert_eq!(status, 201, "{tenant}");
        let token = tenant["token"].as_str().unwrap().to_string();
        let app = serde_json::json!({"name": "web", "routes": ["web.example.com"]});
        let (status, body) = self.json("POST", "/v1/apps", &token, app).await;
        assert_eq!(status, 201, "{body}");
        token
    }

    pub async fn deploy(&self, token: &str, wasm: Vec<u8>) -> u64 {
        self.deploy_to("web", token, wasm).await
    }

    pub async fn deploy_to(&self, app: &str, token: &str, wasm: Vec<u8>) -> u64 {
        let path = format!("/v1/apps/{app}/deployments");
        let (status, body) = self
            .call("POST", &path, token, "application/wasm", wasm)
            .await;
        assert_eq!(status, 201, "{body}");
        body["version"].as_u64().unwrap()
    }
}

/// An edge node following `cp`, caching in `cache_dir`.
pub struct EdgeNode {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub metrics: Metrics,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EdgeNode {
    pub async fn start(cp: SocketAddr, cache_dir: &Path, id: &str) -> EdgeNode {
        Self::start_keeping(cp, cache_dir, id, sync::DEFAULT_KEEP_UNUSED_BYTES).await
    }

    /// [`EdgeNode::start`] keeping `keep_unused` bytes of unused modules
    /// (and of compiled code) in its cache.
    pub async fn start_keeping(
        cp: SocketAddr,
        cache_dir: &Path,
        id: &str,
        keep_unused: u64,
    ) -> EdgeNode {
        let metrics = Metrics::new();
        let node = Node::new(&PoolConfig::default(), metrics.clone()).unwrap();
        node.runtime()
            .enable_compile_cache(&cache_dir.join("compiled"))
            .unwrap();
        let cache = Cache::open(cache_dir)
            .unwrap()
            .keep_unused_bytes(keep_unused);
        let applied = sync::restore(&node, &cache, &Limits::default())
            .await
            .unwrap()
            .unwrap_or(0);
        node.set_default_certificate(
            outpost_edge_node::tls::Certificate::self_signed(&["localhost"])
                .unwrap()
                .0,
        );
        let config = Config {
            http: "127.0.0.1:0".parse().unwrap(),
            https: Some("127.0.0.1:0".parse().unwrap()),
            metrics: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        let listeners = Listeners::bind(&config).await.unwrap();
        let http = listeners.http.local_addr().unwrap();
        let https = listeners.https.as_ref().unwrap().local_addr().unwrap();
        let serve = tokio::spawn({
            let node = node.clone();
            async move {
                let _ = outpost_edge_node::server::run(
                    node,
                    listeners,
                    ServerConfig::default(),
                    std::future::pending(),
                )
                .await;
            }
        });
        let follow = tokio::spawn(sync::follow(
            node,
            SyncConfig {
                url: format!("http://{cp}"),
                token: NODE.into(),
                defaults: Limits::default(),
                node_id: id.into(),
            },
            cache,
            applied,
        ));
        EdgeNode {
            http,
            https,
            metrics,
            tasks: vec![serve, follow],
        }
    }

    pub async fn get(&self, host: &str) -> (u16, String) {
        let req = Request::get(format!("http://{}/", self.http))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
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

    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}
