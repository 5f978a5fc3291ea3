//! The edge cache: workers' GET and HEAD fetches to their origins, kept
//! on the node and served again while HTTP says they may be (RFC 9111).
//!
//! The semantics (freshness, `Vary`, validators, `no-store`, `private`,
//! `s-maxage`, `Age`) are `http-cache-semantics`', as a shared cache
//! sees them; this module decides what is looked up, stored and served,
//! and keeps it apart per tenant:
//!
//! - Every object lives in its tenant's partition ([`store`]); a lookup
//!   never crosses partitions, so two tenants fetching the same URL each
//!   get their own object, and each has its own byte budget.
//! - What a request may not share is never stored or served from the
//!   cache: requests with `Range` or conditional headers of the guest's
//!   own, requests with a body, and responses setting cookies go straight
//!   to the origin (`x-cache: BYPASS` or an unstored `MISS`).
//! - A stale object whose response said `stale-while-revalidate` is
//!   served at once while one background fetch refreshes it; one that
//!   said `stale-if-error` stands in for a failing origin.
//! - Concurrent misses for one key wait for a single origin fetch
//!   ([`flight`]), bounded in number and in time.
//! - Purges (by URL, surrogate key or everything) come from the control
//!   plane; a node that may have missed one empties the cache.
//!
//! The guest sees `x-cache: HIT | MISS | STALE | REVALIDATED | BYPASS` on
//! every GET or HEAD response (set here, so an origin cannot fake it).
//! What it deliberately is not: a disk tier, or a cache of the node's own
//! incoming traffic — it sits on the worker's outbound path only.

mod flight;
mod metrics;
mod store;
mod verdict;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt as _, Empty, Full};
use http_cache_semantics::{AfterResponse, CacheOptions, CachePolicy};
use outpost_proto::CachePurge;
use serde::Deserialize;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

pub use metrics::CacheMetrics;
pub use verdict::Verdict;

use flight::{Flights, Role};
use store::{Key, Lookup, Object, Store};

/// A response head and body as the guest receives it, and the future
/// that drives its connection (see `outbound::exchange`).
pub(crate) type Exchanged = crate::outbound::Exchanged;

/// Sends one request to the origin (allow-list and address checks done).
pub(crate) type Origin =
    dyn Fn(Request<WasiBody>) -> BoxFuture<'static, Result<Exchanged, HttpError>> + Send + Sync;

/// The response header a guest reads the cache's verdict from.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The response header naming an object's surrogate keys
/// (space-separated, as Fastly's).
pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");

/// Request headers that make a request the guest's own business: ranges
/// (this cache stores whole responses only) and validators of the guest's
/// (a 304 meant for it is not a response to store or share).
const BYPASS_HEADERS: [HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// The node's `[cache]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether workers' GET and HEAD fetches go through the cache.
    /// Default: true.
    pub enabled: bool,
    /// Bytes the whole cache holds at most (bodies, headers and ~512
    /// bytes of bookkeeping per object). Past it, the tenant holding the
    /// most gives up its least recently used objects. Default: 256 MiB.
    pub budget_bytes: u64,
    /// Bytes one tenant's objects take at most; past it, that tenant's
    /// own least recently used objects go. Default: 64 MiB.
    pub tenant_budget_bytes: u64,
    /// Largest response body stored; larger ones pass through to the
    /// worker unstored. Default: 8 MiB.
    pub max_object_bytes: u64,
    /// How long a request waits for another request's origin fetch of
    /// the same URL before going to the origin itself, in milliseconds.
    /// Default: 5000.
    pub coalesce_timeout_ms: u64,
    /// Requests that may wait on one origin fetch; more go to the origin
    /// themselves. Default: 1024.
    pub max_waiters: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            budget_bytes: 256 * 1024 * 1024,
            tenant_budget_bytes: 64 * 1024 * 1024,
            max_object_bytes: 8 * 1024 * 1024,
            coalesce_timeout_ms: 5000,
            max_waiters: 1024,
        }
    }
}

