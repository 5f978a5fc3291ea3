//! The node itself: the runtime, the current route table, and the request
//! entry point that ties routing to apps.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::body::{Body, error_response};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, UnroutedReason};
use crate::router::{Route, Router};
use crate::runtime::{App, AppSpec, PoolConfig, Runtime};

/// An edge node: serves whatever route table was last applied.
pub struct Node {
    runtime: Arc<Runtime>,
    routes: ArcSwap<Router<Arc<App>>>,
    metrics: Metrics,
}

impl Node {
    /// A node with no apps yet.
    pub fn new(pool: &PoolConfig, metrics: Metrics) -> Result<Arc<Node>> {
        let runtime = Arc::new(Runtime::new(pool, metrics.clone())?);
        Ok(Arc::new(Node {
            runtime,
            routes: ArcSwap::from_pointee(Router::new([]).expect("no routes, no duplicates")),
            metrics,
        }))
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The runtime (engine, pool).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Compiles every app, then swaps the whole route table at once. If any
    /// app fails to load, nothing changes and the node keeps serving the
    /// table it had.
    pub async fn apply(&self, apps: Vec<(Vec<Route>, AppSpec)>) -> Result<()> {
        // Apps whose component, limits and environment are unchanged keep
        // their compiled form (and their in-flight requests); only new or
        // changed ones are compiled.
        let current: std::collections::HashMap<[u8; 32], Arc<App>> = self
            .routes
            .load()
            .values()
            .map(|app| (app.fingerprint(), app.clone()))
            .collect();
        let mut loaded = Vec::with_capacity(apps.len());
        for (routes, spec) in apps {
            let reuse = current
                .get(&spec.fingerprint())
                .filter(|app| app.tenant() == spec.tenant && app.name() == spec.name);
            let app = match reuse {
                Some(app) => app.clone(),
                None => self.runtime.load(spec).await?,
            };
            loaded.push((routes, app));
        }
        let entries = loaded
            .iter()
            .flat_map(|(routes, app)| routes.iter().map(move |r| (r.clone(), app.clone())));
        let router = Router::new(entries).map_err(|e| Error::Config(vec![e.to_string()]))?;
        let old = self.routes.swap(Arc::new(router));
        let keep: std::collections::HashSet<_> = loaded
            .iter()
            .map(|(_, a)| (a.tenant().to_string(), a.name().to_string()))
            .collect();
        self.forget_removed(&old, &keep);
        self.metrics.set_apps_loaded(loaded.len());
        Ok(())
    }

    /// Drops the metric series of apps that are gone.
    fn forget_removed(
        &self,
        old: &Router<Arc<App>>,
        keep: &std::collections::HashSet<(String, String)>,
    ) {
        for app in old.values() {
            if !keep.contains(&(app.tenant().to_string(), app.name().to_string())) {
                self.metrics.remove_app(app.tenant(), app.name());
            }
        }
    }

    /// The app serving `host` + `path`, if any.
    pub fn route(&self, host: &str, path: &str) -> Option<Arc<App>> {
        self.routes.load().lookup(host, path).cloned()
    }

    /// Answers one request: routes it by `Host` (or the URI authority, as
    /// HTTP/2 sends it) and path, and runs the matching app. Requests that
    /// match nothing are answered by the node, never by a worker.
    pub async fn handle<B>(&self, req: Request<B>, scheme: Scheme) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let Some(host) = host else {
            self.metrics.unrouted(UnroutedReason::MissingHost);
            return error_response(
                StatusCode::BAD_REQUEST,
                UnroutedReason::MissingHost.as_str(),
                "the request has no Host header",
            );
        };
        let Some(app) = self.route(host, req.uri().path()) else {
            self.metrics.unrouted(UnroutedReason::UnknownHost);
            return error_response(
                StatusCode::NOT_FOUND,
                UnroutedReason::UnknownHost.as_str(),
                "no app is deployed at this host and path",
            );
        };
        app.serve(req, scheme).await
    }
}
