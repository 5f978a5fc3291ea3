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
    hooks: DenyOutbound,
    pub(crate) limiter: MemoryLimiter,
}

impl HostState {
    /// State for one request: `env` as the guest's environment, output into
    /// `output`, memory capped at `memory_bytes`. No preopened directories,
    /// no host environment or arguments, no sockets, no outbound HTTP.
    pub fn new(
        env: &[(String, String)],
        output: &Arc<RequestOutput>,
        memory_bytes: u64,
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
            hooks: DenyOutbound,
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

/// Outbound HTTP is denied until apps get an allow-list: a guest calling
/// `wasi:http/outgoing-handler` gets `HTTP-request-denied`.
struct DenyOutbound;

impl WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        Box::new(async { Err(HttpError::HttpRequestDenied) })
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
