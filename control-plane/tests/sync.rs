//! End to end: a real control plane and two real edge nodes in sync mode,
//! all on 127.0.0.1:0, talking HTTP. Deploys reach both nodes; nodes keep
//! serving when the control plane is gone, restart from their cache, and
//! catch up when it returns.

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
use outpost_control_plane::server;
use outpost_control_plane::store::{SledStore, Store};
use outpost_edge_node::config::ServerConfig;
use outpost_edge_node::metrics::Metrics;
use outpost_edge_node::runtime::{Limits, PoolConfig, Runtime};
use outpost_edge_node::server::Listeners;
use outpost_edge_node::sync::{self, Cache, SyncConfig};
use outpost_edge_node::{Config, Node};
use outpost_test_fixtures as fixtures;
use serde_json::{Value, json};
use tokio::sync::oneshot;

const ADMIN: &str = "admin-token-for-tests";
const NODE: &str = "node-token-for-tests";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A control plane serving on `addr` (0 = any port) from `data`.
struct ControlPlane {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl ControlPlane {
    async fn start(data: &Path, addr: SocketAddr) -> ControlPlane {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(data).unwrap());
        let pool = PoolConfig {
            enabled: false,
            ..PoolConfig::default()
        };
        let validator = Arc::new(Runtime::new(&pool, Metrics::new()).unwrap());
        let state = ApiState::new(store, ADMIN, NODE, validator, DEFAULT_MAX_MODULE_BYTES);
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

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        // Watch streams never end on their own: don't wait for them.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.done).await;
        self.done.abort();
    }

    async fn call(
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

    async fn json(&self, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(
            method,
            path,
            token,
            "application/json",
            body.to_string().into_bytes(),
        )
        .await
    }

    async fn deploy(&self, token: &str, wasm: Vec<u8>) -> u64 {
        let (status, body) = self
            .call(
                "POST",
                "/v1/apps/web/deployments",
                token,
                "application/wasm",
                wasm,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["version"].as_u64().unwrap()
    }
}

/// An edge node following `cp`, caching in `cache_dir`.
struct EdgeNode {
    http: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EdgeNode {
    async fn start(cp: SocketAddr, cache_dir: &Path, id: &str) -> EdgeNode {
        let node = Node::new(&PoolConfig::default(), Metrics::new()).unwrap();
        let cache = Cache::open(cache_dir).unwrap();
        let applied = sync::restore(&node, &cache, &Limits::default())
            .await
            .unwrap()
            .unwrap_or(0);
        let config = Config {
            http: "127.0.0.1:0".parse().unwrap(),
            metrics: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        let listeners = Listeners::bind(&config).await.unwrap();
        let http = listeners.http.local_addr().unwrap();
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
                cache_dir: cache_dir.to_path_buf(),
                defaults: Limits::default(),
                node_id: id.into(),
            },
            cache,
            applied,
        ));
        EdgeNode {
            http,
            tasks: vec![serve, follow],
        }
    }

    async fn get(&self, host: &str) -> (u16, String) {
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
    async fn until_serves(&self, host: &str, want: &str) -> Duration {
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

    fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_reach_every_node_which_survive_the_control_plane() {
    let data = tempfile::tempdir().unwrap();
    let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = cp.addr;
    let (status, tenant) = cp
        .json("POST", "/v1/tenants", ADMIN, json!({"name": "acme"}))
        .await;
    assert_eq!(status, 201);
    let token = tenant["token"].as_str().unwrap().to_string();
    let (status, _) = cp
        .json(
            "POST",
            "/v1/apps",
            &token,
            json!({"name": "web", "routes": ["web.example.com"]}),
        )
        .await;
    assert_eq!(status, 201);

    let nodes = [
        EdgeNode::start(addr, caches[0].path(), "edge-1").await,
        EdgeNode::start(addr, caches[1].path(), "edge-2").await,
    ];
    // Before any deploy the route is unknown to the nodes.
    assert_eq!(nodes[0].get("web.example.com").await.0, 404);

    cp.deploy(&token, fixtures::hello("v1\n")).await;
    for (i, node) in nodes.iter().enumerate() {
        let took = node.until_serves("web.example.com", "v1\n").await;
        println!("deploy v1 reached node {i} in {took:?}");
    }
    cp.deploy(&token, fixtures::hello("v2\n")).await;
    for node in &nodes {
        node.until_serves("web.example.com", "v2\n").await;
    }
    let (status, _) = cp
        .json(
            "POST",
            "/v1/apps/web/rollback",
            &token,
            json!({"version": 1}),
        )
        .await;
    assert_eq!(status, 200);
    for node in &nodes {
        node.until_serves("web.example.com", "v1\n").await;
    }

    // Both nodes report the revision they serve.
    let started = Instant::now();
    loop {
        let (status, list) = cp.json("GET", "/v1/nodes", ADMIN, Value::Null).await;
        assert_eq!(status, 200);
        let revisions: Vec<_> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap().to_string(),
                    n["applied_revision"].as_u64().unwrap(),
                )
            })
            .collect();
        let (_, app) = cp.json("GET", "/v1/apps/web", &token, Value::Null).await;
        assert_eq!(app["active_version"], 1);
        if revisions.len() == 2
            && revisions.iter().all(|(_, r)| *r == revisions[0].1)
            && revisions[0].1 >= 4
        {
            assert_eq!(revisions[0].0, "edge-1");
            assert_eq!(revisions[1].0, "edge-2");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nodes report {revisions:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The control plane goes away: nodes keep serving what they have.
    cp.stop().await;
    for node in &nodes {
        assert_eq!(node.get("web.example.com").await, (200, "v1\n".into()));
    }

    // A node restarted while the control plane is down serves from cache.
    let [first, second] = nodes;
    first.stop();
    let first = EdgeNode::start(addr, caches[0].path(), "edge-1").await;
    assert_eq!(first.get("web.example.com").await, (200, "v1\n".into()));

    // The control plane returns on the same address with all its state;
    // both nodes reconnect and follow the next deploy.
    let cp = ControlPlane::start(data.path(), addr).await;
    let (status, app) = cp.json("GET", "/v1/apps/web", &token, Value::Null).await;
    assert_eq!((status, app["active_version"].as_u64()), (200, Some(1)));
    cp.deploy(&token, fixtures::hello("v3\n")).await;
    for node in [&first, &second] {
        node.until_serves("web.example.com", "v3\n").await;
    }
    first.stop();
    second.stop();
    cp.stop().await;
}