impl CacheConfig {
    /// A cache that stores nothing (the runtime's state until a node
    /// configures it: the control plane never caches).
    pub fn off() -> CacheConfig {
        CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        }
    }

    /// Every problem with the settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.budget_bytes == 0 {
            out.push("cache.budget_bytes must be greater than 0".into());
        }
        if self.tenant_budget_bytes == 0 || self.tenant_budget_bytes > self.budget_bytes {
            out.push(
                "cache.tenant_budget_bytes must be greater than 0 and at most cache.budget_bytes"
                    .into(),
            );
        }
        if self.max_object_bytes == 0 || self.max_object_bytes > self.tenant_budget_bytes {
            out.push(
                "cache.max_object_bytes must be greater than 0 and at most cache.tenant_budget_bytes"
                    .into(),
            );
        }
        if self.coalesce_timeout_ms == 0 {
            out.push("cache.coalesce_timeout_ms must be greater than 0".into());
        }
        out
    }
}

/// The node's edge cache.
pub struct EdgeCache {
    config: Mutex<CacheConfig>,
    store: Mutex<Store>,
    flights: Arc<Flights>,
    metrics: CacheMetrics,
}

impl std::fmt::Debug for EdgeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeCache")
            .field("config", &self.config())
            .finish_non_exhaustive()
    }
}

impl EdgeCache {
    /// A cache that is off until [configured](EdgeCache::configure).
    pub fn new(metrics: CacheMetrics) -> EdgeCache {
        let config = CacheConfig::off();
        EdgeCache {
            store: Mutex::new(Store::new(config.budget_bytes, config.tenant_budget_bytes)),
            config: Mutex::new(config),
            flights: Arc::default(),
            metrics,
        }
    }

    /// Applies `config`. New budgets start from an empty cache.
    pub fn configure(&self, config: CacheConfig) {
        let mut store = self.lock();
        for tenant in store.clear() {
            self.metrics.set_stored(&tenant, 0);
        }
        *store = Store::new(config.budget_bytes, config.tenant_budget_bytes);
        self.metrics.set_budget(if config.enabled {
            config.budget_bytes
        } else {
            0
        });
        self.metrics.set_total(0);
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }

