//! One loaded app and the life of a request inside it: admission, a fresh
//! store and instance, the guest's answer (or the limit that stopped it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::Instrument;
use wasmtime::{Engine, PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::breaker::{Breaker, Tripped};
use super::code::{Code, ModuleFile, Pre};
use super::guest_log::{GuestLog, LogLine, RequestOutput};
use super::host::{HostState, OutboundPolicy};
use super::lanes::{Demotion, Lanes, Standing};
use super::limits::{KillReason, Limits};
use super::share::{Refusal, Slot, Slots};
use crate::body::{
    Body, CancelGuard, CancelOnDropBody, CappedResponseBody, ErrorCode, LimitedRequestBody,
    error_response,
};
use crate::metrics::{AppMetrics, Metrics};

/// Everything needed to load an app.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// Owning tenant (`default` in standalone mode).
    pub tenant: String,
    /// App name, unique within the tenant.
    pub name: String,
    /// The component's bytes; may be empty when `module` names its file.
    pub wasm: Vec<u8>,
    /// The file the component was read from (or can be), if any. With one,
    /// and the node's compile cache, the app's code is loaded on demand
    /// and may be evicted (see [`crate::code`]); without, it stays loaded.
    pub module: Option<ModuleFile>,
    /// Limits for each of its requests.
    pub limits: Limits,
    /// Environment variables the guest sees through `wasi:cli/environment`.
    pub env: Vec<(String, String)>,
    /// Hosts (`host`, meaning ports 80 and 443, or `host:port`) the guest
    /// may call over `wasi:http/outgoing-handler`; empty: none.
    pub allow_outbound: Vec<String>,
    /// Its tenant is disabled: the node answers its routes itself (403
    /// `tenant_disabled`) and never loads it; `wasm` may be empty.
    pub disabled: bool,
}

/// A compiled, ready-to-serve app.
pub struct App {
    tenant: String,
    name: String,
    fingerprint: [u8; 32],
    code: Code,
    engine: Engine,
    limits: Limits,
    env: Vec<(String, String)>,
    permits: Arc<Semaphore>,
    metrics: AppMetrics,
    log: Arc<GuestLog>,
    outbound: Arc<OutboundPolicy>,
    lanes: Arc<Lanes>,
    standing: Standing,
    /// Off when the node turned throttling off.
    breaker: Option<Breaker>,
    /// The node's instance slots, and how long a request waits for one.
    slots: (Arc<Slots>, Duration),
    /// `tenant`, as the slots key it.
    tenant_key: Arc<str>,
}

/// How a request's instance ended, when it ended without the guest
/// answering (or after it answered, for the metrics).
#[derive(Debug)]
enum Outcome {
    /// The handler returned normally.
    Returned,
    /// A limit stopped it.
    Killed(KillReason),
    /// The guest trapped on its own (a bug, not a limit).
    Trapped(String),
    /// Anything else: the host failed to set the request up.
    Failed(String),
}

/// Node-unique request ids, for correlating guest log lines.
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

impl AppSpec {
    /// Identifies everything that makes an app behave as it does: the
    /// component, its limits and its environment. Two specs with the same
    /// fingerprint can share one compiled app.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.module_digest());
        h.update(
            format!(
                "{:?}\0{:?}\0{:?}\0{}",
                self.limits, self.env, self.allow_outbound, self.disabled
            )
            .as_bytes(),
        );
        h.finalize().into()
    }

    /// The sha256 of the component: its file's digest when it has one,
    /// else of `wasm`.
    pub fn module_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        match &self.module {
            Some(module) => module.sha256,
            None => Sha256::digest(&self.wasm).into(),
        }
    }
}

