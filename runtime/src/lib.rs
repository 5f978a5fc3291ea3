//! Outpost's Wasm runtime, shared by the edge node (which serves with it)
//! and the control plane (which vets uploads with it, so a component it
//! accepts is one every node can load).
//!
//! One wasmtime [`Engine`] per process, apps compiled once into a
//! `ProxyPre`, and a fresh `Store` + instance for every request. Limits are
//! enforced here (see [`limits`]): fuel with periodic async yields (a
//! spinning guest never pins a tokio worker), a memory limiter, an
//! epoch-driven wall-clock deadline, and a per-app semaphore.
//!
//! Also here because both sides need the same answer: [`router::Route`]
//! parsing, [`cert::Certificate`] parsing and checks, the [`compile_cache`]
//! and its [`disk`] helpers. What it deliberately is not: a server. It
//! knows nothing of listeners, TLS termination or the control plane's
//! watch stream.

pub mod app;
pub mod body;
pub mod breaker;
pub mod cert;
pub mod code;
pub mod compile_cache;
pub mod disk;
pub mod edge_cache;
pub mod error;
pub mod function_cache;
pub mod guest_log;
pub mod host;
pub mod lanes;
pub mod limits;
pub mod log_ship;
pub mod metrics;
pub mod outbound;
pub mod prune;
pub mod router;
pub mod seal;
pub mod share;
pub mod signal;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use wasmtime::component::Linker;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
    WasmBacktraceDetails,
};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

pub use app::{App, AppSpec};
pub use code::ModuleFile;
use code::{Code, CodeConfig, Loader, Resident};
use compile_cache::CompileCache;
pub use error::{Error, Result};
use function_cache::FunctionCache;
use host::HostState;
pub use lanes::LaneConfig;
use lanes::Lanes;
pub use limits::{KillReason, LimitOverrides, Limits};
pub use metrics::Metrics;
pub use outbound::OutboundConfig;

/// How often the epoch advances. A running guest yields to tokio and checks
/// its deadline once per tick, so deadlines are enforced to about this
/// granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Fuel a guest burns between yields to the async executor: small enough
/// that a spinning guest gives up its worker thread often (~every 100 µs),
/// large enough that yielding costs nothing measurable.
const FUEL_YIELD_INTERVAL: u64 = 100_000;

