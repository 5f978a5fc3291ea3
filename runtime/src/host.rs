//! What each request's `Store` holds: the WASI and wasi:http contexts, the
//! resource table, and the memory limiter.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::guest_log::{RequestOutput, Stream};
use crate::edge_cache::EdgeCache;
use crate::outbound::{self, Failure, Network};

/// Per-request host state. Built fresh for every request and dropped with
/// the instance: nothing in it outlives the request or is shared with
/// another tenant.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Outbound,
    pub(crate) limiter: MemoryLimiter,
}

impl HostState {
    /// State for one request: `env` as the guest's environment, output into
    /// `output`, memory capped at `memory_bytes`, outbound HTTP as `outbound`
    /// allows. No preopened directories, no host environment or arguments,
    /// no sockets.
    pub fn new(
        env: &[(String, String)],
        output: &Arc<RequestOutput>,
        memory_bytes: u64,
        outbound: Arc<OutboundPolicy>,
    ) -> HostState {
        let mut wasi = WasiCtxBuilder::new();
        wasi.envs(env)
            .stdout(output.stream(Stream::Stdout))
            .stderr(output.stream(Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        HostState {
            wasi: wasi.build(),
            http,
            table,
            hooks: Outbound {
                policy: outbound,
                sent: 0,
            },
            limiter: MemoryLimiter::new(memory_bytes),
        }
    }
}

/// Host resources (requests, headers, bodies, streams, pollables) one
/// request's guest may hold at once. A handler holds a few dozen, one making
/// fifty subrequests a few hundred; wasmtime's default (a million) would let
/// a guest park gigabytes of host memory that no limiter sees. Past it,
/// creating one more ends the request with reason `memory`.
pub const MAX_RESOURCES: usize = 2048;

/// Bytes one header set (`fields`) the guest builds may hold, as wasi:http
/// counts them (names and values plus ~40 bytes each): room for ~24 KiB of
/// headers on the wire. With [`MAX_RESOURCES`] this bounds the host memory
/// a guest's headers can take to 64 MiB, where wasmtime's default (128
/// KiB) allowed 128 GiB. Past it, the guest's append fails with
/// `header-error.size-exceeded`.
pub const MAX_FIELDS_BYTES: usize = 32 * 1024;

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Which hosts an app may call over `wasi:http/outgoing-handler`, how many
/// calls one request may make, and the counters they land in. Which
/// *addresses* those hosts may resolve to is the node's [`Network`].
#[derive(Debug)]
pub struct OutboundPolicy {
    /// `host` (ports 80 and 443) or `host:port`, lower case. Empty:
    /// nothing allowed.
    allow: Vec<String>,
    /// Calls per request.
    max: u32,
    /// Bounds every call that sets no shorter timeout of its own: the
    /// app's request deadline.
    timeout: Duration,
    net: Arc<Network>,
    counters: SubrequestCounters,
    /// The node's edge cache and the tenant whose partition this app's
    /// fetches use.
    cache: Option<(Arc<EdgeCache>, Arc<str>)>,
}

/// `outpost_runtime_subrequests_total` by `result`, in
/// [`crate::metrics::SUBREQUEST_RESULTS`] order.
#[derive(Debug, Clone)]
pub struct SubrequestCounters {
    /// Connected and sent.
    pub sent: prometheus::IntCounter,
    /// Host not on the allow-list.
    pub denied: prometheus::IntCounter,
    /// Over `max_subrequests`.
    pub limit: prometheus::IntCounter,
    /// Every address of an allowed host refused by the [`Network`].
    pub denied_address: prometheus::IntCounter,
}

/// Ports an allow-list entry without one opens.
const DEFAULT_PORTS: [u16; 2] = [80, 443];

impl OutboundPolicy {
    /// A policy over `allow`, `max` calls per request, each bounded by
    /// `timeout`, to addresses `net` allows.
    pub fn new(
        allow: &[String],
        max: u32,
        timeout: Duration,
        net: Arc<Network>,
        counters: SubrequestCounters,
    ) -> OutboundPolicy {
        OutboundPolicy {
            allow: allow.iter().map(|h| h.to_ascii_lowercase()).collect(),
            max,
            timeout,
            net,
            counters,
            cache: None,
        }
    }

    /// This policy with GET and HEAD fetches going through `cache`, in
    /// `tenant`'s partition.
    pub fn caching(mut self, cache: Arc<EdgeCache>, tenant: &str) -> OutboundPolicy {
        self.cache = Some((cache, Arc::from(tenant)));
        self
    }

    /// Whether a request to `host` on `port` may go: an entry `host:port`,
    /// or `host` alone and port 80 or 443.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let with_port = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        self.allow.iter().any(|entry| {
            *entry == with_port
                || (DEFAULT_PORTS.contains(&port)
                    && (*entry == host || entry.trim_matches(['[', ']']) == host))
        })
    }
}

