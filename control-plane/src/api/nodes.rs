//! The fleet: nodes report what they serve; admins list them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use outpost_proto::{ErrorBody, NodeReport, NodeStatus};

use super::auth::{Admin, NodeAuth};
use super::error::{ApiError, ApiResult};
use super::{ApiState, check_name};

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
    body: Result<Json<NodeReport>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(report) = body.map_err(|e| ApiError::bad_request("bad_json", e.body_text()))?;
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
