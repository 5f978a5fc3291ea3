//! The node itself: the runtime, the current route table, and the request
//! entry point that ties routing to apps.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, header};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use outpost_runtime::body::{Body, ErrorCode, error_response};
use outpost_runtime::router::{Route, Router};
use outpost_runtime::{App, AppSpec, LaneConfig, PoolConfig, Runtime};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::server::metrics::UnroutedReason;
use crate::tls::{CertTable, Certificate, Installed};

/// What a request arrived on.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// `https` if TLS was terminated.
    pub tls: bool,
    /// The TLS server name (SNI) the client asked for, lower case.
    pub sni: Option<Arc<str>>,
}

/// An edge node: serves whatever route table was last applied.
pub struct Node {
    runtime: Arc<Runtime>,
    table: ArcSwap<Table>,
    /// Tenants' certificates, by hostname.
    certs: ArcSwap<CertTable>,
    /// Served when no tenant's certificate matches the SNI name.
    default_cert: ArcSwap<Option<Arc<Certificate>>>,
    /// Held from reading the table to swapping the next one in, so two
    /// changes applied at once both land, one after the other.
    changing: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

/// The apps being served and the router built from their routes; replaced
/// whole, so a request sees one table or the next, never a mix.
#[derive(Default)]
struct Table {
    router: Router<Target>,
    apps: HashMap<AppKey, (Vec<Route>, Target)>,
}

/// What a route leads to: an app, the reason its app could not load on
/// this node (its routes answer 503 `app_unavailable`, nobody else's), or
/// an app of a disabled tenant (403 `tenant_disabled`, never loaded).
#[derive(Clone)]
enum Target {
    App(Arc<App>),
    Unavailable(Arc<Failed>),
    Disabled(Arc<Parked>),
}

/// An app of a disabled tenant: known by name only.
#[derive(Debug)]
struct Parked {
    tenant: String,
    name: String,
    fingerprint: [u8; 32],
}

impl Target {
    fn tenant(&self) -> &str {
        match self {
            Target::App(app) => app.tenant(),
            Target::Unavailable(failed) => &failed.tenant,
            Target::Disabled(parked) => &parked.tenant,
        }
    }

    fn fingerprint(&self) -> [u8; 32] {
        match self {
            Target::App(app) => app.fingerprint(),
            Target::Unavailable(failed) => failed.fingerprint,
            Target::Disabled(parked) => parked.fingerprint,
        }
    }
}

/// An app this node could not load (compile, link or trial-instantiate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// Owning tenant.
    pub tenant: String,
    /// App name.
    pub name: String,
    /// Why, as the runtime said it.
    pub reason: String,
    /// The spec's fingerprint: the same spec is not retried on every change.
    fingerprint: [u8; 32],
}

/// What to do with an app that does not load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnFailure {
    /// Change nothing and return the error (standalone config, tests).
    Refuse,
    /// Leave the app out, unavailable, and apply everything else (sync:
    /// one tenant's bad module must not stall every other tenant's change).
    LeaveOut,
}