/// Instance pool settings (wasmtime's pooling allocator).
///
/// The pool reserves virtual memory for every slot up front, which makes
/// instantiation a matter of microseconds. If the host cannot reserve it
/// (a low `ulimit -v`, say) the node falls back to on-demand allocation
/// and says so in its log and in `outpost_runtime_pooling_allocator`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Use the pooling allocator at all. Default: true.
    pub enabled: bool,
    /// Component instances alive at once across all apps. Default: 1000.
    pub max_instances: u32,
    /// Core module instances alive at once (a JS or Python component holds
    /// several). Default: 4000.
    pub max_core_instances: u32,
    /// Linear memories alive at once. Default: 2000.
    pub max_memories: u32,
    /// Tables alive at once. Default: 2000.
    pub max_tables: u32,
    /// Elements a table may hold. Default: 100 000.
    pub max_table_elements: usize,
    /// Core module instances one component may contain. Without a
    /// per-component cap one upload could take the whole
    /// `max_core_instances` pool from every other tenant. Measured: the
    /// Python hello (componentize-py) has 14, the JS hello 4, the C hello 3.
    /// Default: 64.
    pub max_core_instances_per_component: u32,
    /// Linear memories one component may define (the pool allows one per
    /// core module, so one per core instance that has one). Measured: 1 in
    /// each of the Python, JS and C hellos. Default: 16.
    pub max_memories_per_component: u32,
    /// Tables one component may define. Measured: 2 in each of the Python,
    /// JS and C hellos. Default: 32.
    pub max_tables_per_component: u32,
    /// Bytes of each linear memory kept resident between uses instead of
    /// being returned to the kernel (saves page faults and TLB shootdowns).
    /// Default: 1 MiB.
    pub memory_keep_resident: usize,
    /// Bytes of each table kept resident between uses. Default: 64 KiB.
    pub table_keep_resident: usize,
    /// Bytes of each async stack kept resident between uses. Default: 256 KiB.
    pub stack_keep_resident: usize,
    /// Freed slots whose pages are decommitted together, in one batch.
    /// Default: 1, every slot at once. A slot waiting in a batch is still
    /// "in use" to wasmtime, so when a module is dropped then (its code
    /// evicted past `[code] budget_bytes`, or its app removed) wasmtime's
    /// clean-up misses that slot. It later returns to the pool still
    /// holding the dropped module's memory image, which keeps the module's
    /// whole compiled code mapped until the slot is reused. Measured with
    /// 64: 30 JS apps rotated under a code budget that holds 5 kept
    /// 1 839 dropped copies of their code mapped (17.8 GB of RSS, for
    /// 0.7 GB of PSS); with 1, exactly the 5 resident (142 MiB). Batching
    /// saved no system calls: each region is its own `madvise` either way.
    pub decommit_batch_size: usize,
    /// Unused slots kept warm (their first pages resident, for a quick
    /// reuse) at most; past it, freed slots are returned to the kernel.
    /// This bounds the node's resident memory on top of what is in use
    /// (at most `memory_keep_resident` per slot; with `pagemap_scan`, only
    /// the pages a guest wrote: ~7 KiB for the C hello, ~190 KiB for the JS
    /// hello). A warm slot remembers the module it last held: reused by
    /// the same module it needs nothing, by another one wasmtime unmaps the
    /// old memory image and maps the new one (two mmaps, TLB shootdowns on
    /// every core, copy-on-write faults). With wasmtime's 100, requests
    /// spread over 1000 apps almost always took another module's slot and
    /// cost 4x the CPU of one app. Slots are split between wasmtime's
    /// per-thread shards, so an app can hold one in each: keep this at
    /// least (apps served often) x (worker threads). Default: 2000, as
    /// `max_memories`.
    pub max_unused_warm_slots: u32,
    /// Find the pages a guest dirtied with Linux's `PAGEMAP_SCAN` ioctl
    /// (kernel 6.7+; ignored where missing) and reset only those when a
    /// slot is freed, instead of `memset`ting the whole resident part of
    /// its linear memory (up to `memory_keep_resident`) every time.
    /// Default: true.
    pub pagemap_scan: bool,
    /// Percentage of `max_instances` one tenant may hold while another
    /// tenant wants a slot (see [`share`]): past it, its requests are
    /// refused 503 `tenant_share` while others wait. A tenant alone on the
    /// node may use all but a twentieth of the slots. Default: 50.
    pub tenant_share_percent: u32,
    /// How long a request waits for a free instance slot before it is
    /// answered 503 `concurrency`, in milliseconds. Default: 1000.
    pub slot_wait_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            enabled: true,
            max_instances: 1000,
            max_core_instances: 4000,
            max_memories: 2000,
            max_tables: 2000,
            max_table_elements: 100_000,
            max_core_instances_per_component: 64,
            max_memories_per_component: 16,
            max_tables_per_component: 32,
            memory_keep_resident: 1024 * 1024,
            table_keep_resident: 64 * 1024,
            stack_keep_resident: 256 * 1024,
            decommit_batch_size: 1,
            max_unused_warm_slots: 2000,
            pagemap_scan: true,
            tenant_share_percent: 50,
            slot_wait_ms: 1000,
        }
    }
}

impl PoolConfig {
    /// Component instances a [validation pool](PoolConfig::for_validation)
    /// holds: trial instantiations at once.
    pub const VALIDATION_SLOTS: u32 = 4;