impl App {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        spec: AppSpec,
        code: Code,
        engine: Engine,
        metrics: &Metrics,
        log_ship: Arc<super::log_ship::ShipQueue>,
        lanes: Arc<Lanes>,
        (network, cache): (
            Arc<crate::outbound::Network>,
            Arc<crate::edge_cache::EdgeCache>,
        ),
        slots: (Arc<Slots>, Duration),
    ) -> Arc<App> {
        let app_metrics = metrics.app(&spec.tenant, &spec.name);
        let log = Arc::new(
            GuestLog::new(
                &spec.tenant,
                &spec.name,
                app_metrics.guest_log_dropped.clone(),
            )
            .shipping_to(log_ship, app_metrics.guest_log_unshipped.clone()),
        );
        let outbound = Arc::new(
            OutboundPolicy::new(
                &spec.allow_outbound,
                spec.limits.max_subrequests,
                spec.limits.timeout,
                network,
                app_metrics.subrequests.clone(),
            )
            .caching(cache, &spec.tenant),
        );
        let standing = Standing::new(
            app_metrics.demotions.clone(),
            app_metrics.background_requests.clone(),
        );
        Arc::new(App {
            breaker: lanes.breaker().map(Breaker::new),
            lanes,
            standing,
            fingerprint: spec.fingerprint(),
            outbound,
            permits: Arc::new(Semaphore::new(spec.limits.max_concurrency as usize)),
            slots,
            tenant_key: Arc::from(spec.tenant.as_str()),
            tenant: spec.tenant,
            name: spec.name,
            code,
            engine,
            limits: spec.limits,
            env: spec.env,
            metrics: app_metrics,
            log,
        })
    }

    /// The owning tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// See [`AppSpec::fingerprint`].
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The limits its requests run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The app's series.
    pub fn metrics(&self) -> &AppMetrics {
        &self.metrics
    }

    /// The guest's most recent stdout/stderr lines.
    pub fn recent_logs(&self) -> Vec<LogLine> {
        self.log.recent()
    }

    /// A store for one request with every limit armed.
    fn new_store(&self, request_id: u64, deadline: Instant) -> Store<HostState> {
        let output = RequestOutput::new(
            self.log.clone(),
            request_id,
            self.limits.max_log_bytes_per_request,
        );
        let state = HostState::new(
            &self.env,
            &output,
            self.limits.memory_bytes,
            self.outbound.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
            .set_fuel(self.limits.fuel)
            .expect("fuel is enabled in the engine config");
        store
            .fuel_async_yield_interval(Some(super::FUEL_YIELD_INTERVAL))
            .expect("fuel and async are enabled in the engine config");
        // Every epoch tick the guest yields to tokio; once the deadline has
        // passed the next tick interrupts it with a trap.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Instantiates once without calling the handler, so a component that
    /// cannot fit its limits (or the pool) is refused at load, not at its
    /// first request.
    pub(super) async fn trial_instantiate(&self, pre: &Pre) -> Result<(), String> {
        let deadline = Instant::now() + self.limits.timeout;
        let mut store = self.new_store(0, deadline);
        let started = Instant::now();
        let result =
            tokio::time::timeout(self.limits.timeout, pre.instantiate_async(&mut store)).await;
        match result {
            Err(_) => Err("instantiation did not finish within the app's timeout".into()),
            Ok(Err(e)) => Err(match classify(&e, &store) {
                Outcome::Killed(reason) => {
                    format!(
                        "instantiation exceeds the app's {} limit: {e:#}",
                        reason.as_str()
                    )
                }
                _ => format!("instantiation failed: {e:#}"),
            }),
            Ok(Ok(_)) => {
                tracing::debug!(
                    app = %self.name,
                    micros = started.elapsed().as_micros() as u64,
                    "trial instantiation"
                );
                Ok(())
            }
        }
    }

    /// Serves one request in a fresh instance and answers with the guest's
    /// response, or with the node's own error naming the limit that stopped
    /// it. Never fails: every outcome is a response.
    pub async fn serve<B>(self: &Arc<Self>, req: Request<B>, scheme: Scheme) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let started = Instant::now();
        // OTel semantic-convention field names, plus tenant and app.
        let span = tracing::debug_span!(
            "request",
            http.request.method = %req.method(),
            url.path = %req.uri().path(),
            tenant = %self.tenant,
            app = %self.name,
        );
        let resp = self.serve_inner(req, scheme).instrument(span).await;
        self.metrics.request(resp.status().as_u16());
        self.metrics
            .request_duration
            .observe(started.elapsed().as_secs_f64());
        resp
    }

    async fn serve_inner<B>(self: &Arc<Self>, req: Request<B>, scheme: Scheme) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let max_body = self.limits.max_request_body_bytes;
        if content_length(req.headers()).is_some_and(|len| len > max_body) {
            self.metrics.kill(KillReason::RequestBody);
            return error_response(
                KillReason::RequestBody.code(),
                &format!("request body exceeds this app's limit of {max_body} bytes"),
            );
        }
        if let Some(breaker) = &self.breaker {
            match breaker.admit(self.lanes.now_ms()) {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(tenant = %self.tenant, app = %self.name, "app no longer throttled");
                }
                Err(wait) => {
                    self.metrics.kill(KillReason::Throttled);
                    // Held before it is answered: a refusal in microseconds
                    // invites a client that retries at once to send ever
                    // more of them, and parsing and answering that flood
                    // costs the neighbours more than the instances it
                    // replaces. A held answer costs a timer.
                    tokio::time::sleep(wait.min(THROTTLE_HOLD)).await;
                    return throttled(wait.saturating_sub(THROTTLE_HOLD));
                }
            }
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.kill(KillReason::Concurrency);
            return too_busy();
        };
        // Loaded before a slot is taken: a cold app's load (a disk read, a
        // recompile if the cache lost it) must not hold an instance slot.
        let pre = match self.code.get().await {
            Ok(pre) => pre,
            Err(_) => {
                return retry_shortly(
                    ErrorCode::AppUnavailable,
                    "the app's code cannot be loaded on this node right now",
                );
            }
        };
        let (slots, wait) = &self.slots;
        let wait_until = Instant::now() + (*wait).min(self.limits.timeout);
        let slot = match slots.acquire(&self.tenant_key, wait_until).await {
            Ok(slot) => slot,
            Err(Refusal::TenantShare) => {
                self.metrics.kill(KillReason::TenantShare);
                return kill_response(KillReason::TenantShare);
            }
            Err(Refusal::Busy) => {
                self.metrics.kill(KillReason::Concurrency);
                return retry_shortly(
                    KillReason::Concurrency.code(),
                    "every instance slot of this node is in use; retry shortly",
                );
            }
        };

        let request_id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.limits.timeout;
        let mut store = self.new_store(request_id, deadline);
        let req = req.map(|b| {
            LimitedRequestBody::new(
                b,
                max_body,
                self.metrics.kill_counter(KillReason::RequestBody),
            )
        });
        let (tx, rx) = oneshot::channel();
        let handles = store
            .data_mut()
            .http()
            .new_incoming_request(scheme, req)
            .and_then(|r| Ok((r, store.data_mut().http().new_response_outparam(tx)?)));
        let (req, out) = match handles {
            Ok(h) => h,
            Err(e) => {
                return error_response(
                    ErrorCode::BadRequest,
                    &format!("cannot pass this request to a worker: {e}"),
                );
            }
        };

        let app = self.clone();
        // The instance runs in its own task (the response body streams
        // from it after the head is sent), in whichever lane the app's
        // standing says.
        let task = self.lanes.spawn(&self.standing, async move {
            let outcome = app
                .run(&pre, &mut store, req, out, deadline, (permit, slot))
                .await;
            app.account(&outcome, &store);
            outcome
        });

        // Until a response is handed back, this future going away means
        // the client went away (hyper drops it): the guard then cancels the
        // instance, as nothing would ever read what it produces.
        let mut cancel = CancelGuard::new(task.abort_handle());
        let tokio_deadline = tokio::time::Instant::from_std(deadline);
        match tokio::time::timeout_at(tokio_deadline, rx).await {
            // The body streams from the instance: the guard goes with it,
            // and cancels the instance if the body is dropped unfinished.
            Ok(Ok(Ok(resp))) => self
                .guest_response(resp)
                .map(|body| CancelOnDropBody::new(body, cancel.hand_over()).boxed_unsync()),
            Ok(Ok(Err(code))) => {
                cancel.disarm();
                error_response(
                    ErrorCode::GuestError,
                    &format!("the worker failed the request: {code:?}"),
                )
            }
            // The guest dropped its response outparam: the instance ended
            // without answering, and the task knows why.
            Ok(Err(_)) => {
                cancel.disarm();
                match task.await {
                    Ok(outcome) => outcome_response(outcome),
                    Err(e) => error_response(
                        ErrorCode::Internal,
                        &format!("the request's task failed: {e}"),
                    ),
                }
            }
            // The task hits the same deadline and records the kill itself.
            Err(_) => {
                cancel.disarm();
                kill_response(KillReason::Timeout)
            }
        }
    }

    /// Runs the instance to completion under the deadline.
    async fn run(
        &self,
        pre: &Pre,
        store: &mut Store<HostState>,
        req: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostIncomingRequest>,
        out: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostResponseOutparam>,
        deadline: Instant,
        _held: (OwnedSemaphorePermit, Slot),
    ) -> Outcome {
        let _live = Live::new(&self.metrics.instances_in_flight);
        let work = async {
            let started = Instant::now();
            let proxy = pre.instantiate_async(&mut *store).await?;
            self.metrics
                .instantiate_duration
                .observe(started.elapsed().as_secs_f64());
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut *store, req, out)
                .await
        };
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), work).await {
            Err(_) => Outcome::Killed(KillReason::Timeout),
            Ok(Ok(())) => Outcome::Returned,
            Ok(Err(e)) => classify(&e, store),
        }
    }

    /// Records fuel and the outcome in the metrics.
    fn account(&self, outcome: &Outcome, store: &Store<HostState>) {
        let left = store.get_fuel().unwrap_or(0);
        self.metrics
            .fuel_consumed
            .inc_by(self.limits.fuel.saturating_sub(left));
        match outcome {
            Outcome::Killed(reason) => {
                self.metrics.kill(*reason);
                if reason.demotes() {
                    self.lanes.demote(&self.standing, Demotion::Limit);
                }
            }
            Outcome::Trapped(why) => {
                self.metrics.traps.inc();
                self.lanes.demote(&self.standing, Demotion::Limit);
                tracing::debug!(tenant = %self.tenant, app = %self.name, %why, "guest trapped");
            }
            Outcome::Failed(why) => {
                tracing::warn!(tenant = %self.tenant, app = %self.name, %why, "request failed in the host");
            }
            Outcome::Returned => {}
        }
        let killed = match outcome {
            Outcome::Killed(reason) => reason.demotes(),
            Outcome::Trapped(_) => true,
            Outcome::Returned | Outcome::Failed(_) => false,
        };
        if let Some(breaker) = &self.breaker
            && let Tripped::For(cooldown) = breaker.finished(self.lanes.now_ms(), killed)
        {
            tracing::warn!(
                tenant = %self.tenant,
                app = %self.name,
                cooldown_ms = cooldown.as_millis() as u64,
                "app throttled: its requests keep hitting limits or trapping"
            );
        }
    }

    /// The guest's response, with its body capped.
    fn guest_response(&self, resp: Response<HyperOutgoingBody>) -> Response<Body> {
        let max = self.limits.max_response_body_bytes;
        if content_length(resp.headers()).is_some_and(|len| len > max) {
            self.metrics.kill(KillReason::ResponseBody);
            return error_response(
                KillReason::ResponseBody.code(),
                &format!("the worker's response exceeds this app's limit of {max} bytes"),
            );
        }
        let counter = self.metrics.kill_counter(KillReason::ResponseBody);
        resp.map(|b| CappedResponseBody::new(b, max, counter).boxed_unsync())
    }
}

