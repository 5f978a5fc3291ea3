//! Harness for the control plane's tests: a real control plane started
//! in-process on 127.0.0.1 through [`outpost_control_plane::start_with`],
//! and a client for its API. The e2e crate's harness reuses this file.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outpost_control_plane::api::DEFAULT_MAX_MODULE_BYTES;
use outpost_control_plane::config::{Config, ServerConfig};
use outpost_control_plane::store::{SledStore, Store};
use outpost_runtime::seal::Sealer;
use serde_json::Value;
use tokio::sync::oneshot;

pub const ADMIN: &str = "admin-token-for-tests";
pub const NODE: &str = "node-token-for-tests";
pub const CERT_KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Domains the harness grants every tenant it creates: the tests' hosts
/// are under these. Several tenants hold the same grants, so which host is
/// whose is decided by who claims it first, as the tests expect.
pub const TEST_DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "acme.example",
    "beta.example",
    "victim.test",
    "other.test",
];

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
        let server = ServerConfig {
            // A short grace, so a stopped control plane is gone quickly.
            shutdown_grace: Duration::from_secs(1),
            ..ServerConfig::default()
        };
        Self::start_with_server(store, addr, max_module_bytes, server).await
    }

    /// [`ControlPlane::start_with`] with these connection settings.
    pub async fn start_with_server(
        store: Arc<dyn Store>,
        addr: SocketAddr,
        max_module_bytes: u64,
        server: ServerConfig,
    ) -> ControlPlane {
        Self::start_with_config(store, config(addr, max_module_bytes, server)).await
    }

    /// A control plane started from `config` alone, as the binary starts:
    /// its store is the one the config names (etcd with a registry, or
    /// sled in `data_dir`).
    pub async fn start_from(config: Config) -> ControlPlane {
        let (stop, stopped) = oneshot::channel::<()>();
        let running = outpost_control_plane::start(&config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        Self::serving(running, stop)
    }

    /// A control plane over `store` with exactly this configuration.
    pub async fn start_with_config(store: Arc<dyn Store>, config: Config) -> ControlPlane {
        let (stop, stopped) = oneshot::channel::<()>();
        let running = outpost_control_plane::start_with(
            &config,
            store,
            Sealer::from_hex(CERT_KEY).unwrap(),
            async {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
        Self::serving(running, stop)
    }

    fn serving(running: outpost_control_plane::Running, stop: oneshot::Sender<()>) -> ControlPlane {
        let addr = running.addr;
        let done = tokio::spawn(async move {
            running.stopped().await.unwrap();
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
        // A body that is not JSON is kept as its text, so a test looking
        // for a secret in responses sees every byte of it.
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
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

    /// Reads `GET /v1/nodes/watch?revision=0` (node token) line by line
    /// until one of type `until`; returns the status and the lines.
    pub async fn watch_lines_until(&self, until: &str) -> (u16, Vec<String>) {
        watch_lines_until(self.addr, "/v1/nodes/watch?revision=0", until).await
    }

    /// Creates tenant `name`; returns its token.
    pub async fn tenant(&self, name: &str) -> String {
        let (status, tenant) = self
            .json(
                "POST",
                "/v1/tenants",
                ADMIN,
                serde_json::json!({"name": name, "domains": TEST_DOMAINS}),
            )
            .await;
        assert_eq!(status, 201, "{tenant}");
        tenant["token"].as_str().unwrap().to_string()
    }

    /// Creates tenant `name` with app `web` on `{name}.example.com`;
    /// returns the tenant's token.
    pub async fn tenant_with_web_app(&self, name: &str) -> String {
        let token = self.tenant(name).await;
        let app = serde_json::json!({"name": "web", "routes": [format!("{name}.example.com")]});
        let (status, body) = self.json("POST", "/v1/apps", &token, app).await;
        assert_eq!(status, 201, "{body}");
        token
    }

    /// Creates tenant `acme` with an app `web` on `web.example.com`;
    /// returns the tenant's token.
    pub async fn acme_with_web_app(&self) -> String {
        let token = self.tenant("acme").await;
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

/// The configuration the harness starts control planes with: the test
/// tokens (the shared node token among them), generous quotas.
pub fn config(addr: SocketAddr, max_module_bytes: u64, server: ServerConfig) -> Config {
    Config {
        listen: addr,
        tls: None,
        etcd: None,
        data_dir: Default::default(),
        admin_token: ADMIN.into(),
        node_token: Some(NODE.into()),
        max_module_bytes,
        cert_key: None,
        // Room for the load scenarios (100 apps and more of one
        // tenant) and for tests that keep every version they deploy;
        // the quotas themselves are tested in api.rs.
        quotas: outpost_control_plane::quotas::Quotas {
            apps: 1_000,
            hosts: 10_000,
            versions_per_app: 1_000,
            ..Default::default()
        },
        allow_localhost: false,
        apps_domain: None,
        reserved_hosts: Vec::new(),
        name: None,
        server,
    }
}

/// Reads the watch stream at `path` (node token) line by line until one of
/// type `until`; returns the status and the lines.
pub async fn watch_lines_until(addr: SocketAddr, path: &str, until: &str) -> (u16, Vec<String>) {
    let req = Request::get(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {NODE}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let (mut buf, mut lines) = (Vec::new(), Vec::new());
    let marker = format!(r#""type":"{until}""#);
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .expect("an event within 30 s")
    {
        if let Ok(data) = frame.unwrap().into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let line = String::from_utf8(line).unwrap().trim_end().to_string();
            let done = line.contains(&marker);
            lines.push(line);
            if done {
                return (status, lines);
            }
        }
    }
    (status, lines)
}

/// `GET url+path` over the client the CLI and nodes use (`outpost-link`),
/// trusting `ca_file`, with `token` if any: the status and body, or why
/// it failed (a refused certificate said as `outpost-link` says it).
pub async fn link_get(
    url: &str,
    ca_file: &Path,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let target = outpost_link::target(url, Some(ca_file)).map_err(|e| e.to_string())?;
    let connector = outpost_link::connector(&target, Some(ca_file)).map_err(|e| e.to_string())?;
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    let mut req = Request::get(format!("{url}{path}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let resp = client
        .request(req.body(Full::default()).unwrap())
        .await
        .map_err(|e| outpost_link::rejected_certificate(&e).unwrap_or_else(|| format!("{e:?}")))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A `GET /v1/apps/{app}/deployments` answer as version -> digest.
pub fn versions(listed: &Value) -> std::collections::BTreeMap<u64, String> {
    listed
        .as_array()
        .expect("a list of deployments")
        .iter()
        .map(|d| {
            (
                d["version"].as_u64().unwrap(),
                d["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
