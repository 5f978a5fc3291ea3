//! The REST API (axum): tenants and node identities (admin token), apps
//! and deployments (tenant token), modules and the watch stream (a node
//! credential). JSON in and out; every error is the
//! `{"error": {"code", "message"}}` body from [`error`].

mod apps;
pub mod auth;
pub mod budget;
pub(crate) mod certs;
pub mod error;
pub(crate) mod hosts;
pub mod limiter;
pub mod logs;
mod node_identities;
mod nodes;
pub mod openapi;
pub mod purge;
pub mod slots;
mod tenants;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post, put};
use outpost_runtime::{PoolConfig, Runtime};

use crate::store::{Revision, Store, StoreError, TenantRecord};
use error::ApiResult;

/// Largest component accepted at upload: 50 MiB, as in DESIGN.md.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 50 * 1024 * 1024;

/// Uploads one tenant may have validated at once: half the validation
/// pool, so another tenant always finds room.
pub const UPLOADS_PER_TENANT: usize = PoolConfig::VALIDATION_SLOTS as usize / 2;

/// What the operator allows tenants: quotas, the platform zone, reserved
/// names, and whether `localhost` names may be routed (`outpost dev` only).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// What one tenant may hold, unless overridden for it.
    pub quotas: crate::quotas::Quotas,
    /// Tenants may be granted `localhost` and route names under it.
    pub allow_localhost: bool,
    /// The platform zone: every tenant may route `APP.TENANT.<zone>`.
    pub apps_domain: Option<String>,
    /// Names (and everything under them) no tenant may route.
    pub reserved: Vec<String>,
}

impl Policy {
    /// The quotas that hold for `tenant`.
    pub fn quotas_for(&self, tenant: &TenantRecord) -> crate::quotas::Quotas {
        self.quotas.for_tenant(&tenant.quotas)
    }
}

/// Shared state of the API handlers.
pub struct ApiState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) admin_token_sha256: String,
    /// The shared node token's hash; `None`: only per-node identities let
    /// nodes in.
    pub(crate) node_token_sha256: Option<String>,
    /// Bumped each time this control plane revokes a node identity, so
    /// the watch streams on identities check theirs at once instead of
    /// at their next heartbeat.
    pub(crate) identities_revoked: tokio::sync::watch::Sender<u64>,
    /// Compiles uploads with the same engine configuration as the nodes,
    /// so a component that passes here loads there.
    pub(crate) validator: Arc<Runtime>,
    /// Uploads compiled and trial-instantiated at once, at most: the
    /// validator's pool holds [`PoolConfig::VALIDATION_SLOTS`] instances,
    /// and a compile is seconds of CPU.
    pub(crate) validations: Arc<tokio::sync::Semaphore>,
    /// Of those, each tenant may hold [`UPLOADS_PER_TENANT`].
    pub(crate) tenant_validations: Arc<slots::TenantSlots>,
    /// And each tenant may spend [`budget::PER_TENANT`] of compile time
    /// per [`budget::WINDOW`].
    pub(crate) compile_budget: Arc<budget::CompileBudget>,
    pub(crate) max_module_bytes: u64,
    /// What the operator allows tenants ([`Policy`]).
    pub(crate) policy: Policy,
    /// The latest revision, for watch streams to follow.
    pub(crate) revision: tokio::sync::watch::Sender<Revision>,
    /// Set when the server shuts down: watch streams end instead of
    /// holding connections (and the store) open forever.
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
    /// Nodes seen since start: what they serve and when they were last
    /// heard from. Kept in memory: nodes report again on reconnect.
    pub(crate) nodes:
        std::sync::Mutex<std::collections::BTreeMap<String, outpost_proto::NodeStatus>>,
    /// Prometheus metrics.
    pub(crate) metrics: crate::metrics::CpMetrics,
    /// Unknown tokens per client address (429 past the limit).
    pub(crate) auth_limiter: limiter::AuthLimiter,
    /// Cache purges per tenant in the current window.
    pub(crate) purge_limiter: purge::PurgeLimiter,
    /// Woken whenever one of this control plane's nodes reports the
    /// revision it applied (a purge waits on it).
    pub(crate) reports: tokio::sync::Notify,
    /// Guest output from the nodes, for `outpost logs`.
    pub(crate) logs: logs::LogHub,
    /// Seals tenants' private keys at rest.
    pub(crate) sealer: outpost_runtime::seal::Sealer,
    /// The newest snapshot built for watch streams, shared by all of them.
    pub(crate) latest_snapshot: std::sync::Mutex<Option<Arc<outpost_proto::Snapshot>>>,
    /// Whether a shared store (etcd) answered the last time it was read
    /// ([`crate::fanout`]); `/healthz` reports it. Always true for sled.
    pub(crate) store_reachable: std::sync::atomic::AtomicBool,
    /// This control plane's name in the fleet view.
    pub(crate) name: String,
}

