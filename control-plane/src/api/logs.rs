//! Guest output, from the nodes to `outpost logs`: nodes post batches of
//! lines (`POST /v1/nodes/{node}/logs`), the control plane keeps the last
//! [`RECENT_LINES`] per app in memory and fans new ones out to followers
//! (`GET /v1/apps/{app}/logs?follow=true`, NDJSON). Memory is bounded:
//! per app by lines and bytes, and a deleted app's lines go with it.
//!
//! Tenants are kept apart here as everywhere: each app has its own fan-out
//! channel (made when the first follower comes, dropped when the last one
//! is gone or the app is deleted), so a flood of one tenant's lines makes
//! only that app's followers skip lines, never another tenant's. Follow
//! streams hold a task's worth of memory and a connection each for as
//! long as the client likes, so each tenant may hold
//! [`FOLLOWERS_PER_TENANT`] at once (429 `too_many_followers` past it) and
//! all tenants together [`MAX_FOLLOWERS`] (503 `followers_busy`), both
//! with `Retry-After`. A stream gives its place back when it ends: the
//! client goes away, the app is deleted or the server shuts down.
//!
//! Deliberately not a log store: lines live in memory only, a restart
//! forgets them, and a follower that reads too slowly skips lines rather
//! than holding memory. Operators who need retention ship the nodes'
//! `outpost::guest` tracing target to their log pipeline.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use outpost_proto::{ErrorBody, GuestLogLine};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};

use super::auth::{NodeAuth, TenantAuth};
use super::error::{ApiError, ApiResult};
use super::slots::{TenantSlot, TenantSlots};
use super::{ApiState, JsonList, QueryParams, check_name};

/// Lines kept per app for a new reader…
pub const RECENT_LINES: usize = 1000;
/// …and bytes of text, whichever bound comes first.
pub const RECENT_BYTES: usize = 256 * 1024;
/// Lines in flight to one app's followers; a follower further behind
/// skips ahead. Held only until every follower has read them.
const FOLLOW_BUFFER: usize = 1024;
/// Follow streams one tenant may hold open at once: enough for a few
/// terminals per app being debugged, far from a way to pin the server.
pub const FOLLOWERS_PER_TENANT: usize = 8;
/// Follow streams open at once across all tenants.
pub const MAX_FOLLOWERS: usize = 1024;
/// Most lines one post may carry.
const MAX_BATCH: usize = 5000;

type Line = Arc<GuestLogLine>;

/// One app's recent lines and, while someone follows it, its feed.
#[derive(Default)]
struct AppLog {
    lines: VecDeque<Line>,
    /// Bytes of text in `lines`.
    bytes: usize,
    feed: Option<broadcast::Sender<Line>>,
}

/// Recent lines and followers' feeds per app, and the follower caps.
pub struct LogHub {
    apps: std::sync::Mutex<HashMap<(String, String), AppLog>>,
    followers_per_tenant: Arc<TenantSlots>,
    followers: Arc<Semaphore>,
}

impl Default for LogHub {
    fn default() -> Self {
        LogHub {
            apps: Default::default(),
            followers_per_tenant: TenantSlots::new(FOLLOWERS_PER_TENANT),
            followers: Arc::new(Semaphore::new(MAX_FOLLOWERS)),
        }
    }
}

/// A follow stream's place under both caps, given back on drop.
struct FollowSlot {
    _tenant: TenantSlot,
    _global: OwnedSemaphorePermit,
}

impl LogHub {
    fn add(&self, line: GuestLogLine) {
        let line = Arc::new(line);
        let mut apps = self.apps.lock().unwrap();
        let log = apps
            .entry((line.tenant.clone(), line.app.clone()))
            .or_default();
        log.bytes += line.text.len();
        log.lines.push_back(line.clone());
        while log.lines.len() > RECENT_LINES || log.bytes > RECENT_BYTES {
            let Some(old) = log.lines.pop_front() else {
                break;
            };
            log.bytes -= old.text.len();
        }
        // Sent under the lock, like `follow` subscribes under it: a
        // follower gets every line after its copy of the recent ones,
        // none twice. An error means the last follower left.
        if let Some(feed) = &log.feed
            && feed.send(line).is_err()
        {
            log.feed = None;
        }
    }

