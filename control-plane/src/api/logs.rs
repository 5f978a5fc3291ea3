//! Guest output, from the nodes to `outpost logs`: nodes post batches of
//! lines (`POST /v1/nodes/{node}/logs`), the control plane keeps the last
//! [`RECENT_LINES`] per app in memory and fans new ones out to followers
//! (`GET /v1/apps/{app}/logs?follow=true`, NDJSON).
//!
//! Deliberately not a log store: lines live in memory only, a restart
//! forgets them, and a follower that reads too slowly skips lines rather
//! than holding memory. Operators who need retention ship the nodes'
//! `outpost::guest` tracing target to their log pipeline.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_proto::{ErrorBody, GuestLogLine};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::auth::{NodeAuth, TenantAuth};
use super::error::{ApiError, ApiResult};
use super::{ApiState, check_name};

/// Lines kept per app for a new reader.
pub const RECENT_LINES: usize = 1000;
/// Lines in flight to followers; a follower further behind skips ahead.
const FOLLOW_BUFFER: usize = 4096;
/// Most lines one post may carry.
const MAX_BATCH: usize = 5000;

type Line = (u64, Arc<GuestLogLine>);

/// Recent lines per app and the feed followers subscribe to.
pub struct LogHub {
    next: AtomicU64,
    recent: std::sync::Mutex<HashMap<(String, String), VecDeque<Line>>>,
    feed: broadcast::Sender<Line>,
}

impl Default for LogHub {
    fn default() -> Self {
        LogHub {
            next: AtomicU64::new(1),
            recent: Default::default(),
            feed: broadcast::Sender::new(FOLLOW_BUFFER),
        }
    }
}

impl LogHub {
    fn add(&self, line: GuestLogLine) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let line = Arc::new(line);
        {
            let mut recent = self.recent.lock().unwrap();
            let ring = recent
                .entry((line.tenant.clone(), line.app.clone()))
                .or_default();
            if ring.len() == RECENT_LINES {
                ring.pop_front();
            }
            ring.push_back((seq, line.clone()));
        }
        // No followers is fine.
        let _ = self.feed.send((seq, line));
    }

    fn recent(&self, tenant: &str, app: &str) -> Vec<Line> {
        self.recent
            .lock()
            .unwrap()
            .get(&(tenant.to_string(), app.to_string()))
            .map(|ring| ring.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{node}/logs",
    tag = "nodes",
    params(("node" = String, Path, description = "Node id")),
    request_body = Vec<GuestLogLine>,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("node" = []))
)]
pub async fn ingest(
    _: NodeAuth,
    State(state): State<Arc<ApiState>>,
    Path(node): Path<String>,
    body: Result<Json<Vec<GuestLogLine>>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(lines) = body.map_err(|e| ApiError::bad_request("bad_json", e.body_text()))?;
    check_name("node", &node)?;
    if lines.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "too_many_lines",
            format!("at most {MAX_BATCH} lines per post"),
        ));
    }
    for mut line in lines {
        line.node = node.clone();
        state.logs.add(line);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /v1/apps/{app}/logs`.
#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    /// Keep the stream open and send new lines as they arrive.
    #[serde(default)]
    follow: bool,
}

fn ndjson(line: &GuestLogLine) -> Bytes {
    let mut bytes = serde_json::to_vec(line).expect("log lines serialize");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

#[utoipa::path(
    get,
    path = "/v1/apps/{app}/logs",
    tag = "apps",
    params(("app" = String, Path, description = "App name"), ("follow" = Option<bool>, Query, description = "Keep streaming new lines")),
    responses((status = 200, body = GuestLogLine, description = "Newline-delimited JSON, oldest first"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn read(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(app): Path<String>,
    Query(query): Query<LogsQuery>,
) -> ApiResult<Response> {
    let (t, a) = (tenant.name.clone(), app.clone());
    if state.blocking(move |s| s.app(&t, &a)).await?.is_none() {
        return Err(ApiError::not_found(format!("app {app:?} not found")));
    }
    // Subscribe before copying the recent lines, then skip what the copy
    // already holds: nothing is lost or sent twice in between.
    let mut feed = state.logs.feed.subscribe();
    let recent = state.logs.recent(&tenant.name, &app);
    let seen = recent.last().map_or(0, |(seq, _)| *seq);
    let first: Vec<Result<Bytes, std::io::Error>> =
        recent.iter().map(|(_, l)| Ok(ndjson(l))).collect();
    let headers = [
        (header::CONTENT_TYPE, "application/x-ndjson"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    if !query.follow {
        return Ok((headers, Body::from_stream(futures::stream::iter(first))).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let mut closing = state.closing.subscribe();
    tokio::spawn(async move {
        for item in first {
            if tx.send(item).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                next = feed.recv() => next,
                _ = closing.wait_for(|closed| *closed) => return,
            };
            let (seq, line) = match next {
                Ok(item) => item,
                // Too slow: skip ahead rather than hold lines for it.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if seq <= seen || line.tenant != tenant.name || line.app != app {
                continue;
            }
            if tx.send(Ok(ndjson(&line))).await.is_err() {
                return;
            }
        }
    });
    let mut rx = rx;
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((headers, Body::from_stream(stream)).into_response())
}
