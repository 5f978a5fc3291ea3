//! The fleet: nodes report what they serve; admins list them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use outpost_proto::{ErrorBody, NodeReport, NodeStatus, Rollout, Unavailable};
use serde::Deserialize;

use super::auth::{Admin, NodeAuth, UserAuth};
use super::error::{ApiError, ApiResult};
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
    auth: NodeAuth,
    State(state): State<Arc<ApiState>>,
    Path(node): Path<String>,
    JsonBody(report): JsonBody<NodeReport>,
) -> ApiResult<StatusCode> {
    check_name("node", &node)?;
    auth.may_act_as(&state, &node).await?;
    // Bounded like everything a node sends: at most one entry per app it
    // routes, each reason cut short.
    if report.unavailable.len() > MAX_UNAVAILABLE {
        return Err(ApiError::bad_request(
            "too_many_entries",
            format!("a report lists at most {MAX_UNAVAILABLE} unavailable apps"),
        ));
    }
    let mut report = report;
    for reason in report.unavailable.values_mut() {
        truncate(reason, MAX_REASON_BYTES);
    }
    state.node_reported(&node, auth.identity(), report);
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
    Json(state.fleet().await)
}

/// Nodes silent for longer than this are not waited for: idle watch
/// streams beat every 15 s.
const LIVE_WINDOW_S: u64 = 60;

/// Unavailable apps one report may list.
const MAX_UNAVAILABLE: usize = 100_000;
/// Longest reason kept per unavailable app.
const MAX_REASON_BYTES: usize = 1024;

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

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
    caller: UserAuth,
    State(state): State<Arc<ApiState>>,
    QueryParams(query): QueryParams<RolloutQuery>,
) -> Json<Rollout> {
    let revision = query.revision.unwrap_or_else(|| *state.revision.borrow());
    Json(rollout_at(&state, revision, caller.tenant.as_deref()).await)
}

/// The live nodes at `revision` or past it, and those behind; with
/// `tenant`, the failures of that tenant's apps only.
pub(crate) async fn rollout_at(state: &ApiState, revision: u64, tenant: Option<&str>) -> Rollout {
    let now = crate::store::now();
    let nodes = state.fleet().await;
    let live: Vec<_> = nodes
        .iter()
        .filter(|n| now.saturating_sub(n.last_contact) <= LIVE_WINDOW_S)
        .collect();
    // A tenant sees only its own apps' failures: another tenant's app
    // names and errors are not its business.
    let mine = |app: &str| match tenant {
        None => true,
        Some(tenant) => app
            .split_once('/')
            .is_some_and(|(owner, _)| owner == tenant),
    };
    let unavailable = live
        .iter()
        .flat_map(|n| {
            n.unavailable
                .iter()
                .filter(|(app, _)| mine(app))
                .map(|(app, reason)| Unavailable {
                    app: app.clone(),
                    node: n.id.clone(),
                    reason: reason.clone(),
                })
        })
        .collect();
    Rollout {
        revision,
        nodes: live.len() as u64,
        applied: live
            .iter()
            .filter(|n| n.applied_revision >= revision)
            .count() as u64,
        unavailable,
        lagging: live
            .iter()
            .filter(|n| n.applied_revision < revision)
            .map(|n| n.id.clone())
            .collect(),
    }
}