    /// A pool for the control plane's trial instantiations: room for
    /// [`PoolConfig::VALIDATION_SLOTS`] components at once instead of a
    /// node's thousand, with everything that decides whether one
    /// component fits (per-module memories and tables, table elements,
    /// the per-component maxima) as on nodes, so a component refused by a
    /// node's pool is refused at upload too. The totals are just enough for
    /// that many components at their maxima.
    pub fn for_validation() -> PoolConfig {
        let nodes = PoolConfig::default();
        PoolConfig {
            max_instances: Self::VALIDATION_SLOTS,
            max_core_instances: Self::VALIDATION_SLOTS * nodes.max_core_instances_per_component,
            // Each memory slot reserves 6 GiB of address space (4 GiB and
            // its guard), so the per-component maximum keeps this small.
            max_memories: Self::VALIDATION_SLOTS * nodes.max_memories_per_component,
            max_tables: Self::VALIDATION_SLOTS * nodes.max_tables_per_component,
            memory_keep_resident: 0,
            table_keep_resident: 0,
            stack_keep_resident: 0,
            max_unused_warm_slots: 0,
            ..nodes
        }
    }

    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v) in [
            ("pool.max_instances", self.max_instances),
            ("pool.max_core_instances", self.max_core_instances),
            ("pool.max_memories", self.max_memories),
            ("pool.max_tables", self.max_tables),
            (
                "pool.max_core_instances_per_component",
                self.max_core_instances_per_component,
            ),
            (
                "pool.max_memories_per_component",
                self.max_memories_per_component,
            ),
            (
                "pool.max_tables_per_component",
                self.max_tables_per_component,
            ),
        ] {
            if v == 0 {
                out.push(format!("{name} must be greater than 0"));
            }
        }
        if self.decommit_batch_size == 0 {
            out.push("pool.decommit_batch_size must be greater than 0".into());
        }
        if !(1..=100).contains(&self.tenant_share_percent) {
            out.push("pool.tenant_share_percent must be between 1 and 100".into());
        }
        out
    }
}

/// The node's wasmtime engine and linker, shared by every app.
pub struct Runtime {
    loader: Arc<Loader>,
    /// Code loaded on demand, within the node's budget.
    resident: Arc<Resident>,
    /// Compiled functions kept for later compiles.
    functions: Arc<FunctionCache>,
    pooling: bool,
    metrics: Metrics,
    log_ship: Arc<log_ship::ShipQueue>,
    lanes: Arc<Lanes>,
    network: Arc<outbound::Network>,
    edge_cache: Arc<edge_cache::EdgeCache>,
    slots: Arc<share::Slots>,
    slot_wait: Duration,
}

impl Runtime {
    /// Builds the engine (pooling if possible) and links the full WASI p2
    /// set plus wasi:http, and starts the epoch ticker. Default lanes.
    pub fn new(pool: &PoolConfig, metrics: Metrics) -> Result<Runtime> {
        Self::with_lanes(pool, &LaneConfig::default(), metrics)
    }