/// `(tenant, app)`.
type AppKey = (String, String);

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("apps", &self.table.load().apps.len())
            .field("certificates", &self.certs.load().len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with no apps yet.
    pub fn new(pool: &PoolConfig, metrics: Metrics) -> Result<Arc<Node>> {
        Self::with_lanes(pool, &LaneConfig::default(), metrics)
    }

    /// [`Node::new`] with these lane settings.
    pub fn with_lanes(
        pool: &PoolConfig,
        lanes: &LaneConfig,
        metrics: Metrics,
    ) -> Result<Arc<Node>> {
        let runtime = Arc::new(Runtime::with_lanes(pool, lanes, metrics.runtime.clone())?);
        Ok(Arc::new(Node {
            runtime,
            table: ArcSwap::from_pointee(Table::default()),
            certs: ArcSwap::from_pointee(CertTable::default()),
            default_cert: ArcSwap::from_pointee(None),
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
        self.replace(apps, OnFailure::Refuse).await.map(drop)
    }

    /// [`Node::apply`], but an app that fails to load is left out (its
    /// routes answer 503 `app_unavailable`) and every other app applies.
    /// Returns the apps left out. Only a table-level problem (one app given
    /// twice, a route claimed twice) changes nothing and is an error.
    pub async fn apply_each(&self, apps: Vec<(Vec<Route>, AppSpec)>) -> Result<Vec<Failed>> {
        self.replace(apps, OnFailure::LeaveOut).await
    }

    async fn replace(
        &self,
        apps: Vec<(Vec<Route>, AppSpec)>,
        on_failure: OnFailure,
    ) -> Result<Vec<Failed>> {
        let _changing = self.changing.lock().await;
        let current = self.table.load_full();
        let mut next = HashMap::with_capacity(apps.len());
        let (loaded, failed) = self.load_all(&current, apps, on_failure).await?;
        for (routes, target) in loaded {
            let key = (target.tenant().to_string(), name_of(&target).to_string());
            if next.insert(key.clone(), (routes, target)).is_some() {
                return Err(Error::Config(vec![format!(
                    "app {:?} of tenant {:?} is given twice",
                    key.1, key.0
                )]));
            }
        }
        self.install(&current, next)?;
        Ok(failed)
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
        self.change(upsert, remove, OnFailure::Refuse)
            .await
            .map(drop)
    }

    /// [`Node::update`], leaving out (unavailable) the upserted apps that
    /// fail to load, like [`Node::apply_each`].
    pub async fn update_each(
        &self,
        upsert: Vec<(Vec<Route>, AppSpec)>,
        remove: &[AppKey],
    ) -> Result<Vec<Failed>> {
        self.change(upsert, remove, OnFailure::LeaveOut).await
    }

    async fn change(
        &self,
        upsert: Vec<(Vec<Route>, AppSpec)>,
        remove: &[AppKey],
        on_failure: OnFailure,
    ) -> Result<Vec<Failed>> {
        let _changing = self.changing.lock().await;
        let current = self.table.load_full();
        let mut next = current.apps.clone();
        for gone in remove {
            next.remove(gone);
        }
        let (loaded, failed) = self.load_all(&current, upsert, on_failure).await?;
        for (routes, target) in loaded {
            let key = (target.tenant().to_string(), name_of(&target).to_string());
            next.insert(key, (routes, target));
        }
        self.install(&current, next)?;
        Ok(failed)
    }

    /// Loads (or reuses) every app, several at once: compiling is CPU work on
    /// the blocking pool, so a node applying hundreds of apps (a restart, a
    /// first sync) uses every core. With [`OnFailure::Refuse`] the first
    /// failure is the result; with [`OnFailure::LeaveOut`] a failed app
    /// becomes an unavailable target and is listed.
    async fn load_all(
        &self,
        current: &Table,
        apps: Vec<(Vec<Route>, AppSpec)>,
        on_failure: OnFailure,
    ) -> Result<(Vec<(Vec<Route>, Target)>, Vec<Failed>)> {
        use futures::StreamExt as _;
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let results: Vec<_> = futures::stream::iter(apps)
            .map(|(routes, spec)| async move {
                let key = (spec.tenant.clone(), spec.name.clone());
                let fingerprint = spec.fingerprint();
                (
                    routes,
                    key,
                    fingerprint,
                    self.load_or_reuse(current, spec).await,
                )
            })
            .buffered(parallel)
            .collect()
            .await;
        let mut loaded = Vec::with_capacity(results.len());
        let mut failed = Vec::new();
        for (routes, (tenant, name), fingerprint, result) in results {
            match result {
                Ok(target) => {
                    if let Target::Unavailable(f) = &target {
                        // A known failure, reused: refused like a new one.
                        if on_failure == OnFailure::Refuse {
                            return Err(outpost_runtime::Error::InvalidWasm {
                                what: format!("app {:?} (tenant {:?})", f.name, f.tenant),
                                reason: f.reason.clone(),
                            }
                            .into());
                        }
                        failed.push(Failed::clone(f));
                    }
                    loaded.push((routes, target));
                }
                Err(e) if on_failure == OnFailure::Refuse => return Err(e),
                Err(e) => {
                    tracing::warn!(%tenant, app = %name, error = %e, "app left out: it does not load");
                    let f = Failed {
                        tenant,
                        name,
                        reason: e.to_string(),
                        fingerprint,
                    };
                    failed.push(f.clone());
                    loaded.push((routes, Target::Unavailable(Arc::new(f))));
                }
            }
        }
        Ok((loaded, failed))
    }

    /// The loaded app for `spec`: the one already serving (or already
    /// known not to load) if its component, limits and environment are
    /// unchanged — it keeps its compiled form and its in-flight requests —,
    /// else one validated here before (loaded at its first request), else
    /// a freshly compiled and trial-instantiated one.
    async fn load_or_reuse(&self, current: &Table, spec: AppSpec) -> Result<Target> {
        let same = current
            .apps
            .get(&(spec.tenant.clone(), spec.name.clone()))
            .filter(|(_, target)| target.fingerprint() == spec.fingerprint());
        match same {
            Some((_, target)) => Ok(target.clone()),
            None if spec.disabled => Ok(Target::Disabled(Arc::new(Parked {
                fingerprint: spec.fingerprint(),
                tenant: spec.tenant,
                name: spec.name,
            }))),
            None if self.runtime.is_validated(&spec) => {
                Ok(Target::App(self.runtime.load_validated(spec)?))
            }
            None => Ok(Target::App(self.runtime.load(spec).await?)),
        }
    }

    /// Builds the router for `apps` and swaps it in.
    fn install(&self, current: &Table, apps: HashMap<AppKey, (Vec<Route>, Target)>) -> Result<()> {
        let entries = apps
            .values()
            .flat_map(|(routes, target)| routes.iter().map(move |r| (r.clone(), target.clone())));
        let router = Router::new(entries).map_err(|e| Error::Config(vec![e.to_string()]))?;
        let next = Arc::new(Table { router, apps });
        self.table.store(next.clone());
        for (gone, (_, target)) in &current.apps {
            if !next.apps.contains_key(gone) {
                self.metrics
                    .runtime
                    .remove_app(target.tenant(), name_of(target));
            }
        }
        let count = |f: fn(&Target) -> bool| next.apps.values().filter(|(_, t)| f(t)).count();
        let unavailable = count(|t| matches!(t, Target::Unavailable(_)));
        let loaded = count(|t| matches!(t, Target::App(_)));
        self.metrics.runtime.set_apps_loaded(loaded);
        self.metrics.runtime.set_apps_unavailable(unavailable);
        Ok(())
    }

    /// Replaces every tenant certificate: `(hostname, tenant, cert)`.
    pub fn set_certificates(&self, certs: Vec<(String, String, Certificate)>) {
        let mut table = CertTable::default();
        for (hostname, tenant, cert) in certs {
            let cert = Arc::new(cert);
            table.insert(&hostname, Installed { tenant, cert });
        }
        self.install_certificates(table);
    }

    /// Adds or replaces the certificates in `upsert` and removes those of
    /// the hostnames in `remove`; the others stay as they are.
    pub fn update_certificates(
        &self,
        upsert: Vec<(String, String, Certificate)>,
        remove: &[String],
    ) {
        let mut table = CertTable::clone(&self.certs.load());
        for hostname in remove {
            table.remove(hostname);
        }
        for (hostname, tenant, cert) in upsert {
            let cert = Arc::new(cert);
            table.insert(&hostname, Installed { tenant, cert });
        }
        self.install_certificates(table);
    }

    fn install_certificates(&self, table: CertTable) {
        self.metrics.tls.set_certificates(
            table.len(),
            table
                .iter()
                .map(|i| i.cert.not_after())
                .chain(self.default_cert.load().iter().map(|c| c.not_after()))
                .min(),
        );
        self.certs.store(Arc::new(table));
    }

    /// Sets the certificate served for names no tenant has a certificate for.
    pub fn set_default_certificate(&self, cert: Certificate) {
        self.default_cert.store(Arc::new(Some(Arc::new(cert))));
        self.install_certificates(CertTable::clone(&self.certs.load()));
    }

    /// The tenant certificate for a TLS server name, if any. A wildcard
    /// answers only for hosts its own tenant routes, so one tenant's
    /// `*.example.com` is never presented for another tenant's host.
    pub fn certificate(&self, server_name: &str) -> Option<Installed> {
        let certs = self.certs.load();
        let (installed, exact) = certs.lookup(server_name)?;
        if !exact {
            let routed_by = self
                .table
                .load()
                .router
                .any_on_host(server_name)
                .map(|target| target.tenant().to_string());
            if routed_by.as_deref() != Some(installed.tenant.as_str()) {
                return None;
            }
        }
        Some(installed.clone())
    }

    /// The node's default certificate, if it has one.
    pub fn default_certificate(&self) -> Option<Arc<Certificate>> {
        Option::clone(&self.default_cert.load())
    }

    /// The tenant a client that asked for `server_name` believes it is
    /// talking to: the owner of the certificate it got, else the owner of
    /// the apps on that host.
    fn tenant_of_name(&self, server_name: &str) -> Option<String> {
        if let Some(installed) = self.certificate(server_name) {
            return Some(installed.tenant);
        }
        self.table
            .load()
            .router
            .any_on_host(server_name)
            .map(|target| target.tenant().to_string())
    }

    /// The app serving `host` + `path`, if any (an app that failed to load
    /// serves nothing).
    pub fn route(&self, host: &str, path: &str) -> Option<Arc<App>> {
        match self.table.load().router.lookup(host, path)? {
            Target::App(app) => Some(app.clone()),
            Target::Unavailable(_) | Target::Disabled(_) => None,
        }
    }

    /// Forgets which apps were validated here, except those it serves:
    /// a marker is kept only as long as its app may be restored.
    pub fn prune_validated(&self) {
        let serving: Vec<[u8; 32]> = self
            .table
            .load()
            .apps
            .values()
            .filter(|(_, t)| matches!(t, Target::App(_)))
            .map(|(_, t)| t.fingerprint())
            .collect();
        if let Some(Err(e)) = self.runtime.prune_validated(&serving) {
            tracing::warn!(error = %e, "could not prune validation markers");
        }
    }

    /// The apps routed here that failed to load.
    pub fn unavailable(&self) -> Vec<Failed> {
        let table = self.table.load();
        let mut out: Vec<Failed> = table
            .apps
            .values()
            .filter_map(|(_, t)| match t {
                Target::Unavailable(f) => Some(Failed::clone(f)),
                Target::App(_) | Target::Disabled(_) => None,
            })
            .collect();
        out.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
        out
    }

    /// Answers one request: routes it by `Host` (or the URI authority, as
    /// HTTP/2 sends it) and path, and runs the matching app. Requests that
    /// match nothing are answered by the node, never by a worker.
    ///
    /// On TLS, a request whose `Host` belongs to another tenant than the
    /// SNI name of its connection is refused with 421: one tenant's
    /// certificate (or connection) never reaches another tenant's worker.
    pub async fn handle<B>(&self, req: Request<B>, conn: &Conn) -> Response<Body>
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
            self.metrics.server.unrouted(UnroutedReason::MissingHost);
            return error_response(
                UnroutedReason::MissingHost.code(),
                "the request has no Host header",
            );
        };
        let table = self.table.load();
        let target = table.router.lookup(host, req.uri().path()).cloned();
        drop(table);
        let app = match target {
            Some(Target::App(app)) => app,
            Some(Target::Unavailable(_)) => {
                self.metrics.server.unrouted(UnroutedReason::AppUnavailable);
                return error_response(
                    UnroutedReason::AppUnavailable.code(),
                    "the app at this host and path cannot run on this node right now",
                );
            }
            Some(Target::Disabled(_)) => {
                self.metrics.server.unrouted(UnroutedReason::TenantDisabled);
                return error_response(
                    UnroutedReason::TenantDisabled.code(),
                    "the site at this host is disabled by the operator",
                );
            }
            None => {
                self.metrics.server.unrouted(UnroutedReason::UnknownHost);
                return error_response(
                    UnroutedReason::UnknownHost.code(),
                    "no app is deployed at this host and path",
                );
            }
        };
        if let Some(sni) = &conn.sni
            && !same_name(sni, host)
            && self.tenant_of_name(sni).as_deref() != Some(app.tenant())
        {
            self.metrics.server.unrouted(UnroutedReason::Misdirected);
            return error_response(
                UnroutedReason::Misdirected.code(),
                "this connection was opened for another site; open a new one for this host",
            );
        }
        let scheme = if conn.tls {
            Scheme::Https
        } else {
            Scheme::Http
        };
        match with_routed_authority(req) {
            Some(req) => app.serve(req, scheme).await,
            None => error_response(ErrorCode::BadHost, "the Host header is not a valid host"),
        }
    }
}

/// The request as its app must see it: with the authority it was routed
/// by. wasmtime hands the guest the URI's authority when there is one, so
/// an absolute-form target naming another host (`GET http://other.test/`
/// with `Host: victim.test`, routed to victim's app) would reach the guest
/// as `other.test`; the URI takes the `Host` value instead. `None`: that
/// value is not a valid authority.
fn with_routed_authority<B>(req: Request<B>) -> Option<Request<B>> {
    let Some(host) = req.headers().get(header::HOST) else {
        return Some(req);
    };
    if req
        .uri()
        .authority()
        .is_none_or(|a| a.as_str().as_bytes() == host.as_bytes())
    {
        return Some(req);
    }
    let authority = http::uri::Authority::try_from(host.as_bytes()).ok()?;
    let (mut parts, body) = req.into_parts();
    let mut uri = parts.uri.into_parts();
    uri.authority = Some(authority);
    parts.uri = http::Uri::from_parts(uri).ok()?;
    Some(Request::from_parts(parts, body))
}

fn name_of(target: &Target) -> &str {
    match target {
        Target::App(app) => app.name(),
        Target::Unavailable(failed) => &failed.name,
        Target::Disabled(parked) => &parked.name,
    }
}

/// Whether a `Host` value names the SNI name (case and port aside).
fn same_name(sni: &str, host: &str) -> bool {
    let host = outpost_runtime::router::normalize_host(host).unwrap_or(host);
    host.eq_ignore_ascii_case(sni.trim_end_matches('.'))
}
