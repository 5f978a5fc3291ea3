//! The REST API (axum): tenants (admin token), apps and deployments
//! (tenant token), modules (node token). JSON in and out; every error is
//! the `{"error": {"code", "message"}}` body from [`error`].

mod apps;
pub mod auth;
pub(crate) mod certs;
pub mod error;
pub mod limiter;
pub mod logs;
mod nodes;
pub mod openapi;
mod tenants;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post, put};
use outpost_edge_node::runtime::Runtime;

use crate::store::{Revision, Store, StoreError, TenantRecord};
use error::ApiResult;

/// Largest component accepted at upload: 50 MiB, as in DESIGN.md.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 50 * 1024 * 1024;

/// Shared state of the API handlers.
pub struct ApiState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) admin_token_sha256: String,
    pub(crate) node_token_sha256: String,
    /// Compiles uploads with the same engine configuration as the nodes,
    /// so a component that passes here loads there.
    pub(crate) validator: Arc<Runtime>,
    pub(crate) max_module_bytes: u64,
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
    /// Guest output from the nodes, for `outpost logs`.
    pub(crate) logs: logs::LogHub,
    /// Seals tenants' private keys at rest.
    pub(crate) sealer: crate::secrets::Sealer,
    /// The newest snapshot built for watch streams, shared by all of them.
    pub(crate) latest_snapshot: std::sync::Mutex<Option<Arc<outpost_proto::Snapshot>>>,
}

impl ApiState {
    /// State over `store`, with the admin and node tokens in clear (only
    /// their hashes are kept).
    pub fn new(
        store: Arc<dyn Store>,
        admin_token: &str,
        node_token: &str,
        validator: Arc<Runtime>,
        max_module_bytes: u64,
        sealer: crate::secrets::Sealer,
    ) -> Arc<ApiState> {
        // A store that cannot even report its revision will fail every
        // request anyway; start from 0 and let the first write correct it.
        let current = store.revision().unwrap_or(0);
        Arc::new(ApiState {
            revision: tokio::sync::watch::Sender::new(current),
            closing: tokio::sync::watch::Sender::new(false),
            nodes: Default::default(),
            latest_snapshot: Default::default(),
            logs: Default::default(),
            auth_limiter: Default::default(),
            metrics: {
                let m = crate::metrics::CpMetrics::new();
                m.set_revision(current);
                m
            },
            store,
            admin_token_sha256: auth::token_sha256(admin_token),
            node_token_sha256: auth::token_sha256(node_token),
            validator,
            max_module_bytes,
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

    /// Records that node `id` was heard from, and what it serves if known.
    pub(crate) fn node_seen(&self, id: &str, applied_revision: Option<u64>) {
        let mut nodes = self.nodes.lock().unwrap();
        let entry = nodes
            .entry(id.to_string())
            .or_insert_with(|| outpost_proto::NodeStatus {
                id: id.to_string(),
                applied_revision: 0,
                last_contact: 0,
            });
        entry.last_contact = crate::store::now();
        if let Some(revision) = applied_revision {
            entry.applied_revision = revision;
        }
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
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/tenants", post(tenants::create).get(tenants::list))
        .route("/v1/tenants/{tenant}/limits", put(tenants::set_limits))
        .route("/v1/apps", post(apps::create).get(apps::list))
        .route("/v1/apps/{app}", get(apps::show).delete(apps::delete))
        .route("/v1/apps/{app}/routes", put(apps::set_routes))
        .route("/v1/apps/{app}/outbound", put(apps::set_outbound))
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
        .route("/v1/rollout", get(nodes::rollout))
        .route("/v1/nodes/{node}/status", put(nodes::report))
        .route("/v1/nodes/{node}/logs", post(logs::ingest))
        .route("/v1/apps/{app}/logs", get(logs::read))
        .route("/v1/nodes/watch", get(crate::watch::watch))
        .fallback(|| async { error::ApiError::not_found("no such endpoint") })
        .with_state(state)
}

/// `GET /metrics`: Prometheus text, unauthenticated like the nodes' own.
async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
) -> impl axum::response::IntoResponse {
    let nodes: Vec<_> = state.nodes.lock().unwrap().values().cloned().collect();
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
