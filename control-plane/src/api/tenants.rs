//! Admin endpoints: tenants and their limits.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use outpost_proto::{CreateTenant, ErrorBody, Limits, Tenant, TenantCreated};

use super::auth::{self, Admin};
use super::error::{ApiError, ApiResult};
use super::{ApiState, JsonBody, check_name};
use crate::store::{TenantRecord, now};

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
    let token = auth::new_token();
    let record = TenantRecord {
        name: body.name.clone(),
        token_sha256: auth::token_sha256(&token),
        limits: Limits::default(),
        created_at: now(),
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

#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    responses((status = 200, body = Vec<Tenant>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("admin" = []))
)]
pub async fn list(_: Admin, State(state): State<Arc<ApiState>>) -> ApiResult<Json<Vec<Tenant>>> {
    let (tenants, apps) = state
        .blocking(|s| Ok((s.tenants()?, s.all_apps()?)))
        .await?;
    Ok(Json(
        tenants
            .into_iter()
            .map(|t| Tenant {
                apps: apps.iter().filter(|a| a.tenant == t.name).count() as u64,
                name: t.name,
                limits: t.limits,
            })
            .collect(),
    ))
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
    let name = tenant.clone();
    let stored = limits.clone();
    state
        .mutate(move |s| s.set_tenant_limits(&name, stored))
        .await?;
    let name = tenant.clone();
    let apps = state.blocking(move |s| s.apps(&name)).await?;
    Ok(Json(Tenant {
        name: tenant,
        limits,
        apps: apps.len() as u64,
    }))
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
