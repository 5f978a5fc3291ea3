//! Tenant endpoints: apps, routes, env, deployments, rollback; and the
//! node endpoint serving module blobs.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_proto::{
    App, CreateApp, Deployment, EnvComparison, ErrorBody, Rollback, SetEnv, SetOutbound, SetRoutes,
};
use outpost_runtime::limits::MIB;
use outpost_runtime::router::Route;
use outpost_runtime::{AppSpec, Limits};
use sha2::{Digest, Sha256};

use super::auth::{NodeAuth, TenantAuth, hex};
use super::error::{ApiError, ApiResult};
use super::{ApiState, JsonBody, Policy, check_name, hosts};
use crate::store::{AppRecord, DeploymentRecord, TenantRecord, now};

fn view(app: AppRecord) -> App {
    App {
        name: app.name,
        routes: app.routes,
        active_version: app.active_version,
        env_keys: app.env.into_keys().collect(),
        versions: app.versions,
        allow_outbound: app.allow_outbound,
    }
}

/// Longest route accepted: a hostname is at most 253 characters, and a
/// path prefix has no business being much longer; routes travel in every
/// snapshot.
pub(crate) const MAX_ROUTE_CHARS: usize = 1024;

/// Parses and normalizes routes with the node's own parser, refusing
/// duplicates and hosts the tenant may not claim ([`hosts::check_claim`]),
/// so what is stored is exactly what nodes will route.
fn normalize_routes(
    routes: &[String],
    tenant: &TenantRecord,
    policy: &Policy,
) -> ApiResult<Vec<String>> {
    let quota = policy.quotas_for(tenant).routes_per_app;
    if routes.len() > quota {
        return Err(ApiError::quota_exceeded("routes_per_app", quota as u64));
    }
    let mut out: Vec<String> = Vec::with_capacity(routes.len());
    for r in routes {
        // Characters, as the OpenAPI document's `maxLength` counts them.
        if r.chars().count() > MAX_ROUTE_CHARS {
            return Err(ApiError::bad_request(
                "bad_route",
                format!("a route is at most {MAX_ROUTE_CHARS} characters"),
            ));
        }
        let route: Route = r
            .parse()
            .map_err(|e: outpost_runtime::router::RouteError| {
                ApiError::bad_request("bad_route", e.to_string())
            })?;
        hosts::check_claim(route.host(), tenant, policy)?;
        let route = route.to_string();
        if out.contains(&route) {
            return Err(ApiError::bad_request(
                "bad_route",
                format!("route {route} is listed twice"),
            ));
        }
        out.push(route);
    }
    Ok(out)
}

/// Most hosts one app may list.
const MAX_OUTBOUND_HOSTS: usize = 64;

