//! The node itself: the runtime, the current route table, and the request
//! entry point that ties routing to apps.

use std::collections::HashMap;
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
    table: ArcSwap<Table>,
    /// Held from reading the table to swapping the next one in, so two
    /// changes applied at once both land, one after the other.
    changing: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

/// The apps being served and the router built from their routes; replaced
/// whole, so a request sees one table or the next, never a mix.
#[derive(Default)]
struct Table {
    router: Router<Arc<App>>,
    apps: HashMap<AppKey, (Vec<Route>, Arc<App>)>,
}

/// `(tenant, app)`.
type AppKey = (String, String);

impl Node {
    /// A node with no apps yet.
    pub fn new(pool: &PoolConfig, metrics: Metrics) -> Result<Arc<Node>> {
        let runtime = Arc::new(Runtime::new(pool, metrics.clone())?);
        Ok(Arc::new(Node {
            runtime,
            table: ArcSwap::from_pointee(Table::default()),
            changing: tokio::sync::Mutex::new(()),
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

    /// Serves exactly `apps` from now on: compiles every new or changed
    /// one, then swaps the whole route table at once. If any app fails to
    /// load, nothing changes and the node keeps serving the table it had.
    pub async fn apply(&self, apps: Vec<(Vec<Route>, AppSpec)>) -> Result<()> {
        let _changing = self.changing.lock().await;
        let current = self.table.load_full();
        let mut next = HashMap::with_capacity(apps.len());
        for (routes, spec) in apps {
            let app = self.load_or_reuse(&current, spec).await?;
            next.insert(key(&app), (routes, app));
        }
        self.install(&current, next)
    }

    /// Applies a change: `upsert` apps are added or replace the app of the
    /// same tenant and name, `remove` apps go; every other app is kept as
    /// it is, without being read or compiled again. All or nothing, like
    /// [`Node::apply`].
    pub async fn update(
        &self,
        upsert: Vec<(Vec<Route>, AppSpec)>,
        remove: &[AppKey],
    ) -> Result<()> {
        let _changing = self.changing.lock().await;
        let current = self.table.load_full();
        let mut next = current.apps.clone();
        for gone in remove {
            next.remove(gone);
        }
        for (routes, spec) in upsert {
            let app = self.load_or_reuse(&current, spec).await?;
            next.insert(key(&app), (routes, app));
        }
        self.install(&current, next)
    }

    /// The loaded app for `spec`: the one already serving if its component,
    /// limits and environment are unchanged (it keeps its compiled form and
    /// its in-flight requests), else a freshly compiled one.
    async fn load_or_reuse(&self, current: &Table, spec: AppSpec) -> Result<Arc<App>> {
        let same = current
            .apps
            .get(&(spec.tenant.clone(), spec.name.clone()))
            .filter(|(_, app)| app.fingerprint() == spec.fingerprint());
        match same {
            Some((_, app)) => Ok(app.clone()),
            None => self.runtime.load(spec).await,
        }
    }

    /// Builds the router for `apps` and swaps it in.
    fn install(
        &self,
        current: &Table,
        apps: HashMap<AppKey, (Vec<Route>, Arc<App>)>,
    ) -> Result<()> {
        let entries = apps
            .values()
            .flat_map(|(routes, app)| routes.iter().map(move |r| (r.clone(), app.clone())));
        let router = Router::new(entries).map_err(|e| Error::Config(vec![e.to_string()]))?;
        let next = Arc::new(Table { router, apps });
        self.table.store(next.clone());
        for (gone, (_, app)) in &current.apps {
            if !next.apps.contains_key(gone) {
                self.metrics.remove_app(app.tenant(), app.name());
            }
        }
        self.metrics.set_apps_loaded(next.apps.len());
        Ok(())
    }

    /// The app serving `host` + `path`, if any.
    pub fn route(&self, host: &str, path: &str) -> Option<Arc<App>> {
        self.table.load().router.lookup(host, path).cloned()
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

fn key(app: &App) -> AppKey {
    (app.tenant().to_string(), app.name().to_string())
}