/// The per-request side of [`OutboundPolicy`]: allow-listed hosts only,
/// at most `max` of them, sent by [`crate::outbound`]'s client to an
/// address the node's [`Network`] allows.
struct Outbound {
    policy: Arc<OutboundPolicy>,
    sent: u32,
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let policy = self.policy.clone();
        let (host, port, tls) = match outbound::destination(request.uri()) {
            Ok(d) => d,
            Err(e) => return Box::new(async { Err(e) }),
        };
        if !policy.allows(&host, port) {
            policy.counters.denied.inc();
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        if self.sent >= policy.max {
            policy.counters.limit.inc();
            let max = policy.max;
            return Box::new(async move {
                Err(HttpError::InternalError(Some(format!(
                    "subrequest limit reached ({max} per request)"
                ))))
            });
        }
        // Counted before the lookup (and whether the cache answers or
        // not): a guest cannot make more lookups than calls either.
        self.sent += 1;
        let timeouts = outbound::Timeouts::new(options, policy.timeout);
        let target = Arc::new(Target {
            policy,
            host,
            port,
            tls,
            timeouts,
        });
        Box::new(async move {
            let origin: Arc<crate::edge_cache::Origin> = {
                let target = target.clone();
                Arc::new(
                    move |request| -> futures::future::BoxFuture<'static, SendResult> {
                        let target = target.clone();
                        Box::pin(async move { target.send(request).await })
                    },
                )
            };
            match &target.policy.cache {
                Some((cache, tenant)) => cache.send(tenant, request, origin.clone()).await,
                None => origin(request).await,
            }
        })
    }
}

/// Where one outbound call goes, checked against the allow-list: sent
/// once, or again by the cache (to revalidate what it holds).
struct Target {
    policy: Arc<OutboundPolicy>,
    host: String,
    port: u16,
    tls: bool,
    timeouts: outbound::Timeouts,
}

impl Target {
    /// Connects to an address the node's network allows and sends.
    async fn send(&self, request: http::Request<WasiBody>) -> SendResult {
        let (host, port, policy) = (&self.host, self.port, &self.policy);
        let stream = match outbound::connect(&policy.net, host, port, self.tls, self.timeouts).await
        {
            Ok(stream) => stream,
            Err(Failure::Refused(why)) => {
                policy.counters.denied_address.inc();
                tracing::info!(
                    host = %host,
                    port,
                    reason = why.as_str(),
                    "outbound call refused: the host's addresses are not allowed"
                );
                return Err(HttpError::HttpRequestDenied);
            }
            Err(Failure::Http(e)) => return Err(e),
        };
        policy.counters.sent.inc();
        let max_body = outbound::max_response_body(&policy.net);
        outbound::exchange(stream, request, self.timeouts, max_body).await
    }
}

/// Holds one instance (one `Store`) to a single memory budget: the sum of
/// all its linear memories and tables, however many core instances the
/// component has. Capping each memory on its own would multiply the app's
/// limit by the number of memories (24 core instances of 40 MiB each once
/// passed a 64 MiB limit). Remembers whether the budget was hit, so a trap
/// that follows can be reported as reason `memory`.
pub(crate) struct MemoryLimiter {
    /// The app's limit, in bytes.
    budget: usize,
    /// Bytes of memories and tables approved so far. Nothing is ever
    /// subtracted on success: wasm memories and tables never shrink, and
    /// they all live exactly as long as the store.
    used: usize,
    /// The charge of the last approved memory growth, given back if
    /// wasmtime reports that growth failed after all.
    pending_memory: usize,
    pub(crate) hit: bool,
}

/// Tables hold function references; a guest needs far fewer than this, and
/// the cap keeps a table-growth bomb from eating host memory.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// What one table element costs the budget. Wasmtime stores a funcref
/// table element as one pointer (`ResourceLimiter::table_growing`'s own
/// documentation says so), and Outpost only runs 64-bit hosts.
const TABLE_ELEMENT_BYTES: usize = 8;

impl MemoryLimiter {
    fn new(memory_bytes: u64) -> MemoryLimiter {
        MemoryLimiter {
            budget: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
            used: 0,
            pending_memory: 0,
            hit: false,
        }
    }