    /// [`Runtime::new`] with these lane settings (see [`lanes`]).
    pub fn with_lanes(pool: &PoolConfig, lanes: &LaneConfig, metrics: Metrics) -> Result<Runtime> {
        let functions = Arc::new(FunctionCache::new(
            CodeConfig::default().function_cache_bytes,
            metrics.function_cache(),
        ));
        let (engine, pooling) = if pool.enabled {
            match Engine::new(&engine_config(Some(pool), &functions)) {
                Ok(engine) => (engine, true),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "cannot reserve the instance pool; falling back to on-demand allocation"
                    );
                    (new_engine(None, &functions)?, false)
                }
            }
        } else {
            (new_engine(None, &functions)?, false)
        };
        metrics.set_pooling_allocator(pooling);
        if let Some(pool) = engine.pooling_allocator_metrics() {
            metrics.watch_pool(pool);
        }

        let mut linker = Linker::new(&engine);
        // JS and Python guests import wasi:cli and wasi:filesystem as well
        // as wasi:http, so the whole p2 set is linked. Filesystem access is
        // empty (no preopens) and sockets are refused in `HostState`.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| Error::Engine(format!("linking WASI: {e}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| Error::Engine(format!("linking wasi:http: {e}")))?;

        start_epoch_ticker(&engine);
        let loader = Arc::new(Loader {
            engine,
            linker: Arc::new(linker),
            compile_cache: Default::default(),
            max_memories_per_component: pool.max_memories_per_component,
            max_tables_per_component: pool.max_tables_per_component,
            lookups: metrics.compile_cache_lookups(),
        });
        Ok(Runtime {
            resident: Arc::new(Resident::new(loader.clone(), metrics.code())),
            functions,
            loader,
            pooling,
            edge_cache: Arc::new(edge_cache::EdgeCache::new(metrics.edge_cache())),
            metrics,
            log_ship: Default::default(),
            lanes: Arc::new(Lanes::new(lanes.clone())),
            network: Arc::default(),
            slots: share::Slots::new(pool.max_instances as usize, pool.tenant_share_percent),
            slot_wait: Duration::from_millis(pool.slot_wait_ms),
        })
    }

    /// Sets the budgets of the `[code]` section: loaded code and compiled
    /// functions kept for later compiles.
    pub fn configure_code(&self, code: &CodeConfig) {
        self.resident.set_budget(code.budget_bytes);
        self.functions.set_budget(code.function_cache_bytes);
    }

    /// Compiled functions kept for later compiles.
    pub fn function_cache(&self) -> &FunctionCache {
        &self.functions
    }

    /// Where guests' outbound calls may go: configure it (and name the
    /// node's listeners) before serving. Until then only public addresses.
    pub fn network(&self) -> &outbound::Network {
        &self.network
    }

    /// The cache workers' outbound GET and HEAD fetches go through: off
    /// until configured (the control plane never caches).
    pub fn edge_cache(&self) -> &edge_cache::EdgeCache {
        &self.edge_cache
    }

    /// Whether instances come from the pooling allocator.
    pub fn is_pooling(&self) -> bool {
        self.pooling
    }

    /// Keeps compiled components in `dir` from now on (see
    /// [`compile_cache`]). Only the first call takes effect.
    pub fn enable_compile_cache(&self, dir: &Path) -> Result<()> {
        let cache = CompileCache::open(dir, &self.loader.engine).map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let _ = self.loader.compile_cache.set(cache);
        Ok(())
    }

    /// The code loaded on demand: its budget and what it holds now.
    pub fn resident(&self) -> &Resident {
        &self.resident
    }

    /// Prunes the compile cache, if enabled, to the entries of `keep`
    /// (sha256 of each module) plus `budget` bytes of unused ones.
    pub fn prune_compile_cache(
        &self,
        keep: &[[u8; 32]],
        budget: u64,
    ) -> Option<std::io::Result<compile_cache::Pruned>> {
        Some(self.loader.compile_cache.get()?.prune(keep, budget))
    }

    /// Forgets that apps were validated here, except those whose
    /// fingerprints are in `keep` (the apps the node serves).
    pub fn prune_validated(
        &self,
        keep: &[[u8; 32]],
    ) -> Option<std::io::Result<compile_cache::Pruned>> {
        Some(self.loader.compile_cache.get()?.prune_validated(keep))
    }

    /// Whether an app like `spec` was loaded on this node before (compiled,
    /// linked and trial-instantiated under the same limits, by this
    /// engine), its compiled code is in the compile cache and its module
    /// file is there: then [`Runtime::load_validated`] may serve it
    /// without loading anything now.
    pub fn is_validated(&self, spec: &AppSpec) -> bool {
        let (Some(cache), Some(module)) = (self.loader.compile_cache.get(), &spec.module) else {
            return false;
        };
        module.path.is_file() && cache.is_validated(&spec.fingerprint(), &module.sha256)
    }

    /// Guest output lines of every app, queued per tenant for shipping to
    /// the control plane (sync mode). The first call gets the queue and
    /// turns shipping on; later calls get `None`.
    pub fn take_guest_logs(&self) -> Option<Arc<log_ship::ShipQueue>> {
        self.log_ship.start().then(|| self.log_ship.clone())
    }

    /// The engine (for tests and tools that precompile).
    pub fn engine(&self) -> &Engine {
        &self.loader.engine
    }

    /// Compiles and checks a component: it must import only what the node
    /// provides and export `wasi:http/incoming-handler`. `what` names it in
    /// the error. CPU-heavy (a 13 MB JS guest takes seconds): call it off
    /// the request path.
    pub fn check(&self, what: &str, wasm: &[u8]) -> Result<ProxyPre<HostState>> {
        self.loader.check(what, wasm)
    }

    /// Compiles and checks an app (see [`Runtime::check`]), then
    /// instantiates it once under its own limits to prove it fits them
    /// before it takes traffic.
    ///
    /// Compilation runs on tokio's blocking pool: a large guest takes
    /// seconds of CPU, which must not stall the workers serving requests.
    pub async fn load(self: &Arc<Self>, spec: AppSpec) -> Result<Arc<App>> {
        let started = Instant::now();
        let what = format!("app {:?} (tenant {:?})", spec.name, spec.tenant);
        let runtime = self.clone();
        let (spec, what, checked) = tokio::task::spawn_blocking(move || {
            let checked = match &spec.module {
                Some(module) if spec.wasm.is_empty() => {
                    module.read().and_then(|wasm| runtime.check(&what, &wasm))
                }
                _ => runtime.check(&what, &spec.wasm),
            };
            (spec, what, checked)
        })
        .await
        .map_err(|e| Error::Engine(format!("compile task failed: {e}")))?;
        let pre = Arc::new(checked?);
        let compile_time = started.elapsed();
        // With a compile cache and a module file, the code can be loaded
        // again (so it may be evicted) and the app restored after a
        // restart; without either it stays loaded.
        let cache = self
            .loader
            .compile_cache
            .get()
            .filter(|_| spec.module.is_some());
        let code = match (&spec.module, cache) {
            (Some(module), Some(_)) => {
                self.resident.register(module, Some(pre.clone()));
                Code::OnDemand {
                    module: module.clone(),
                    resident: self.resident.clone(),
                }
            }
            _ => Code::Pinned(pre.clone()),
        };
        let app = self.app(spec, code);
        app.metrics()
            .compile_duration
            .observe(compile_time.as_secs_f64());
        app.trial_instantiate(&pre)
            .await
            .map_err(|reason| Error::InvalidWasm { what, reason })?;
        if let Some(cache) = cache {
            cache.mark_validated(&app.fingerprint());
        }
        tracing::info!(
            tenant = %app.tenant(),
            app = %app.name(),
            compile_ms = compile_time.as_millis() as u64,
            "app loaded"
        );
        Ok(app)
    }

    /// An app [validated](Runtime::is_validated) on this node before,
    /// ready to serve with nothing loaded: its first request loads its
    /// code (and shares it with every app of the same module).
    pub fn load_validated(&self, spec: AppSpec) -> Result<Arc<App>> {
        let Some(module) = spec.module.clone() else {
            return Err(Error::Engine(format!(
                "app {:?} (tenant {:?}) has no module file to load later",
                spec.name, spec.tenant
            )));
        };
        self.resident.register(&module, None);
        let code = Code::OnDemand {
            module,
            resident: self.resident.clone(),
        };
        Ok(self.app(spec, code))
    }

    /// An app of this runtime (its metrics, guest log sink and lanes).
    fn app(&self, spec: AppSpec, code: Code) -> Arc<App> {
        App::new(
            spec,
            code,
            self.loader.engine.clone(),
            &self.metrics,
            self.log_ship.clone(),
            self.lanes.clone(),
            (self.network.clone(), self.edge_cache.clone()),
            (self.slots.clone(), self.slot_wait),
        )
    }

    /// Instantiates a component already [checked](Runtime::check) once,
    /// under `spec`'s limits (fuel, memory, the deadline), without calling
    /// its handler: what a node does before it serves an app, for the
    /// control plane to refuse at upload what would fail on every node
    /// (a start function that traps or loops, a data segment out of
    /// bounds, more memories than the pool gives a module). `spec.wasm`
    /// is not read. The app's series are dropped again.
    pub async fn trial(&self, spec: AppSpec, pre: ProxyPre<HostState>) -> Result<()> {
        let what = format!("app {:?}", spec.name);
        let (tenant, name) = (spec.tenant.clone(), spec.name.clone());
        let pre = Arc::new(pre);
        let app = self.app(spec, Code::Pinned(pre.clone()));
        let result = app.trial_instantiate(&pre).await;
        drop(app);
        self.metrics.remove_app(&tenant, &name);
        result.map_err(|reason| Error::InvalidWasm { what, reason })
    }
}