    fn recent(&self, tenant: &str, app: &str) -> Vec<Line> {
        self.apps
            .lock()
            .unwrap()
            .get(&(tenant.to_string(), app.to_string()))
            .map(|log| log.lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The app's recent lines and a feed of every later one, with nothing
    /// lost or repeated in between.
    fn follow(&self, tenant: &str, app: &str) -> (Vec<Line>, broadcast::Receiver<Line>) {
        let mut apps = self.apps.lock().unwrap();
        let log = apps
            .entry((tenant.to_string(), app.to_string()))
            .or_default();
        let feed = log
            .feed
            .get_or_insert_with(|| broadcast::Sender::new(FOLLOW_BUFFER))
            .subscribe();
        (log.lines.iter().cloned().collect(), feed)
    }

    /// A place for one more follow stream of `tenant`.
    fn follow_slot(&self, tenant: &str) -> ApiResult<FollowSlot> {
        let tenant = self
            .followers_per_tenant
            .take(tenant)
            .map_err(ApiError::too_many_followers)?;
        let global = self
            .followers
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::followers_busy())?;
        Ok(FollowSlot {
            _tenant: tenant,
            _global: global,
        })
    }

    /// Drops a deleted app's lines; its followers' streams end.
    pub(crate) fn forget(&self, tenant: &str, app: &str) {
        self.apps
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
    let headers = [
        (header::CONTENT_TYPE, "application/x-ndjson"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    if !query.follow {
        let recent = state.logs.recent(&tenant.name, &app);
        let body = Body::from_stream(futures::stream::iter(recent.into_iter().map(ndjson_item)));
        return Ok((headers, body).into_response());
    }
    let slot = state.logs.follow_slot(&tenant.name)?;
    let (recent, feed) = state.logs.follow(&tenant.name, &app);
    let follower = Follower {
        feed,
        closing: state.closing.subscribe(),
        _slot: slot,
    };
    // No task of its own: the stream (with its slot) lives in the response
    // body, so it is dropped, and its place given back, as soon as hyper
    // drops the body for a client that went away.
    let live = futures::stream::unfold(follower, |mut follower| async move {
        let line = follower.next().await?;
        Some((ndjson_item(line), follower))
    });
    let stream = futures::StreamExt::chain(
        futures::stream::iter(recent.into_iter().map(ndjson_item)),
        live,
    );
    Ok((headers, Body::from_stream(stream)).into_response())
}

fn ndjson_item(line: Line) -> Result<Bytes, std::io::Error> {
    Ok(ndjson(&line))
}

/// One follow stream's state.
struct Follower {
    feed: broadcast::Receiver<Line>,
    closing: watch::Receiver<bool>,
    _slot: FollowSlot,
}

impl Follower {
    /// The next line, or `None` when the stream should end (the app was
    /// deleted or the server is shutting down).
    async fn next(&mut self) -> Option<Line> {
        loop {
            let next = tokio::select! {
                next = self.feed.recv() => next,
                _ = self.closing.wait_for(|closed| *closed) => return None,
            };
            match next {
                Ok(line) => return Some(line),
                // Too slow: skip ahead rather than hold lines for it.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(app: &str, text: &str) -> GuestLogLine {
        line_of("acme", app, text)
    }

    fn line_of(tenant: &str, app: &str, text: &str) -> GuestLogLine {
        GuestLogLine {
            tenant: tenant.into(),
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
        assert_eq!(kept[0].text, "10");
        let big = "x".repeat(4096);
        for _ in 0..100 {
            hub.add(line("big", &big));
        }
        assert_eq!(hub.recent("acme", "big").len(), RECENT_BYTES / 4096);
        hub.forget("acme", "web");
        assert!(hub.recent("acme", "web").is_empty());
        assert_eq!(hub.recent("acme", "big").len(), RECENT_BYTES / 4096);
    }

    /// Every line a follower can still get, in order; a lag is a failure.
    fn drain(feed: &mut broadcast::Receiver<Line>) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            match feed.try_recv() {
                Ok(line) => got.push(line.text.clone()),
                Err(broadcast::error::TryRecvError::Empty) => return got,
                Err(e) => panic!("the follower lost lines: {e:?}"),
            }
        }
    }

    #[test]
    fn a_flood_in_one_tenants_app_never_makes_another_tenants_follower_skip() {
        let hub = LogHub::default();
        hub.add(line_of("beta", "web", "before"));
        let (recent, mut beta) = hub.follow("beta", "web");
        let (_, mut acme) = hub.follow("acme", "web");
        assert_eq!(recent.len(), 1);
        for i in 0..10 {
            hub.add(line_of("beta", "web", &format!("b{i}")));
            for _ in 0..FOLLOW_BUFFER * 2 {
                hub.add(line_of("acme", "web", "flood"));
            }
        }
        let want: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
        assert_eq!(drain(&mut beta), want);
        // acme's own follower is the one that falls behind.
        assert!(matches!(
            acme.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }

    #[test]
    fn feeds_go_when_their_followers_or_their_app_do() {
        let hub = LogHub::default();
        let (_, feed) = hub.follow("acme", "web");
        drop(feed);
        hub.add(line("web", "nobody follows"));
        assert!(
            hub.apps.lock().unwrap()[&("acme".into(), "web".into())]
                .feed
                .is_none()
        );
        let (_, mut feed) = hub.follow("acme", "web");
        hub.forget("acme", "web");
        assert!(matches!(
            feed.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
    }

    #[test]
    fn follow_slots_are_capped_per_tenant_and_in_total() {
        let hub = LogHub::default();
        let acme: Vec<_> = (0..FOLLOWERS_PER_TENANT)
            .map(|_| hub.follow_slot("acme").unwrap())
            .collect();
        let refused = hub.follow_slot("acme").err().unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        drop(acme);
        let mut held = Vec::new();
        for t in 0..MAX_FOLLOWERS / FOLLOWERS_PER_TENANT {
            for _ in 0..FOLLOWERS_PER_TENANT {
                held.push(hub.follow_slot(&format!("t{t}")).unwrap());
            }
        }
        // A tenant refused by the total keeps no place of its own: after
        // more refusals than its own cap, it still gets in once room is made.
        for _ in 0..=FOLLOWERS_PER_TENANT {
            let refused = hub.follow_slot("late").err().unwrap();
            assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        drop(held.pop());
        assert!(hub.follow_slot("late").is_ok());
    }
}