    fn config(&self) -> CacheConfig {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes what `purge` names from `tenant`'s partition: how many
    /// objects went.
    pub fn purge(&self, tenant: &str, purge: &CachePurge) -> usize {
        let mut store = self.lock();
        let gone = store.purge(tenant, purge);
        let (total, own) = store.bytes(tenant);
        drop(store);
        self.metrics.purged(tenant, gone);
        self.metrics.set_stored(tenant, own);
        self.metrics.set_total(total);
        gone
    }

    /// Empties the cache: the node may have missed purges (it took a
    /// whole snapshot instead of the deltas that carried them).
    pub fn clear(&self) {
        let mut store = self.lock();
        let tenants = store.clear();
        drop(store);
        for tenant in tenants {
            self.metrics.set_stored(&tenant, 0);
        }
        self.metrics.set_total(0);
    }

    /// Bytes stored in all, and by `tenant`.
    pub fn stored_bytes(&self, tenant: &str) -> (u64, u64) {
        self.lock().bytes(tenant)
    }

    /// Sends `request` (a worker's, for `tenant`) through the cache:
    /// answers it from the cache, or from `origin` and keeps the answer
    /// if HTTP allows.
    pub(crate) async fn send(
        self: &Arc<Self>,
        tenant: &Arc<str>,
        request: Request<WasiBody>,
        origin: Arc<Origin>,
    ) -> Result<Exchanged, HttpError> {
        let config = self.config();
        let head = request.method() == Method::HEAD;
        let url = crate::edge_cache::store::normalize_url(request.uri());
        let (true, true, Some(url)) =
            (config.enabled, head || request.method() == Method::GET, url)
        else {
            return origin(request).await;
        };
        if bypasses(&request) {
            self.metrics.verdict(tenant, Verdict::Bypass);
            return origin(request)
                .await
                .map(|(response, io)| (mark(response, Verdict::Bypass), io));
        }
        let (parts, _empty) = request.into_parts();
        let key = Key { head, url };
        let mut waited = false;
        loop {
            let found = self.lock().lookup(tenant, &key, &parts, SystemTime::now());
            let stale = match found {
                Lookup::Fresh(object, head) => {
                    self.metrics.verdict(tenant, Verdict::Hit);
                    return Ok(answer(head.status, head.headers, &object, Verdict::Hit));
                }
                Lookup::Stale(object, revalidate)
                    if object.usable_while_revalidating(SystemTime::now()) =>
                {
                    // Served stale at once; one request (this one, unless
                    // another is at it already) has the origin asked in
                    // the background.
                    if let Role::Lead(leader) = self.flights.join(tenant, &key, 0) {
                        let (cache, tenant, origin) =
                            (self.clone(), tenant.clone(), origin.clone());
                        let (object, parts) = (object.clone(), parts.clone());
                        tokio::spawn(async move {
                            let _leader = leader;
                            let stale = Some((object, revalidate));
                            if let Ok((_, io)) = cache
                                .fetch(&tenant, key, parts, stale, &*origin, &config)
                                .await
                            {
                                tokio::spawn(Box::into_pin(io));
                            }
                        });
                    }
                    self.metrics.verdict(tenant, Verdict::Stale);
                    return Ok(object.stale_answer(SystemTime::now()));
                }
                Lookup::Stale(object, revalidate) => Some((object, revalidate)),
                Lookup::Miss => None,
            };
            let _leader = match self.flights.join(tenant, &key, config.max_waiters) {
                Role::Wait(waiter) if !waited => {
                    self.metrics.coalesced(tenant);
                    waited = true;
                    waiter
                        .wait(Duration::from_millis(config.coalesce_timeout_ms))
                        .await;
                    continue;
                }
                Role::Lead(leader) => Some(leader),
                Role::Wait(_) | Role::Alone => None,
            };
            return self
                .fetch(tenant, key, parts, stale, &*origin, &config)
                .await;
        }
    }

    /// Goes to the origin for `key`: revalidates `stale` if there is one,
    /// stores what may be stored.
    async fn fetch(
        &self,
        tenant: &Arc<str>,
        key: Key,
        parts: http::request::Parts,
        stale: Option<(Arc<Object>, http::request::Parts)>,
        origin: &Origin,
        config: &CacheConfig,
    ) -> Result<Exchanged, HttpError> {
        let sent = stale
            .as_ref()
            .map_or_else(|| parts.clone(), |(_, revalidate)| revalidate.clone());
        let result = origin(Request::from_parts(sent.clone(), empty())).await;
        let now = SystemTime::now();
        let (response, io) = match result {
            Ok(exchanged) => exchanged,
            Err(e) => {
                return match stale {
                    Some((object, _)) if object.usable_on_error(now) => {
                        self.metrics.verdict(tenant, Verdict::Stale);
                        Ok(object.stale_answer(now))
                    }
                    _ => Err(e),
                };
            }
        };
        if let Some((object, revalidate)) = stale {
            if response.status().is_server_error() && object.usable_on_error(now) {
                tokio::spawn(Box::into_pin(io));
                self.metrics.verdict(tenant, Verdict::Stale);
                return Ok(object.stale_answer(now));
            }
            match object.policy.after_response(&revalidate, &response, now) {
                AfterResponse::NotModified(policy, head) => {
                    // The 304's own body (none) is done with.
                    tokio::spawn(Box::into_pin(io));
                    let renewed = Arc::new(Object::new(
                        policy,
                        head.status,
                        head.headers.clone(),
                        object.body.clone(),
                        object.surrogate_keys.clone(),
                        now,
                    ));
                    self.store(tenant, key, &parts, renewed.clone(), Some(&object));
                    self.metrics.verdict(tenant, Verdict::Revalidated);
                    return Ok(answer(
                        head.status,
                        head.headers,
                        &renewed,
                        Verdict::Revalidated,
                    ));
                }
                AfterResponse::Modified(..) => {
                    self.lock().remove(tenant, &key, &object);
                }
            }
        }
        self.metrics.verdict(tenant, Verdict::Miss);
        let policy = CachePolicy::new_options(&parts, &response, now, CacheOptions::default());
        if !worth_storing(&policy, &response, config.max_object_bytes, now) {
            return Ok((mark(response, Verdict::Miss), io));
        }
        // The body is read here, so the connection is driven here too.
        tokio::spawn(Box::into_pin(io));
        let (head, body) = response.into_parts();
        match read_up_to(body, config.max_object_bytes).await {
            Read::Whole(bytes) => {
                let object = Arc::new(Object::new(
                    policy,
                    head.status,
                    head.headers.clone(),
                    bytes,
                    surrogate_keys(&head.headers),
                    now,
                ));
                self.store(tenant, key, &parts, object.clone(), None);
                Ok(answer(head.status, head.headers, &object, Verdict::Miss))
            }
            Read::Partial(prefix, rest) => {
                let body = Prefixed { prefix, rest }.boxed_unsync();
                Ok((
                    mark(Response::from_parts(head, body), Verdict::Miss),
                    Box::new(async { Ok(()) }),
                ))
            }
        }
    }

    fn store(
        &self,
        tenant: &Arc<str>,
        key: Key,
        parts: &http::request::Parts,
        object: Arc<Object>,
        replaces: Option<&Arc<Object>>,
    ) {
        let mut store = self.lock();
        if let Some(old) = replaces {
            store.remove(tenant, &key, old);
        }
        let evicted = store.insert(tenant, key, parts, object, SystemTime::now());
        let totals: Vec<(String, u64)> = evicted
            .iter()
            .map(|(t, _)| (t.to_string(), store.bytes(t).1))
            .chain(std::iter::once((tenant.to_string(), store.bytes(tenant).1)))
            .collect();
        let total = store.bytes(tenant).0;
        drop(store);
        for (victim, n) in evicted {
            self.metrics.evicted(&victim, n);
        }
        for (t, bytes) in totals {
            self.metrics.set_stored(&t, bytes);
        }
        self.metrics.set_total(total);
    }
}

/// Whether a GET or HEAD is the guest's own business rather than the
/// cache's: a range or a validator of its own, or a body.
fn bypasses(request: &Request<WasiBody>) -> bool {
    use http_body::Body as _;
    BYPASS_HEADERS
        .iter()
        .any(|h| request.headers().contains_key(h))
        || !(request.body().is_end_stream() || request.body().size_hint().exact() == Some(0))
}

/// Whether a fresh origin response is worth keeping: storable for a
/// shared cache, sets no cookie (a cookie is one user's, whatever the
/// origin says about caching), small enough, and either fresh for a while
/// or revalidatable.
fn worth_storing(
    policy: &CachePolicy,
    response: &Response<WasiBody>,
    max_bytes: u64,
    now: SystemTime,
) -> bool {
    let headers = response.headers();
    let too_big = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len > max_bytes);
    let validators =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    policy.is_storable()
        && !headers.contains_key(header::SET_COOKIE)
        && !too_big
        && (!policy.time_to_live(now).is_zero() || validators)
}