fn new_engine(pool: Option<&PoolConfig>, functions: &Arc<FunctionCache>) -> Result<Engine> {
    Engine::new(&engine_config(pool, functions)).map_err(|e| Error::Engine(format!("{e:#}")))
}

fn engine_config(pool: Option<&PoolConfig>, functions: &Arc<FunctionCache>) -> Config {
    let mut config = Config::new();
    config
        .enable_incremental_compilation(functions.clone())
        .expect("the compiler is enabled");
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        // Copy-on-write memory images stay on: with them off, every
        // instantiation copies the data segments in, measured
        // (loadtests/spread.sh) at 3.5x the CPU per request of the JS
        // hello. An affinity miss in the pool costs two mmaps instead;
        // `max_unused_warm_slots` keeps those rare.
        .memory_init_cow(true)
        .cranelift_opt_level(OptLevel::Speed)
        // `MemoryLimiter` relies on it being off: with custom page sizes
        // wasmtime reports some failed growth without asking the limiter
        // first, which it could not tell from a failure it approved.
        .wasm_custom_page_sizes(false)
        // Symbolized wasm backtraces cost time on every trap; a hostile
        // guest could trap on purpose in a loop.
        .wasm_backtrace_details(WasmBacktraceDetails::Disable);
    if let Some(pool) = pool {
        // Each memory slot keeps wasmtime's default size (4 GiB, the whole
        // wasm32 space): the per-app limit is enforced by `MemoryLimiter`,
        // so any app limit fits any slot.
        let mut p = PoolingAllocationConfig::new();
        p.total_component_instances(pool.max_instances)
            .total_core_instances(pool.max_core_instances)
            .total_memories(pool.max_memories)
            .total_tables(pool.max_tables)
            .max_core_instances_per_component(pool.max_core_instances_per_component)
            .max_memories_per_component(pool.max_memories_per_component)
            .max_tables_per_component(pool.max_tables_per_component)
            .total_stacks(pool.max_instances)
            .table_elements(pool.max_table_elements)
            .linear_memory_keep_resident(pool.memory_keep_resident)
            .table_keep_resident(pool.table_keep_resident)
            .async_stack_keep_resident(pool.stack_keep_resident)
            .decommit_batch_size(pool.decommit_batch_size)
            .max_unused_warm_slots(pool.max_unused_warm_slots)
            .pagemap_scan(if pool.pagemap_scan {
                Enabled::Auto
            } else {
                Enabled::No
            });
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is
/// dropped. A plain thread: it must keep ticking even if every tokio worker
/// is busy.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("outpost-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .expect("spawning the epoch thread");
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_test_fixtures as fixtures;

    fn runtime(pooling: bool) -> Runtime {
        let pool = PoolConfig {
            enabled: pooling,
            ..PoolConfig::for_validation()
        };
        let runtime = Runtime::new(&pool, Metrics::new()).unwrap();
        assert_eq!(runtime.is_pooling(), pooling);
        runtime
    }

    fn refusal(runtime: &Runtime, wasm: &[u8]) -> String {
        match runtime.check("m", wasm) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn more_memories_than_a_component_may_have_are_refused_pooled_or_not() {
        let wasm = fixtures::many_memories(24, 1);
        let pooled = refusal(&runtime(true), &wasm);
        assert!(
            pooled.contains("24 Wasm linear memories, which exceeds the configured maximum of 16"),
            "{pooled}"
        );
        let on_demand = refusal(&runtime(false), &wasm);
        assert!(
            on_demand.contains("the component has 24 linear memories; at most 16 are allowed"),
            "{on_demand}"
        );
        // At the maximum it is a worker like any other.
        for pooling in [true, false] {
            runtime(pooling)
                .check("m", &fixtures::many_memories(16, 1))
                .unwrap();
        }
    }

    #[test]
    fn a_zero_per_component_maximum_is_a_problem() {
        let pool = PoolConfig {
            max_core_instances_per_component: 0,
            max_memories_per_component: 0,
            max_tables_per_component: 0,
            ..PoolConfig::default()
        };
        assert_eq!(
            pool.problems(),
            [
                "pool.max_core_instances_per_component must be greater than 0",
                "pool.max_memories_per_component must be greater than 0",
                "pool.max_tables_per_component must be greater than 0",
            ]
        );
        assert!(PoolConfig::default().problems().is_empty());
        assert!(PoolConfig::for_validation().problems().is_empty());
    }

    #[test]
    fn more_core_instances_than_a_component_may_have_are_refused() {
        let err = refusal(&runtime(true), &fixtures::many_core_instances(100));
        assert!(
            err.contains("101 core module instances, which exceeds the configured maximum of 64"),
            "{err}"
        );
    }
}