/// Sorts an instance's error into a limit, a guest trap, or a host failure.
fn classify(e: &wasmtime::Error, store: &Store<HostState>) -> Outcome {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => return Outcome::Killed(KillReason::Fuel),
        Some(Trap::Interrupt) => return Outcome::Killed(KillReason::Timeout),
        _ => {}
    }
    // Past the cap on host resources a guest holds (see
    // `host::MAX_RESOURCES`): host memory the guest asked for.
    if store.data().limiter.hit
        || e.downcast_ref::<wasmtime::component::ResourceTableError>()
            .is_some_and(|t| matches!(t, wasmtime::component::ResourceTableError::Full))
    {
        return Outcome::Killed(KillReason::Memory);
    }
    if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        return Outcome::Killed(KillReason::Concurrency);
    }
    match e.downcast_ref::<Trap>() {
        Some(trap) => Outcome::Trapped(trap.to_string()),
        None => Outcome::Failed(format!("{e:#}")),
    }
}

fn outcome_response(outcome: Outcome) -> Response<Body> {
    match outcome {
        Outcome::Killed(reason) => kill_response(reason),
        Outcome::Trapped(why) => {
            error_response(ErrorCode::Trap, &format!("the worker trapped: {why}"))
        }
        Outcome::Returned => error_response(
            ErrorCode::NoResponse,
            "the worker returned without sending a response",
        ),
        Outcome::Failed(why) => error_response(
            ErrorCode::Internal,
            &format!("the worker could not run: {why}"),
        ),
    }
}

