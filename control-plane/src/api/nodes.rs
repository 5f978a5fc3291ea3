//! The fleet: nodes report what they serve; admins list them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use outpost_proto::{ErrorBody, NodeReport, NodeStatus, Rollout};
use serde::Deserialize;

use super::auth::{Admin, NodeAuth, UserAuth};
use super::error::ApiResult;
use super::{ApiState, JsonBody, QueryParams, check_name};

#[utoipa::path(
    put,
    path = "/v1/nodes/{node}/status",
    tag = "nodes",
    params(("node" = String, Path, description = "Node id")),
    request_body = NodeReport,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("node" = []))
)]
pub async fn report(
    _: NodeAuth,
    State(state): State<Arc<ApiState>>,
    Path(node): Path<String>,
    JsonBody(report): JsonBody<NodeReport>,
) -> ApiResult<StatusCode> {
    check_name("node", &node)?;
    state.node_seen(&node, Some(report.applied_revision));
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "nodes",
    responses((status = 200, body = Vec<NodeStatus>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("admin" = []))
)]
pub async fn list(_: Admin, State(state): State<Arc<ApiState>>) -> Json<Vec<NodeStatus>> {
    Json(state.nodes.lock().unwrap().values().cloned().collect())
}

/// Nodes silent for longer than this are not waited for: idle watch
/// streams beat every 15 s.
const LIVE_WINDOW_S: u64 = 60;

/// Query of `GET /v1/rollout`.
#[derive(Debug, Deserialize)]
pub struct RolloutQuery {
    /// The revision to count nodes at; default: the current one.
    revision: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/rollout",
    tag = "nodes",
    params(("revision" = Option<u64>, Query, description = "Revision to count nodes at (default: current)")),
    responses((status = 200, body = Rollout), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []), ("admin" = []))
)]
pub async fn rollout(
    _: UserAuth,
    State(state): State<Arc<ApiState>>,
    QueryParams(query): QueryParams<RolloutQuery>,
) -> Json<Rollout> {
    let revision = query.revision.unwrap_or_else(|| *state.revision.borrow());
    let now = crate::store::now();
    let nodes = state.nodes.lock().unwrap();
    let live: Vec<_> = nodes
        .values()
        .filter(|n| now.saturating_sub(n.last_contact) <= LIVE_WINDOW_S)
        .collect();
    Json(Rollout {
        revision,
        nodes: live.len() as u64,
        applied: live
            .iter()
            .filter(|n| n.applied_revision >= revision)
            .count() as u64,
    })
}
