//! Per-node identities (admin token): each node gets its own token, so one
//! leaked token exposes one node, and revoking it shuts out that node
//! alone. A node with an identity is that identity's name in the fleet.
//! Revoking one also ends its open watch stream at once (see
//! [`crate::watch`]): a revoked node identity fetches nothing more.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use outpost_proto::{CreateNodeIdentity, ErrorBody, NodeIdentity, NodeIdentityCreated};

use super::auth::{self, Admin};
use super::error::{ApiError, ApiResult};
use super::{ApiState, JsonBody, check_name};
use crate::store::{NodeIdentityRecord, now};

/// Names that are paths under `/v1/nodes/`: a node by that name could not
/// be told apart from the endpoint, so no identity may take them.
pub const RESERVED_NAMES: &[&str] = &["watch", "identities"];

/// Refuses a name that cannot be a node's (400 `bad_name`, or
/// `reserved_name` for a path under `/v1/nodes/`).
fn check_identity_name(name: &str) -> ApiResult<()> {
    check_name("node", name)?;
    if RESERVED_NAMES.contains(&name) {
        return Err(ApiError::bad_request(
            "reserved_name",
            format!("{name:?} is a path under /v1/nodes/ and cannot name a node"),
        ));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/v1/nodes/identities",
    tag = "nodes",
    request_body = CreateNodeIdentity,
    responses((status = 201, body = NodeIdentityCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin" = []))
)]
/// Creates the identity of node `name` and returns its token (the only
/// time it is shown).
pub async fn create(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    JsonBody(body): JsonBody<CreateNodeIdentity>,
) -> ApiResult<(StatusCode, Json<NodeIdentityCreated>)> {
    check_identity_name(&body.name)?;
    let token = auth::new_node_token(&body.name);
    let record = NodeIdentityRecord {
        name: body.name,
        token_sha256: auth::token_sha256(&token),
        created_at: now(),
    };
    let created = NodeIdentityCreated {
        name: record.name.clone(),
        token,
        created_at: record.created_at,
    };
    state
        .blocking(move |s| s.create_node_identity(record))
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get,
    path = "/v1/nodes/identities",
    tag = "nodes",
    responses((status = 200, body = Vec<NodeIdentity>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("admin" = []))
)]
/// Every node identity: names and creation times, never a token or hash.
pub async fn list(
    _: Admin,
    State(state): State<Arc<ApiState>>,
) -> ApiResult<Json<Vec<NodeIdentity>>> {
    let records = state.blocking(|s| s.node_identities()).await?;
    Ok(Json(
        records
            .into_iter()
            .map(|r| NodeIdentity {
                name: r.name,
                created_at: r.created_at,
            })
            .collect(),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/nodes/identities/{name}",
    tag = "nodes",
    params(("name" = String, Path, description = "Node identity name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin" = []))
)]
/// Revokes a node identity: its token is refused from the next request
/// on, and its open watch stream ends now.
pub async fn revoke(
    _: Admin,
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .blocking(move |s| s.revoke_node_identity(&name))
        .await?;
    // Only once the revocation is durable: a stream that checks now must
    // find the identity gone.
    state.identity_revoked();
    Ok(StatusCode::NO_CONTENT)
}
