//! A tenant's bearer tokens: several, each named, listed without their
//! value, revoked by name. A revoked token lets no one in from the next
//! request on: every request looks its token up in the store.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use outpost_proto::{CreateToken, ErrorBody, TokenCreated, TokenInfo};

use super::auth::{self, Admin, TenantAuth};
use super::error::{ApiError, ApiResult};
use super::{ApiState, JsonBody, check_name};
use crate::store::{TokenRecord, now};

/// Most tokens one tenant may hold: enough for every machine and CI job,
/// few enough that the list stays readable.
pub const MAX_TOKENS: usize = 50;

/// Creates token `name` for `tenant` and returns it (the only time it is
/// shown).
async fn create_for(state: &ApiState, tenant: String, name: String) -> ApiResult<TokenCreated> {
    check_name("token", &name)?;
    let t = tenant.clone();
    let held = state.blocking(move |s| s.tokens(&t)).await?.len();
    if held >= MAX_TOKENS {
        return Err(ApiError::quota_exceeded("tokens", MAX_TOKENS as u64));
    }
    let token = auth::new_token();
    let record = TokenRecord {
        tenant,
        name: name.clone(),
        token_sha256: auth::token_sha256(&token),
        created_at: now(),
    };
    state.blocking(move |s| s.create_token(record)).await?;
    Ok(TokenCreated { name, token })
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    request_body = CreateToken,
    responses((status = 201, body = TokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
/// Creates another token for the caller's tenant.
pub async fn create(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    JsonBody(body): JsonBody<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let created = create_for(&state, tenant.name, body.name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/tokens",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    request_body = CreateToken,
    responses((status = 201, body = TokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin" = []))
)]
/// Creates a token for a tenant as the admin: how a tenant that lost or
/// revoked all of its tokens gets back in.
pub async fn create_as_admin(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let created = create_for(&state, tenant, body.name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    responses((status = 200, body = Vec<TokenInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
/// The caller's tenant's tokens: names and creation times, never a token.
pub async fn list(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    let tokens = state.blocking(move |s| s.tokens(&tenant.name)).await?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| TokenInfo {
                name: t.name,
                created_at: t.created_at,
            })
            .collect(),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{name}",
    tag = "tokens",
    params(("name" = String, Path, description = "Token name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
/// Revokes one of the caller's tenant's tokens (the caller's own too).
pub async fn revoke(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .blocking(move |s| s.revoke_token(&tenant.name, &name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
