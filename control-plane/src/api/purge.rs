//! `POST /v1/cache/purge`: a tenant removes objects from its own edge-cache
//! partition on every node. The purge is a revision like any change, so
//! it reaches nodes in the next delta of their watch stream; the answer
//! waits (a bounded time) until every live node has applied it, and names
//! the nodes that have not.
//!
//! The tenant comes from the token, never from the body: a purge can only
//! ever name the caller's own partition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use outpost_proto::{CachePurge, ErrorBody, PurgeResult};
use serde::Deserialize;

use super::auth::TenantAuth;
use super::error::{ApiError, ApiResult};
use super::{ApiState, JsonBody, QueryParams};

/// Purges one tenant may make per [`PURGE_WINDOW`] on one control plane:
/// each is a revision every node applies, so a flood would slow every
/// tenant's changes. Fastly-style purge-on-publish stays well inside it.
pub const MAX_PURGES_PER_WINDOW: u32 = 600;
/// The window.
pub const PURGE_WINDOW: Duration = Duration::from_secs(60);

/// How long the answer waits for the fleet by default, and at most.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);
const MAX_WAIT: Duration = Duration::from_secs(60);

/// How often the fleet is looked at while waiting, besides whenever a
/// node of this control plane reports: nodes following another control
/// plane sharing the store are seen only as it publishes them.
const POLL: Duration = Duration::from_millis(50);

/// A URL to purge is at most this long (as a URL a worker can fetch).
const MAX_URL_BYTES: usize = 8192;
/// A surrogate key is at most this long.
const MAX_KEY_BYTES: usize = 256;

/// Purges per tenant in the current window.
#[derive(Default)]
pub struct PurgeLimiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl PurgeLimiter {
    /// Counts one purge of `tenant` at `now`, or `Err(wait)` if its
    /// window is full.
    fn take(&self, tenant: &str, now: Instant) -> Result<(), Duration> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded by the number of tenants that purged in the window.
        windows.retain(|_, (start, _)| now < *start + PURGE_WINDOW);
        let entry = windows.entry(tenant.to_string()).or_insert((now, 0));
        if entry.1 >= MAX_PURGES_PER_WINDOW {
            return Err(entry.0 + PURGE_WINDOW - now);
        }
        entry.1 += 1;
        Ok(())
    }
}

/// Query of the purge request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeQuery {
    /// Milliseconds to wait for every live node (0: answer at once).
    wait_ms: Option<u64>,
}

/// Refuses a purge that names nothing a node could have stored.
fn check(purge: &CachePurge) -> ApiResult<()> {
    let bad = |message: String| Err(ApiError::bad_request("bad_purge", message));
    match purge {
        CachePurge::All {} => Ok(()),
        CachePurge::Url { url } => {
            if url.len() > MAX_URL_BYTES {
                return bad(format!("the URL is longer than {MAX_URL_BYTES} bytes"));
            }
            let parsed: axum::http::Uri = match url.parse() {
                Ok(u) => u,
                Err(e) => return bad(format!("{url:?} is not a URL: {e}")),
            };
            match (parsed.scheme_str(), parsed.host()) {
                (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(()),
                _ => bad(format!(
                    "{url:?} must be an absolute http:// or https:// URL, as the worker fetched it"
                )),
            }
        }
        CachePurge::SurrogateKey { key } => {
            if key.is_empty()
                || key.len() > MAX_KEY_BYTES
                || !key.bytes().all(|b| b.is_ascii_graphic())
            {
                return bad(format!(
                    "a surrogate key is 1-{MAX_KEY_BYTES} visible ASCII characters without spaces (a Surrogate-Key header lists several, space-separated)"
                ));
            }
            Ok(())
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/cache/purge",
    tag = "cache",
    request_body = CachePurge,
    params(("wait_ms" = Option<u64>, Query, description = "Milliseconds to wait for every live node to apply the purge (default 10000, at most 60000; 0: do not wait)")),
    responses((status = 200, body = PurgeResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn purge(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    QueryParams(query): QueryParams<PurgeQuery>,
    JsonBody(purge): JsonBody<CachePurge>,
) -> ApiResult<Json<PurgeResult>> {
    check(&purge)?;
    let wait = query
        .wait_ms
        .map_or(DEFAULT_WAIT, Duration::from_millis)
        .min(MAX_WAIT);
    if let Err(retry) = state.purge_limiter.take(&tenant.name, Instant::now()) {
        return Err(ApiError::purge_rate(MAX_PURGES_PER_WINDOW, retry));
    }
    let (name, recorded) = (tenant.name.clone(), purge.clone());
    let started = Instant::now();
    let revision = state
        .mutate(move |s| s.purge_cache(&name, recorded))
        .await?;
    let deadline = started + wait;
    let rollout = loop {
        // Listening before looking: a report landing in between wakes us.
        let reported = state.reports.notified();
        tokio::pin!(reported);
        reported.as_mut().enable();
        let rollout = super::nodes::rollout_at(&state, revision, Some(&tenant.name)).await;
        let now = Instant::now();
        if rollout.lagging.is_empty() || now >= deadline {
            break rollout;
        }
        let _ = tokio::time::timeout(POLL.min(deadline - now), reported).await;
    };
    state.metrics.purged(&tenant.name);
    Ok(Json(PurgeResult {
        purge,
        revision,
        rollout,
        waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_past_its_window_waits_and_others_do_not() {
        let limiter = PurgeLimiter::default();
        let now = Instant::now();
        for _ in 0..MAX_PURGES_PER_WINDOW {
            limiter.take("acme", now).unwrap();
        }
        let wait = limiter.take("acme", now).unwrap_err();
        assert_eq!(wait, PURGE_WINDOW);
        limiter.take("rival", now).unwrap();
        limiter.take("acme", now + PURGE_WINDOW).unwrap();
    }

    #[test]
    fn purges_must_name_something_a_node_could_hold() {
        let url = |u: &str| CachePurge::Url { url: u.into() };
        let key = |k: &str| CachePurge::SurrogateKey { key: k.into() };
        for ok in [
            url("https://origin.example/a?b=1"),
            url("http://origin.example:8080/"),
            key("product-1"),
            CachePurge::All {},
        ] {
            check(&ok).unwrap();
        }
        for bad in [
            url("/relative"),
            url("ftp://origin.example/a"),
            url("not a url"),
            url(&format!("https://o.example/{}", "a".repeat(MAX_URL_BYTES))),
            key(""),
            key("two keys"),
            key(&"k".repeat(MAX_KEY_BYTES + 1)),
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
    }
}
