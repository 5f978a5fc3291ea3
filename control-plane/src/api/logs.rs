//! Guest output, from the nodes to `outpost logs`: nodes post batches of
//! lines (`POST /v1/nodes/{node}/logs`), the control plane keeps the last
//! [`RECENT_LINES`] per app in memory and fans new ones out to followers
//! (`GET /v1/apps/{app}/logs?follow=true`, NDJSON). Memory is bounded:
//! per app by lines and bytes, and a deleted app's lines go with it.
//!
//! Deliberately not a log store: lines live in memory only, a restart
//! forgets them, and a follower that reads too slowly skips lines rather
//! than holding memory. Operators who need retention ship the nodes'
//! `outpost::guest` tracing target to their log pipeline.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_proto::{ErrorBody, GuestLogLine};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::auth::{NodeAuth, TenantAuth};
use super::error::{ApiError, ApiResult};
use super::{ApiState, JsonList, QueryParams, check_name};

/// Lines kept per app for a new reader…
pub const RECENT_LINES: usize = 1000;
/// …and bytes of text, whichever bound comes first.
pub const RECENT_BYTES: usize = 256 * 1024;
/// Lines in flight to followers; a follower further behind skips ahead.
const FOLLOW_BUFFER: usize = 4096;
/// Most lines one post may carry.
const MAX_BATCH: usize = 5000;

type Line = (u64, Arc<GuestLogLine>);

/// One app's recent lines and the bytes of text they hold.
#[derive(Default)]
struct Ring {
    lines: VecDeque<Line>,
    bytes: usize,
}

/// Recent lines per app and the feed followers subscribe to.
pub struct LogHub {
    next: AtomicU64,
    recent: std::sync::Mutex<HashMap<(String, String), Ring>>,
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
            ring.bytes += line.text.len();
            ring.lines.push_back((seq, line.clone()));
            while ring.lines.len() > RECENT_LINES || ring.bytes > RECENT_BYTES {
                let Some((_, old)) = ring.lines.pop_front() else {
                    break;
                };
                ring.bytes -= old.text.len();
            }
        }
        // No followers is fine.
        let _ = self.feed.send((seq, line));
    }

    fn recent(&self, tenant: &str, app: &str) -> Vec<Line> {
        self.recent
            .lock()
            .unwrap()
            .get(&(tenant.to_string(), app.to_string()))
            .map(|ring| ring.lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops a deleted app's lines.
    pub(crate) fn forget(&self, tenant: &str, app: &str) {
        self.recent
            .lock()
            .unwrap()
            .remove(&(tenant.to_string(), app.to_string()));
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
    JsonList(lines): JsonList<GuestLogLine>,
) -> ApiResult<StatusCode> {
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
    QueryParams(query): QueryParams<LogsQuery>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(app: &str, text: &str) -> GuestLogLine {
        GuestLogLine {
            tenant: "acme".into(),
            app: app.into(),
            node: "edge-1".into(),
            request_id: 1,
            stream: "stdout".into(),
            text: text.into(),
            time_ms: 0,
        }
    }

    #[test]
    fn rings_are_bounded_by_lines_and_bytes_and_forgotten_with_their_app() {
        let hub = LogHub::default();
        for i in 0..RECENT_LINES + 10 {
            hub.add(line("web", &i.to_string()));
        }
        let kept = hub.recent("acme", "web");
        assert_eq!(kept.len(), RECENT_LINES);
        assert_eq!(kept[0].1.text, "10");
        let big = "x".repeat(4096);
        for _ in 0..100 {
            hub.add(line("big", &big));
        }
        assert_eq!(hub.recent("acme", "big").len(), RECENT_BYTES / 4096);
        hub.forget("acme", "web");
        assert!(hub.recent("acme", "web").is_empty());
        assert_eq!(hub.recent("acme", "big").len(), RECENT_BYTES / 4096);
    }
}