/// Checks and lower-cases an allow-list: `host` (ports 80 and 443) or
/// `host:port` each, `host` a DNS name of two labels or more. IP literals
/// in any spelling, `localhost` and single-label names are refused: an
/// entry names a public service, and the node refuses internal addresses
/// whatever a name resolves to.
fn normalize_outbound(entries: &[String]) -> ApiResult<Vec<String>> {
    let bad = |h: &str, why: &str| ApiError::bad_request("bad_outbound", format!("{h:?}: {why}"));
    if entries.len() > MAX_OUTBOUND_HOSTS {
        return Err(ApiError::bad_request(
            "bad_outbound",
            format!("at most {MAX_OUTBOUND_HOSTS} hosts"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(entries.len());
    for h in entries {
        if h.contains('/') {
            return Err(bad(h, "a host, not a URL"));
        }
        // `[::1]` and `[::1]:80`: an IPv6 literal, whatever the port.
        if h.starts_with('[') || h.matches(':').count() > 1 {
            return Err(bad(h, "IP addresses cannot be allowed; use a DNS name"));
        }
        let (host, port) = match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h.as_str(), None),
        };
        if let Some(port) = port
            && !port.parse::<u16>().is_ok_and(|p| p > 0)
        {
            return Err(bad(h, "the port must be 1-65535"));
        }
        match hosts::not_a_name(host) {
            Some(hosts::NotAName::IpLiteral) => {
                return Err(bad(h, "IP addresses cannot be allowed; use a DNS name"));
            }
            Some(hosts::NotAName::Localhost) => {
                return Err(bad(h, "localhost names cannot be allowed"));
            }
            Some(hosts::NotAName::SingleLabel) => {
                return Err(bad(
                    h,
                    "single-label names cannot be allowed; use a full DNS name",
                ));
            }
            None => {}
        }
        let route: Route = host
            .parse()
            .map_err(|e: outpost_runtime::router::RouteError| bad(h, &e.to_string()))?;
        let name = route.host().trim_end_matches('.');
        let entry = match port {
            Some(port) => format!("{name}:{port}"),
            None => name.to_string(),
        };
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

#[utoipa::path(
    put,
    path = "/v1/apps/{app}/outbound",
    tag = "apps",
    params(("app" = String, Path, description = "App name")),
    request_body = SetOutbound,
    responses((status = 200, body = App), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn set_outbound(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<SetOutbound>,
) -> ApiResult<Json<App>> {
    let hosts = normalize_outbound(&body.hosts)?;
    let (t, a) = (tenant.name.clone(), app.clone());
    state.mutate(move |s| s.set_outbound(&t, &a, hosts)).await?;
    Ok(Json(view(load(&state, &tenant.name, &app).await?)))
}

async fn load(state: &ApiState, tenant: &str, app: &str) -> ApiResult<AppRecord> {
    let (t, a) = (tenant.to_string(), app.to_string());
    state
        .blocking(move |s| s.app(&t, &a))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("app {app:?} not found")))
}

#[utoipa::path(
    post,
    path = "/v1/apps",
    tag = "apps",
    request_body = CreateApp,
    responses((status = 201, body = App), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn create(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    JsonBody(body): JsonBody<CreateApp>,
) -> ApiResult<(StatusCode, Json<App>)> {
    check_name("app", &body.name)?;
    let record = AppRecord {
        routes: normalize_routes(&body.routes, &tenant, &state.policy)?,
        tenant: tenant.name.clone(),
        name: body.name,
        env: Default::default(),
        env_sealed: true,
        active_version: None,
        versions: 0,
        kept: Vec::new(),
        created_at: now(),
        allow_outbound: normalize_outbound(&body.allow_outbound)?,
    };
    // The app count is checked in the store's transaction: two creates
    // racing for the last free slot cannot both land.
    let allowance = state.policy.quotas_for(&tenant).allowance();
    let stored = record.clone();
    state
        .mutate(move |s| s.create_app(stored, &allowance))
        .await?;
    Ok((StatusCode::CREATED, Json(view(record))))
}

#[utoipa::path(
    get,
    path = "/v1/apps",
    tag = "apps",
    responses((status = 200, body = Vec<App>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
) -> ApiResult<Json<Vec<App>>> {
    let apps = state.blocking(move |s| s.apps(&tenant.name)).await?;
    Ok(Json(apps.into_iter().map(view).collect()))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}",
    tag = "apps",
    params(("app" = String, Path, description = "App name")),
    responses((status = 200, body = App), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn show(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(app): Path<String>,
) -> ApiResult<Json<App>> {
    Ok(Json(view(load(&state, &tenant.name, &app).await?)))
}

#[utoipa::path(
    delete,
    path = "/v1/apps/{app}",
    tag = "apps",
    params(("app" = String, Path, description = "App name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(app): Path<String>,
) -> ApiResult<StatusCode> {
    let (t, a) = (tenant.name.clone(), app.clone());
    state.mutate(move |s| s.delete_app(&t, &a)).await?;
    state.logs.forget(&tenant.name, &app);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    put,
    path = "/v1/apps/{app}/routes",
    tag = "apps",
    params(("app" = String, Path, description = "App name")),
    request_body = SetRoutes,
    responses((status = 200, body = App), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn set_routes(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(app): Path<String>,
    JsonBody(body): JsonBody<SetRoutes>,
) -> ApiResult<Json<App>> {
    let routes = normalize_routes(&body.routes, &tenant, &state.policy)?;
    let allowance = state.policy.quotas_for(&tenant).allowance();
    let (t, a) = (tenant.name.clone(), app.clone());
    state
        .mutate(move |s| s.set_routes(&t, &a, routes, &allowance))
        .await?;
    Ok(Json(view(load(&state, &tenant.name, &app).await?)))
}

#[utoipa::path(
    put,
    path = "/v1/apps/{app}/env",
    tag = "apps",
    params(("app" = String, Path, description = "App name")),
    request_body = std::collections::BTreeMap<String, String>,
    responses((status = 200, body = App), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn set_env(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(app): Path<String>,
    JsonBody(env): JsonBody<SetEnv>,
) -> ApiResult<Json<App>> {
    let max = state.policy.quotas_for(&tenant).env_bytes_per_app;
    check_env(&env, max)?;
    let sealed = env
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                crate::env::seal(&state.sealer, &tenant.name, &app, k, v),
            )
        })
        .collect();
    let (t, a) = (tenant.name.clone(), app.clone());
    state.mutate(move |s| s.set_env(&t, &a, sealed)).await?;
    Ok(Json(view(load(&state, &tenant.name, &app).await?)))
}

/// Names non-empty without `=` or NUL, values without NUL; the
/// `env_bytes_per_app` quota in all (names and values).
fn env_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

fn check_env(env: &std::collections::BTreeMap<String, String>, max: usize) -> ApiResult<()> {
    let mut size = 0;
    for (k, v) in env {
        if !env_name_ok(k) || v.contains('\0') {
            return Err(ApiError::bad_request(
                "bad_env",
                format!(
                    "environment variable names must be non-empty without '=' or NUL, \
                     and values without NUL: {k:?}"
                ),
            ));
        }
        size += k.len() + v.len();
    }
    if size > max {
        return Err(ApiError::quota_exceeded("env_bytes_per_app", max as u64));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/env/compare",
    tag = "apps",
    params(("app" = String, Path, description = "App name")),
    request_body(content = std::collections::BTreeMap<String, String>, description = "The values the caller holds, by name"),
    responses((status = 200, body = EnvComparison), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
/// Which of the given variables are stored with the same value, which with
/// another, which are not stored, and which stored ones were not given:
/// what `outpost deploy` needs to print its plan and send only changes.
/// Names only come back. Each value is compared in constant time; the
/// answer does say whether a guessed value is right, which only a holder
/// of the tenant's token can ask, and who could overwrite it anyway.
pub async fn compare_env(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(app): Path<String>,
    JsonBody(given): JsonBody<std::collections::BTreeMap<String, String>>,
) -> ApiResult<Json<EnvComparison>> {
    let record = load(&state, &tenant.name, &app).await?;
    let stored = crate::env::open_map(
        &state.sealer,
        &tenant.name,
        &app,
        &record.env,
        record.env_sealed,
    )
    .map_err(|e| ApiError::internal(format!("opening the app's environment: {e}")))?;
    let mut out = EnvComparison::default();
    for (name, value) in &given {
        match stored.get(name) {
            Some(v) if super::auth::constant_time_eq(v.as_bytes(), value.as_bytes()) => {
                out.same.push(name.clone())
            }
            Some(_) => out.changed.push(name.clone()),
            None => out.missing.push(name.clone()),
        }
    }
    out.others = stored
        .keys()
        .filter(|k| !given.contains_key(*k))
        .cloned()
        .collect();
    Ok(Json(out))
}

#[utoipa::path(
    patch,
    path = "/v1/apps/{app}/env",
    tag = "apps",
    params(("app" = String, Path, description = "App name")),
    request_body(content = std::collections::BTreeMap<String, Option<String>>, description = "Variables to set; null removes one"),
    responses((status = 200, body = App), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn patch_env(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(app): Path<String>,
    JsonBody(changes): JsonBody<std::collections::BTreeMap<String, Option<String>>>,
) -> ApiResult<Json<App>> {
    // A name no variable can have is refused even when it only removes:
    // the request is malformed whatever the environment holds.
    if let Some(name) = changes.keys().find(|k| !env_name_ok(k)) {
        return Err(ApiError::bad_request(
            "bad_env",
            format!("environment variable names must be non-empty without '=' or NUL: {name:?}"),
        ));
    }
    // Checked on what the environment would become, inside the store's
    // transaction, so two concurrent patches both land.
    let max = state.policy.quotas_for(&tenant).env_bytes_per_app;
    let (t, a) = (tenant.name.clone(), app.clone());
    let sealer = state.clone();
    let (revision, refused) = state
        .blocking(move |s| {
            let sealer = &sealer.sealer;
            let mut refused = None;
            let out = s.update_env(&t, &a, &mut |env| {
                // The quota counts clear bytes: open what is stored, apply
                // the changes, check, and store the new values sealed.
                let mut clear = crate::env::open_map(sealer, &t, &a, &env.values, env.sealed)
                    .map_err(|e| e.to_string())?;
                for (k, v) in &changes {
                    match v {
                        Some(v) => clear.insert(k.clone(), v.clone()),
                        None => clear.remove(k),
                    };
                }
                check_env(&clear, max).map_err(|e| {
                    refused = Some(e);
                    "refused".to_string()
                })?;
                env.values = clear
                    .iter()
                    .map(|(k, v)| (k.clone(), crate::env::seal(sealer, &t, &a, k, v)))
                    .collect();
                env.sealed = true;
                Ok(())
            })?;
            Ok((out.ok(), refused))
        })
        .await?;
    match (revision, refused) {
        (Some(revision), _) => state.notify(revision),
        (None, Some(e)) => return Err(e),
        (None, None) => return Err(ApiError::bad_request("bad_env", "refused")),
    }
    Ok(Json(view(load(&state, &tenant.name, &app).await?)))
}

/// Table elements an instance may start with: the nodes' pooling
/// allocator default (`pool.max_table_elements`).
const MAX_INITIAL_TABLE_ELEMENTS: u64 = 100_000;

/// Refuses a component whose memories or tables start larger than the
/// tenant's instances may ever be: it would compile here, then fail to
/// instantiate on every node. Declaring 4 GiB costs a few bytes of
/// upload, so this is checked before anything is stored.
///
/// The memory bound is the tenant's own limit, or the nodes' documented
/// default when the tenant has none (the control plane does not know a
/// node's configuration; an operator who raised it raises the tenant's
/// limit too).
fn check_fits(
    initial_pages: Option<u64>,
    initial_table: Option<u64>,
    memory_limit: u64,
) -> ApiResult<()> {
    const PAGE: u64 = 64 * 1024;
    if let Some(pages) = initial_pages
        && pages.saturating_mul(PAGE) > memory_limit
    {
        return Err(ApiError::bad_request(
            "over_limits",
            format!(
                "the component's linear memory starts at {} MiB ({pages} pages), more than \
                 the {} MiB an instance may use",
                pages.saturating_mul(PAGE) / MIB,
                memory_limit / MIB
            ),
        ));
    }
    if let Some(elements) = initial_table
        && elements > MAX_INITIAL_TABLE_ELEMENTS
    {
        return Err(ApiError::bad_request(
            "over_limits",
            format!(
                "the component's table starts with {elements} elements, more than the \
                 {MAX_INITIAL_TABLE_ELEMENTS} an instance may hold"
            ),
        ));
    }
    Ok(())
}

fn deployment(d: DeploymentRecord) -> Deployment {
    Deployment {
        version: d.version,
        digest: d.digest,
        size: d.size,
        created_at: d.created_at,
    }
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/deployments",
    tag = "deployments",
    params(("app" = String, Path, description = "App name")),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses((status = 201, body = Deployment), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn deploy(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/wasm" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_content_type",
            "upload the component with Content-Type: application/wasm",
        ));
    }
    // The app must exist before we spend CPU on its upload.
    load(&state, &tenant.name, &app).await?;
    let max = state.max_module_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "module_too_large",
            format!("components may be at most {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large());
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let wasm: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    if wasm.is_empty() {
        return Err(ApiError::bad_request("bad_wasm", "the upload is empty"));
    }
    // A component larger than everything the tenant may keep can never be
    // stored: refused before it costs a compile.
    let allowance = state.policy.quotas_for(&tenant).allowance();
    if wasm.len() as u64 > allowance.stored_bytes {
        return Err(ApiError::quota_exceeded(
            "stored_mib",
            allowance.stored_bytes / MIB,
        ));
    }

    let digest = format!("sha256:{}", hex(&Sha256::digest(&wasm)));
    // Compile with the nodes' engine configuration, off the async workers:
    // a bounded number at once, and each tenant only part of them. Both
    // slots go with the compile, which cannot be cut short: a client that
    // leaves frees them only when its compile is done.
    state
        .compile_budget
        .check(&tenant.name, std::time::Instant::now())
        .map_err(ApiError::upload_budget)?;
    let tenant_slot = state
        .tenant_validations
        .take(&tenant.name)
        .map_err(ApiError::uploads_busy)?;
    let permit = state
        .validations
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let validator = state.validator.clone();
    let checked = wasm.clone();
    let what = format!("app {app:?}");
    let (budget, charged) = (state.compile_budget.clone(), tenant.name.clone());
    let (pre, _slots) = tokio::task::spawn_blocking(move || {
        // Charged when the compile ends, whether or not the client waits.
        let started = std::time::Instant::now();
        let pre = validator.check(&what, &checked);
        budget.spend(&charged, std::time::Instant::now(), started.elapsed());
        (pre, (tenant_slot, permit))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let pre = pre.map_err(|e| ApiError::bad_request("bad_wasm", e.to_string()))?;
    // The tenant's limits over the defaults nodes start from.
    let limits = Limits::default().with(&(&tenant.limits).into());
    if let Some(needs) = pre.instance_pre().component().resources_required() {
        check_fits(
            needs.max_initial_memory_size,
            needs.max_initial_table_size,
            limits.memory_bytes,
        )?;
    }
    // Instantiate it once as every node will before serving it: what
    // fails there (a start function that traps, a data segment out of
    // bounds, more memories than the pool gives a module) would leave the
    // app unavailable on every node.
    let spec = AppSpec {
        tenant: tenant.name.clone(),
        name: app.clone(),
        wasm: Vec::new(),
        module: None,
        limits,
        env: Vec::new(),
        allow_outbound: Vec::new(),
        disabled: false,
    };
    state
        .validator
        .trial(spec, pre)
        .await
        .map_err(|e| ApiError::bad_request("invalid_module", e.to_string()))?;

    let (t, a, d) = (tenant.name.clone(), app.clone(), digest.clone());
    let (record, revision) = state
        .blocking(move |s| s.deploy_module(&t, &a, &d, &wasm, now(), &allowance))
        .await?;
    state.notify(revision);
    state.metrics.deployed(&tenant.name);
    Ok((StatusCode::CREATED, Json(deployment(record))))
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/deployments",
    tag = "deployments",
    params(("app" = String, Path, description = "App name")),
    responses((status = 200, body = Vec<Deployment>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn deployments(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<Deployment>>> {
    load(&state, &tenant.name, &app).await?;
    let list = state
        .blocking(move |s| s.deployments(&tenant.name, &app))
        .await?;
    Ok(Json(list.into_iter().map(deployment).collect()))
}

#[utoipa::path(
    post,
    path = "/v1/apps/{app}/rollback",
    tag = "deployments",
    params(("app" = String, Path, description = "App name")),
    request_body = Rollback,
    responses((status = 200, body = App), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn rollback(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(app): Path<String>,
    JsonBody(Rollback { version }): JsonBody<Rollback>,
) -> ApiResult<Json<App>> {
    let (t, a) = (tenant.name.clone(), app.clone());
    state.mutate(move |s| s.rollback(&t, &a, version)).await?;
    Ok(Json(view(load(&state, &tenant.name, &app).await?)))
}

#[utoipa::path(
    get,
    path = "/v1/modules/{digest}",
    tag = "nodes",
    params(("digest" = String, Path, description = "sha256:<hex> of the module")),
    responses((status = 200, body = Vec<u8>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("node" = []))
)]
pub async fn module(
    _: NodeAuth,
    State(state): State<Arc<ApiState>>,
    Path(digest): Path<String>,
) -> ApiResult<Response> {
    let key = digest.clone();
    match state.blocking(move |s| s.module(&key)).await? {
        Some(bytes) => Ok((
            [(header::CONTENT_TYPE, "application/wasm")],
            Bytes::from(bytes),
        )
            .into_response()),
        None => Err(ApiError::not_found(format!("no module {digest}"))),
    }
}