    /// Charges `bytes` if they fit in what is left of the budget.
    fn charge(&mut self, bytes: usize) -> bool {
        match self.used.checked_add(bytes) {
            Some(total) if total <= self.budget => {
                self.used = total;
                true
            }
            _ => {
                self.hit = true;
                false
            }
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    /// Called with `current` 0 when a memory is created at instantiation,
    /// so initial sizes are charged as well as growth.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.pending_memory = 0;
        // Past the memory's own maximum wasmtime fails the growth even if
        // approved: refusing here keeps it off the budget, and is no
        // limit of ours being hit.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let bytes = desired.saturating_sub(current);
        // Refusing (rather than trapping) lets the guest see an allocation
        // failure, as it would on a real machine out of memory.
        if !self.charge(bytes) {
            return Ok(false);
        }
        self.pending_memory = bytes;
        Ok(true)
    }

    /// Wasmtime calls this right after an approved growth that still
    /// failed (the kernel refused the pages), with no other limiter call in
    /// between, so `pending_memory` is that growth's charge. It also calls
    /// it without any approval for growth a memory type cannot represent,
    /// which only happens with custom page sizes: the engine keeps that
    /// proposal off (see `engine_config`) so no charge of an earlier,
    /// successful growth is ever given back here.
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        tracing::debug!(error = %error, "approved memory growth failed");
        self.used -= std::mem::take(&mut self.pending_memory);
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.pending_memory = 0;
        // As for memories: wasmtime fails growth past the table's maximum
        // (its declared one or the pool's) even if approved, so it is
        // refused before it is charged.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = true;
            return Ok(false);
        }
        let elements = desired.saturating_sub(current);
        Ok(self.charge(elements.saturating_mul(TABLE_ELEMENT_BYTES)))
    }

    /// Nothing to give back. In wasmtime 48 the only failure after an
    /// approved table growth is growth past the table's maximum, which
    /// `table_growing` refuses without charging; the other caller reports
    /// a size overflow *before* asking `table_growing`, so giving back "the
    /// last charge" there would refund a growth that succeeded.
    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        tracing::debug!(error = %error, "table growth failed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn memories_share_one_budget() {
        let mut l = MemoryLimiter::new(64 * MIB as u64);
        // Two memories created at instantiation (current 0), each well
        // under the limit on its own.
        assert!(l.memory_growing(0, 40 * MIB, None).unwrap());
        assert!(!l.hit);
        assert!(
            !l.memory_growing(0, 40 * MIB, None).unwrap(),
            "the second memory takes the sum past the limit"
        );
        assert!(l.hit);
        // Growth is charged by the difference, up to the limit exactly.
        assert!(l.memory_growing(40 * MIB, 64 * MIB, None).unwrap());
        assert!(!l.memory_growing(0, 64 * 1024, None).unwrap());
    }

    #[test]
    fn a_failed_growth_gives_its_charge_back() {
        let mut l = MemoryLimiter::new(64 * MIB as u64);
        assert!(l.memory_growing(0, 40 * MIB, None).unwrap());
        l.memory_grow_failed(wasmtime::format_err!("no pages"))
            .unwrap();
        assert!(
            l.memory_growing(0, 40 * MIB, None).unwrap(),
            "the failed 40 MiB no longer counts"
        );
        assert!(l.memory_growing(0, 24 * MIB, None).unwrap());
        l.memory_grow_failed(wasmtime::format_err!("no pages"))
            .unwrap();
        // Only the failed growth's charge comes back, and only once.
        l.memory_grow_failed(wasmtime::format_err!("again"))
            .unwrap();
        assert_eq!(l.used, 40 * MIB);
        assert!(l.memory_growing(0, 24 * MIB, None).unwrap());
        assert!(!l.memory_growing(0, 64 * 1024, None).unwrap());
    }

    #[test]
    fn growth_past_a_memorys_own_maximum_is_not_charged_nor_a_hit() {
        let mut l = MemoryLimiter::new(64 * MIB as u64);
        assert!(!l.memory_growing(0, 80 * MIB, Some(64 * 1024)).unwrap());
        assert!(!l.hit);
        assert!(l.memory_growing(0, 64 * MIB, None).unwrap());
    }

    #[test]
    fn tables_count_against_the_same_budget() {
        let mut l = MemoryLimiter::new(8 * MIB as u64);
        // 512 Ki elements of 8 bytes: 4 MiB.
        assert!(l.table_growing(0, 512 * 1024, None).unwrap());
        assert!(l.memory_growing(0, 4 * MIB, None).unwrap());
        assert!(
            !l.table_growing(0, 1, None).unwrap(),
            "memory and table together fill the budget"
        );
        assert!(l.hit);

        let mut l = MemoryLimiter::new(64 * MIB as u64);
        assert!(
            !l.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap(),
            "a table stays under its own element cap too"
        );
        assert!(l.hit);
    }

    #[test]
    fn allow_list_entries_match_a_host_on_80_and_443_or_a_host_and_port() {
        let c = || prometheus::IntCounter::new("x", "x").unwrap();
        let counters = SubrequestCounters {
            sent: c(),
            denied: c(),
            limit: c(),
            denied_address: c(),
        };
        let policy = |allow: &[&str]| {
            let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
            OutboundPolicy::new(
                &allow,
                5,
                Duration::from_secs(1),
                Arc::default(),
                counters.clone(),
            )
        };
        let p = policy(&["API.example.com", "db.example.com:8080", "[::1]:8443"]);
        assert!(p.allows("api.example.com", 443));
        assert!(p.allows("api.example.com", 80));
        assert!(p.allows("Api.Example.Com", 443));
        assert!(
            !p.allows("api.example.com", 8443),
            "no port: 80 and 443 only"
        );
        assert!(!p.allows("api.example.com", 22));
        assert!(p.allows("db.example.com", 8080));
        assert!(!p.allows("db.example.com", 8081));
        assert!(!p.allows("db.example.com", 443));
        assert!(p.allows("::1", 8443));
        assert!(!p.allows("::1", 443));
        assert!(!p.allows("evil.example.com", 443));
        assert!(!p.allows("api.example.com.evil.net", 443));
        assert!(!p.allows("", 443));
        assert!(!policy(&[]).allows("api.example.com", 443));
    }
}