impl ApiState {
    /// The same state under `policy` (before the state is shared; a
    /// shared state keeps its policy).
    pub fn with_policy(mut self: Arc<Self>, policy: Policy) -> Arc<Self> {
        if let Some(state) = Arc::get_mut(&mut self) {
            state.policy = policy;
        }
        self
    }

    /// The same state named `name` in the fleet view (before the state
    /// is shared).
    pub fn with_name(mut self: Arc<Self>, name: String) -> Arc<Self> {
        if let Some(state) = Arc::get_mut(&mut self) {
            state.name = name;
        }
        self
    }

    /// Every node: those following this control plane, and, on a shared
    /// store, those the others published ([`crate::fleet`]).
    pub(crate) async fn fleet(&self) -> Vec<outpost_proto::NodeStatus> {
        let own: Vec<_> = self.nodes.lock().unwrap().values().cloned().collect();
        if !self.store.shared() {
            return own;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.node_statuses()).await {
            Ok(Ok(published)) => crate::fleet::merge(own, published),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the fleet from the store failed; listing this control plane's nodes only");
                own
            }
            Err(_) => own,
        }
    }

    /// The store behind the API.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// State over `store`, with the admin and shared node tokens in clear
    /// (only their hashes are kept). Without a shared node token only
    /// nodes with their own identity get in.
    pub fn new(
        store: Arc<dyn Store>,
        admin_token: &str,
        node_token: Option<&str>,
        validator: Arc<Runtime>,
        max_module_bytes: u64,
        sealer: outpost_runtime::seal::Sealer,
    ) -> Arc<ApiState> {
        // A store that cannot even report its revision will fail every
        // request anyway; start from 0 and let the first write correct it.
        let current = store.revision().unwrap_or(0);
        Arc::new(ApiState {
            revision: tokio::sync::watch::Sender::new(current),
            closing: tokio::sync::watch::Sender::new(false),
            identities_revoked: tokio::sync::watch::Sender::new(0),
            nodes: Default::default(),
            latest_snapshot: Default::default(),
            store_reachable: std::sync::atomic::AtomicBool::new(true),
            name: "control-plane".into(),
            logs: Default::default(),
            auth_limiter: Default::default(),
            purge_limiter: Default::default(),
            reports: Default::default(),
            metrics: {
                let m = crate::metrics::CpMetrics::new();
                m.set_revision(current);
                m
            },
            store,
            admin_token_sha256: auth::token_sha256(admin_token),
            node_token_sha256: node_token.map(auth::token_sha256),
            validator,
            validations: Arc::new(tokio::sync::Semaphore::new(
                PoolConfig::VALIDATION_SLOTS as usize,
            )),
            tenant_validations: slots::TenantSlots::new(UPLOADS_PER_TENANT),
            compile_budget: Default::default(),
            max_module_bytes,
            policy: Policy::default(),
            sealer,
        })
    }

    /// Runs a store operation on the blocking pool (sled flushes to disk).
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> ApiResult<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
            .map_err(Into::into)
    }

    /// Like [`ApiState::blocking`] for a mutation: announces the new
    /// revision to watching nodes once it is durable.
    pub(crate) async fn mutate(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<Revision, StoreError> + Send + 'static,
    ) -> ApiResult<Revision> {
        let revision = self.blocking(f).await?;
        self.notify(revision);
        Ok(revision)
    }

    /// Records that node `id` was heard from, with the identity it used
    /// (`None`: the shared token), and what it serves if known.
    pub(crate) fn node_seen(
        &self,
        id: &str,
        identity: Option<&str>,
        applied_revision: Option<u64>,
    ) {
        self.with_node(id, identity, |entry| {
            if let Some(revision) = applied_revision {
                entry.applied_revision = revision;
            }
        });
    }

    /// Records a node's report: the revision it serves and the apps it
    /// could not load.
    pub(crate) fn node_reported(
        &self,
        id: &str,
        identity: Option<&str>,
        report: outpost_proto::NodeReport,
    ) {
        self.with_node(id, identity, |entry| {
            entry.applied_revision = report.applied_revision;
            entry.unavailable = report.unavailable;
        });
        self.reports.notify_waiters();
    }

    fn with_node(
        &self,
        id: &str,
        identity: Option<&str>,
        update: impl FnOnce(&mut outpost_proto::NodeStatus),
    ) {
        let mut nodes = self.nodes.lock().unwrap();
        let entry = nodes
            .entry(id.to_string())
            .or_insert_with(|| outpost_proto::NodeStatus {
                id: id.to_string(),
                applied_revision: 0,
                last_contact: 0,
                unavailable: Default::default(),
                identity: None,
                control_plane: None,
            });
        entry.last_contact = crate::store::now();
        entry.identity = identity.map(str::to_string);
        entry.control_plane = Some(self.name.clone());
        update(entry);
    }

    /// Tells the watch streams on node identities that one was revoked:
    /// each checks its own and ends if it is gone.
    pub(crate) fn identity_revoked(&self) {
        self.identities_revoked
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Ends every watch stream (the server is shutting down).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Tells watchers about `revision` (never moves backwards).
    pub(crate) fn notify(&self, revision: Revision) {
        self.revision.send_if_modified(|current| {
            let newer = revision > *current;
            if newer {
                *current = revision;
                self.metrics.set_revision(revision);
            }
            newer
        });
    }

    pub(crate) async fn tenant_by_token_hash(
        &self,
        hash: String,
    ) -> ApiResult<Option<TenantRecord>> {
        self.blocking(move |s| s.tenant_by_token(&hash)).await
    }
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/manifest.schema.json", get(openapi::manifest_schema))
        .route("/v1/whoami", get(tenants::whoami))
        .route("/v1/tenants", post(tenants::create).get(tenants::list))
        .route("/v1/tenants/{tenant}", delete(tenants::delete))
        .route("/v1/tenants/{tenant}/limits", put(tenants::set_limits))
        .route("/v1/tenants/{tenant}/domains", put(tenants::set_domains))
        .route("/v1/tenants/{tenant}/quotas", put(tenants::set_quotas))
        .route("/v1/tenants/{tenant}/disable", post(tenants::disable))
        .route("/v1/tenants/{tenant}/enable", post(tenants::enable))
        .route("/v1/tenants/{tenant}/tokens", post(tokens::create_as_admin))
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{name}", delete(tokens::revoke))
        .route("/v1/apps", post(apps::create).get(apps::list))
        .route("/v1/apps/{app}", get(apps::show).delete(apps::delete))
        .route("/v1/apps/{app}/routes", put(apps::set_routes))
        .route("/v1/apps/{app}/outbound", put(apps::set_outbound))
        .route("/v1/apps/{app}/env/compare", post(apps::compare_env))
        .route(
            "/v1/apps/{app}/env",
            put(apps::set_env).patch(apps::patch_env),
        )
        .route(
            "/v1/apps/{app}/deployments",
            post(apps::deploy).get(apps::deployments),
        )
        .route("/v1/apps/{app}/rollback", post(apps::rollback))
        .route("/v1/modules/{digest}", get(apps::module))
        .route("/v1/certificates", get(certs::list))
        .route(
            "/v1/certificates/{hostname}",
            put(certs::put).delete(certs::delete),
        )
        .route("/v1/nodes", get(nodes::list))
        .route(
            "/v1/nodes/identities",
            post(node_identities::create).get(node_identities::list),
        )
        .route(
            "/v1/nodes/identities/{name}",
            delete(node_identities::revoke),
        )
        .route("/v1/rollout", get(nodes::rollout))
        .route("/v1/cache/purge", post(purge::purge))
        .route("/v1/nodes/{node}/status", put(nodes::report))
        .route("/v1/nodes/{node}/logs", post(logs::ingest))
        .route("/v1/apps/{app}/logs", get(logs::read))
        .route("/v1/nodes/watch", get(crate::watch::watch))
        .fallback(|| async { error::ApiError::not_found("no such endpoint") })
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Gives the few error answers that axum makes itself (405 with its
/// `Allow` header, a query string that does not parse, a body over the
/// default limit) the same JSON error body as every other error, so
/// clients parse one shape. Answers that already are JSON pass untouched.
async fn json_errors(resp: axum::response::Response) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // These bodies are axum's one-line explanations; anything longer is
    // not one of them and is cut rather than buffered.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ if status.is_server_error() => "internal",
        _ => "error",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut fresh = error::ApiError::new(status, code, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    fresh.headers_mut().extend(parts.headers);
    fresh
}

/// A JSON object request body, refused with the API's own 400
/// (`bad_json`) or 413 (`body_too_large`) instead of axum's plain-text
/// rejections.
///
/// The body must be an object: serde would also fill a struct from an
/// array of its fields in order (`[null, null]`), which no client means.
/// Integers written as floats with no fraction (`3.0`) are accepted as the
/// integers they are: JSON Schema, which the OpenAPI document speaks,
/// counts them as integers, and serde alone would refuse them.
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`] for a body that is an array of objects.
pub struct JsonList<T>(pub Vec<T>);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = error::ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> ApiResult<Self> {
        let value = json_value(req, state).await?;
        if !value.is_object() {
            return Err(error::ApiError::bad_request(
                "bad_json",
                "the body must be a JSON object",
            ));
        }
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|e| error::ApiError::bad_request("bad_json", e.to_string()))
    }
}

impl<T, S> axum::extract::FromRequest<S> for JsonList<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = error::ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> ApiResult<Self> {
        let value = json_value(req, state).await?;
        let objects = value
            .as_array()
            .is_some_and(|items| items.iter().all(serde_json::Value::is_object));
        if !objects {
            return Err(error::ApiError::bad_request(
                "bad_json",
                "the body must be a JSON array of objects",
            ));
        }
        serde_json::from_value(value)
            .map(JsonList)
            .map_err(|e| error::ApiError::bad_request("bad_json", e.to_string()))
    }
}

/// The body as JSON, if it is declared and parses as JSON.
async fn json_value<S: Send + Sync>(
    req: axum::extract::Request,
    state: &S,
) -> ApiResult<serde_json::Value> {
    use axum::extract::FromRequest;
    let json_type = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("application/json")
                || (v.starts_with("application/") && v.ends_with("+json"))
        });
    if !json_type {
        return Err(error::ApiError::bad_request(
            "bad_json",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    let bytes = axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                error::ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    e.body_text(),
                )
            } else {
                error::ApiError::bad_request("bad_json", e.body_text())
            }
        })?;
    let mut value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| error::ApiError::bad_request("bad_json", e.to_string()))?;
    integral_floats_to_integers(&mut value);
    Ok(value)
}

fn integral_floats_to_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Only exactly representable integers: beyond 2^53 a float
            // no longer says which integer it meant.
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                *value = if f < 0.0 {
                    Value::from(f as i64)
                } else {
                    Value::from(f as u64)
                };
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// A query string, refused with the API's own 400 (`bad_query`).
pub struct QueryParams<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = error::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> ApiResult<Self> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| QueryParams(q))
            .map_err(|e| error::ApiError::bad_request("bad_query", e.body_text()))
    }
}

/// `GET /metrics`: Prometheus text, unauthenticated like the nodes' own.
async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
) -> impl axum::response::IntoResponse {
    let nodes = state.fleet().await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&nodes),
    )
}

/// Tenant and app names: 1-63 of `a-z`, `0-9`, `-`, starting with a
/// letter or digit (they appear in metric labels and keys).
pub(crate) fn check_name(kind: &str, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(error::ApiError::bad_request(
            "bad_name",
            format!("{kind} names are 1-63 characters of a-z, 0-9 and '-', not starting with '-'"),
        ))
    }
}

/// `GET /healthz`: `ok`, or 503 while a shared store (etcd) does not
/// answer, so a load balancer sends clients to a control plane that can
/// serve them.
async fn healthz(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
) -> (axum::http::StatusCode, &'static str) {
    if state
        .store_reachable
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        (axum::http::StatusCode::OK, "ok\n")
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the shared store does not answer\n",
        )
    }
}
