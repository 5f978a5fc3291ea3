//! Admin endpoints: tenants, their limits, domains and quotas, and their
//! lifecycle (disable, enable, delete).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use outpost_proto::{
    CallerKind, CreateTenant, ErrorBody, Limits, SetDomains, Tenant, TenantCreated, TenantQuotas,
    TenantUsage, Whoami,
};

use super::auth::{self, Admin, UserAuth};
use super::error::{ApiError, ApiResult};
use super::{ApiState, JsonBody, check_name, hosts};
use crate::store::{TenantRecord, Usage, now};

#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    request_body = CreateTenant,
    responses((status = 201, body = TenantCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin" = []))
)]
pub async fn create(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    JsonBody(body): JsonBody<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantCreated>)> {
    check_name("tenant", &body.name)?;
    let domains = hosts::normalize_domains(&body.domains, &state.policy)?;
    let token = auth::new_token();
    let record = TenantRecord {
        name: body.name.clone(),
        token_sha256: auth::token_sha256(&token),
        limits: Limits::default(),
        created_at: now(),
        domains,
        disabled: false,
        quotas: TenantQuotas::default(),
    };
    state.blocking(move |s| s.create_tenant(record)).await?;
    Ok((
        StatusCode::CREATED,
        Json(TenantCreated {
            name: body.name,
            token,
        }),
    ))
}

/// A tenant as the admin sees it: its record, app count and usage.
fn view(record: TenantRecord, apps: u64, usage: Usage, certificates: u64) -> Tenant {
    Tenant {
        name: record.name,
        limits: record.limits,
        apps,
        domains: record.domains,
        disabled: record.disabled,
        quotas: record.quotas,
        usage: TenantUsage {
            hosts: usage.hosts,
            certificates,
            stored_bytes: usage.stored_bytes,
        },
    }
}

/// Reads one tenant's view (404 if there is none).
async fn load(state: &ApiState, tenant: &str) -> ApiResult<Tenant> {
    let name = tenant.to_string();
    let found = state
        .blocking(move |s| {
            let Some(record) = s.tenant(&name)? else {
                return Ok(None);
            };
            let apps = s.apps(&name)?.len() as u64;
            let certs = s
                .certificates()?
                .iter()
                .filter(|c| c.tenant == name)
                .count() as u64;
            Ok(Some(view(record, apps, s.usage(&name)?, certs)))
        })
        .await?;
    found.ok_or_else(|| ApiError::not_found(format!("tenant {tenant:?} not found")))
}

#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    responses((status = 200, body = Vec<Tenant>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("admin" = []))
)]
pub async fn list(_: Admin, State(state): State<Arc<ApiState>>) -> ApiResult<Json<Vec<Tenant>>> {
    let tenants = state
        .blocking(|s| {
            let apps = s.all_apps()?;
            let certs = s.certificates()?;
            s.tenants()?
                .into_iter()
                .map(|t| {
                    let n = apps.iter().filter(|a| a.tenant == t.name).count() as u64;
                    let c = certs.iter().filter(|c| c.tenant == t.name).count() as u64;
                    let usage = s.usage(&t.name)?;
                    Ok(view(t, n, usage, c))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(Json(tenants))
}

#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "tenants",
    responses((status = 200, body = Whoami), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("admin" = []), ("bearer" = []))
)]
/// Who the token is; for a tenant, its view and the limits its apps get
/// (its overrides over the defaults nodes start from, as deploys check).
pub async fn whoami(
    caller: UserAuth,
    State(state): State<Arc<ApiState>>,
) -> ApiResult<Json<Whoami>> {
    let Some(name) = caller.tenant else {
        return Ok(Json(Whoami {
            kind: CallerKind::Admin,
            tenant: None,
            limits: None,
        }));
    };
    let tenant = load(&state, &name).await?;
    let limits = outpost_runtime::limits::Limits::default().with(&(&tenant.limits).into());
    Ok(Json(Whoami {
        kind: CallerKind::Tenant,
        limits: Some(limits.to_wire()),
        tenant: Some(tenant),
    }))
}

/// Changes tenant `name` with `change` in one store transaction and
/// answers its new view; `change` refuses with the API error to answer.
async fn update(
    state: &Arc<ApiState>,
    name: &str,
    change: impl FnMut(&mut TenantRecord) -> ApiResult<()> + Send + 'static,
) -> ApiResult<Json<Tenant>> {
    let change = std::sync::Mutex::new(change);
    let refused = Arc::new(std::sync::Mutex::new(None));
    let (n, r) = (name.to_string(), refused.clone());
    let out = state
        .blocking(move |s| {
            s.update_tenant(&n, &mut |t| {
                (change.lock().unwrap())(t).map_err(|e| {
                    let why = e.code().to_string();
                    *r.lock().unwrap() = Some(e);
                    why
                })
            })
        })
        .await?;
    match out {
        Ok(revision) => state.notify(revision),
        Err(why) => {
            let e = refused.lock().unwrap().take();
            return Err(e.unwrap_or_else(|| ApiError::bad_request("refused", why)));
        }
    }
    Ok(Json(load(state, name).await?))
}

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/limits",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    request_body = Limits,
    responses((status = 200, body = Tenant), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin" = []))
)]
pub async fn set_limits(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(tenant): Path<String>,
    JsonBody(limits): JsonBody<Limits>,
) -> ApiResult<Json<Tenant>> {
    check_limits(&limits)?;
    update(&state, &tenant, move |t| {
        t.limits = limits.clone();
        Ok(())
    })
    .await
}

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/domains",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    request_body = SetDomains,
    responses((status = 200, body = Tenant), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin" = []))
)]
/// Replaces the domains a tenant may route. Taking a grant away does not
/// take away hosts the tenant already routes under it (nothing of a
/// tenant's is dropped silently); it stops new claims there.
pub async fn set_domains(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<SetDomains>,
) -> ApiResult<Json<Tenant>> {
    let domains = hosts::normalize_domains(&body.domains, &state.policy)?;
    update(&state, &tenant, move |t| {
        t.domains = domains.clone();
        Ok(())
    })
    .await
}