fn surrogate_keys(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SURROGATE_KEY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_whitespace)
        .map(String::from)
        .collect()
}

/// Seconds of directive `name` (`stale-if-error`,
/// `stale-while-revalidate`; RFC 5861) in a response's `Cache-Control`.
fn stale_directive(headers: &HeaderMap, name: &str) -> Option<Duration> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|d| {
            let (directive, value) = d.trim().split_once('=')?;
            directive
                .trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().trim_matches('"').parse().ok())?
        })
        .map(Duration::from_secs)
}

impl Object {
    /// Whether this stale object may stand in for an origin that failed:
    /// its response said `stale-if-error`, and it has not been stale for
    /// longer than that.
    fn usable_on_error(&self, now: SystemTime) -> bool {
        self.stale_within(now, "stale-if-error")
    }

    /// Whether this stale object may be served while the origin is asked
    /// again in the background: its response said
    /// `stale-while-revalidate`, and it has not been stale for longer.
    fn usable_while_revalidating(&self, now: SystemTime) -> bool {
        self.stale_within(now, "stale-while-revalidate")
    }

    fn stale_within(&self, now: SystemTime, directive: &str) -> bool {
        stale_directive(&self.headers, directive).is_some_and(|grace| {
            now.duration_since(self.stale_since)
                .is_ok_and(|late| late <= grace)
        })
    }