fn kill_response(reason: KillReason) -> Response<Body> {
    match reason {
        KillReason::Fuel => error_response(
            reason.code(),
            "the worker ran out of fuel (its CPU budget per request)",
        ),
        KillReason::Memory => error_response(reason.code(), "the worker exceeded its memory limit"),
        KillReason::Timeout => error_response(
            reason.code(),
            "the worker did not finish within its time limit",
        ),
        KillReason::Concurrency => too_busy(),
        KillReason::Throttled => throttled(Duration::from_secs(1)),
        KillReason::TenantShare => retry_shortly(
            reason.code(),
            "this tenant holds its share of the node's instances while others wait; retry shortly",
        ),
        KillReason::RequestBody => {
            error_response(reason.code(), "request body exceeds this app's limit")
        }
        KillReason::ResponseBody => error_response(
            reason.code(),
            "the worker's response exceeds this app's limit",
        ),
    }
}

/// How long a throttled request is held before its 503 at most.
const THROTTLE_HOLD: Duration = Duration::from_secs(1);

/// 503 `app_throttled` with `Retry-After` (whole seconds, rounded up).
fn throttled(wait: Duration) -> Response<Body> {
    let mut resp = error_response(
        KillReason::Throttled.code(),
        "this app's requests keep hitting its limits; it is paused for a moment",
    );
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

fn too_busy() -> Response<Body> {
    retry_shortly(
        KillReason::Concurrency.code(),
        "too many requests in flight for this app; retry shortly",
    )
}

/// The node's own answer `code` with `Retry-After: 1`: the request may
/// well succeed a second later.
fn retry_shortly(code: ErrorCode, message: &str) -> Response<Body> {
    let mut resp = error_response(code, message);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// A message's declared `content-length`, if it has a valid one.
fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Counts a live instance for as long as it exists.
struct Live<'a>(&'a IntGauge);

impl<'a> Live<'a> {
    fn new(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Live(gauge)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