#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/quotas",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    request_body = TenantQuotas,
    responses((status = 200, body = Tenant), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin" = []))
)]
/// Replaces a tenant's quota overrides. Lowering one below what the
/// tenant holds refuses further growth; nothing it has is removed.
pub async fn set_quotas(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(tenant): Path<String>,
    JsonBody(quotas): JsonBody<TenantQuotas>,
) -> ApiResult<Json<Tenant>> {
    let problems = crate::quotas::Quotas::override_problems(&quotas);
    if !problems.is_empty() {
        return Err(ApiError::bad_request("bad_quotas", problems.join("; ")));
    }
    update(&state, &tenant, move |t| {
        t.quotas = quotas.clone();
        Ok(())
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/disable",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses((status = 200, body = Tenant), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin" = []))
)]
/// Disables a tenant: nodes answer its hosts with 403 `tenant_disabled`
/// without running anything, and its token may read but not change.
pub async fn disable(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Tenant>> {
    update(&state, &tenant, |t| {
        t.disabled = true;
        Ok(())
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/enable",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses((status = 200, body = Tenant), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin" = []))
)]
/// Enables a disabled tenant again.
pub async fn enable(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Tenant>> {
    update(&state, &tenant, |t| {
        t.disabled = false;
        Ok(())
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin" = []))
)]
/// Deletes a tenant and everything it holds: apps, routes (its hosts are
/// free again), versions, certificates, tokens, recent logs; modules no
/// other app uses are collected. Nodes drop its apps with the next delta.
pub async fn delete(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(tenant): Path<String>,
) -> ApiResult<StatusCode> {
    let name = tenant.clone();
    let apps = state.blocking(move |s| s.apps(&name)).await?;
    // Its objects go from every node's cache first: a tenant created
    // later under the same name must not find them.
    let name = tenant.clone();
    state
        .mutate(move |s| s.purge_cache(&name, outpost_proto::CachePurge::All {}))
        .await?;
    let name = tenant.clone();
    state.mutate(move |s| s.delete_tenant(&name)).await?;
    for app in apps {
        state.logs.forget(&tenant, &app.name);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Limits that would make every request fail are refused.
fn check_limits(l: &Limits) -> ApiResult<()> {
    let zero = [
        ("fuel", l.fuel == Some(0)),
        ("memory_mib", l.memory_mib == Some(0)),
        ("timeout_ms", l.timeout_ms == Some(0)),
        ("max_concurrency", l.max_concurrency == Some(0)),
    ];
    if let Some((field, _)) = zero.iter().find(|(_, z)| *z) {
        return Err(ApiError::bad_request(
            "bad_limits",
            format!("{field} must be greater than 0"),
        ));
    }
    if l.memory_mib.is_some_and(|m| m > 4096) {
        return Err(ApiError::bad_request(
            "bad_limits",
            "memory_mib must be at most 4096 (the wasm32 address space)",
        ));
    }
    Ok(())
}
