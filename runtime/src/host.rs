//! What each request's `Store` holds: the WASI and wasi:http contexts, the
//! resource table, and the memory limiter.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::guest_log::{RequestOutput, Stream};

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
        HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: Outbound {
                policy: outbound,
                sent: 0,
            },
            limiter: MemoryLimiter::new(memory_bytes),
        }
    }
}

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
/// calls one request may make, and the counters they land in.
#[derive(Debug)]
pub struct OutboundPolicy {
    /// `host` (any port) or `host:port`, lower case. Empty: nothing allowed.
    allow: Vec<String>,
    /// Calls per request.
    max: u32,
    sent: prometheus::IntCounter,
    denied: prometheus::IntCounter,
    limited: prometheus::IntCounter,
}

impl OutboundPolicy {
    /// A policy over `allow`, counting into `[sent, denied, limit]`.
    pub fn new(
        allow: &[String],
        max: u32,
        counters: [prometheus::IntCounter; 3],
    ) -> OutboundPolicy {
        let [sent, denied, limited] = counters;
        OutboundPolicy {
            allow: allow.iter().map(|h| h.to_ascii_lowercase()).collect(),
            max,
            sent,
            denied,
            limited,
        }
    }

    /// Whether a request to `authority` (`host` or `host:port`) may go.
    pub fn allows(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority.as_str(),
        };
        self.allow
            .iter()
            .any(|entry| *entry == authority || *entry == host)
    }
}

/// The per-request side of [`OutboundPolicy`]: allow-listed hosts only,
/// at most `max` of them, sent with wasmtime-wasi-http's client (the
/// request's deadline bounds every call).
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
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        if !self.policy.allows(&authority) {
            self.policy.denied.inc();
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        if self.sent >= self.policy.max {
            self.policy.limited.inc();
            let max = self.policy.max;
            return Box::new(async move {
                Err(HttpError::InternalError(Some(format!(
                    "subrequest limit reached ({max} per request)"
                ))))
            });
        }
        self.sent += 1;
        self.policy.sent.inc();
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

/// Caps linear memory per instance and remembers whether the cap was hit,
/// so a trap that follows can be reported as reason `memory`.
pub(crate) struct MemoryLimiter {
    memory_bytes: usize,
    pub(crate) hit: bool,
}

/// Tables hold function references; a guest needs far fewer than this, and
/// the cap keeps a table-growth bomb from eating host memory.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl MemoryLimiter {
    fn new(memory_bytes: u64) -> MemoryLimiter {
        MemoryLimiter {
            memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
            hit: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Refusing (rather than trapping) lets the guest see an allocation
        // failure, as it would on a real machine out of memory.
        let ok = desired <= self.memory_bytes;
        self.hit |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= MAX_TABLE_ELEMENTS;
        self.hit |= !ok;
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_entries_match_a_host_or_a_host_and_port() {
        let c = || prometheus::IntCounter::new("x", "x").unwrap();
        let p = OutboundPolicy::new(
            &["API.example.com".into(), "127.0.0.1:8080".into()],
            5,
            [c(), c(), c()],
        );
        assert!(p.allows("api.example.com"));
        assert!(p.allows("api.example.com:443"));
        assert!(p.allows("Api.Example.Com:8443"));
        assert!(p.allows("127.0.0.1:8080"));
        assert!(!p.allows("127.0.0.1:8081"));
        assert!(!p.allows("127.0.0.1"));
        assert!(!p.allows("evil.example.com"));
        assert!(!p.allows("api.example.com.evil.net"));
        assert!(!p.allows(""));
        let none = OutboundPolicy::new(&[], 5, [c(), c(), c()]);
        assert!(!none.allows("api.example.com"));
    }
}