    /// This object served stale: its stored head with an up-to-date `Age`.
    fn stale_answer(&self, now: SystemTime) -> Exchanged {
        let mut headers = self.headers.clone();
        if let Ok(age) = HeaderValue::from_str(&self.policy.age(now).as_secs().to_string()) {
            headers.insert(header::AGE, age);
        }
        answer(self.status, headers, self, Verdict::Stale)
    }
}

/// The guest's response from a stored object.
fn answer(status: StatusCode, headers: HeaderMap, object: &Object, verdict: Verdict) -> Exchanged {
    let mut response = Response::new(
        Full::new(object.body.clone())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    (
        mark(response, verdict),
        Box::new(async { Ok::<(), HttpError>(()) }),
    )
}

/// Sets `x-cache` (replacing any the origin sent: only the node says).
fn mark(mut response: Response<WasiBody>, verdict: Verdict) -> Response<WasiBody> {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(verdict.header()));
    response
}

fn empty() -> WasiBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

enum Read {
    /// The whole body, within the cap.
    Whole(Bytes),
    /// Over the cap (or with trailers): what was read, and the rest.
    Partial(VecDeque<Frame<Bytes>>, WasiBody),
}

/// Reads `body` whole if it is at most `cap` bytes of data and has no
/// trailers.
async fn read_up_to(mut body: WasiBody, cap: u64) -> Read {
    let mut frames = VecDeque::new();
    let mut len = 0u64;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                let data = frame.data_ref().map(|d| d.len() as u64);
                frames.push_back(frame);
                match data {
                    Some(n) => len += n,
                    None => return Read::Partial(frames, body),
                }
                if len > cap {
                    return Read::Partial(frames, body);
                }
            }
            Some(Err(e)) => {
                let failed = futures::stream::once(async move { Err(e) });
                return Read::Partial(
                    frames,
                    http_body_util::StreamBody::new(failed).boxed_unsync(),
                );
            }
        }
    }
    let mut whole = bytes::BytesMut::with_capacity(len as usize);
    for frame in frames {
        if let Ok(data) = frame.into_data() {
            whole.extend_from_slice(&data);
        }
    }
    Read::Whole(whole.freeze())
}

/// A body that yields `prefix` (frames already read) and then `rest`.
struct Prefixed {
    prefix: VecDeque<Frame<Bytes>>,
    rest: WasiBody,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        match self.prefix.pop_front() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bad_settings_are_all_reported() {
        assert!(CacheConfig::default().problems().is_empty());
        let bad = CacheConfig {
            budget_bytes: 10,
            tenant_budget_bytes: 20,
            max_object_bytes: 0,
            coalesce_timeout_ms: 0,
            ..CacheConfig::default()
        };
        assert_eq!(bad.problems().len(), 3, "{:?}", bad.problems());
    }

    #[test]
    fn stale_if_error_is_read_from_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=1, Stale-If-Error=30"),
        );
        assert_eq!(
            stale_directive(&h, "stale-if-error"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(stale_directive(&h, "stale-while-revalidate"), None);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
        assert_eq!(stale_directive(&h, "stale-if-error"), None);
    }
}
