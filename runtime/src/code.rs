//! Compiled code, resident on demand.
//!
//! A node that serves every tenant holds thousands of apps, most of them
//! idle at any moment. Their compiled code is not kept for good: an app
//! whose module is on disk (sync mode's module cache, a standalone app's
//! file) and whose compiled form is in the [`crate::compile_cache`] is
//! loaded when a request needs it, and dropped again, least recently used
//! first, once the code of every loaded module adds up to more than the
//! node's budget. Apps running the same module share one loaded copy. A
//! request that holds the code keeps it alive: eviction only stops new
//! requests from finding it loaded, it never fails one.
//!
//! Code that could not be loaded again (no compile cache, or bytes given
//! in memory with no file behind them) is pinned: it lives as long as its
//! app and counts in [`CodeMetrics`] but is never evicted.
//!
//! Loading here never validates: an app is compiled, linked and trial
//! instantiated once, when it is first deployed to the node
//! ([`crate::Runtime::load`]); what is loaded later is the same module
//! from the same cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::compile_cache::{CompileCache, Lookup};
use crate::error::{Error, Result};
use crate::host::HostState;

/// The resident set's settings (the node's `[code]` section).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeConfig {
    /// Bytes of compiled code kept loaded at most; past it the least
    /// recently used modules are dropped (and loaded again on their next
    /// request). Pinned code (see the module docs) is not counted.
    /// Counted are the compiled images (the `.cwasm` files, mapped from
    /// the compile cache); each loaded module also holds wasmtime's
    /// metadata on the heap (measured: ~56 KiB for the C hello, whose
    /// image is 87 KiB). Default: 256 MiB.
    pub budget_bytes: u64,
    /// Bytes of compiled functions kept in memory for later compiles (see
    /// [`crate::function_cache`]): JS and Python workers share most of
    /// their functions, so the next one compiles in a fraction of the
    /// time. 0 turns it off. Default: 128 MiB.
    pub function_cache_bytes: u64,
}

impl Default for CodeConfig {
    fn default() -> Self {
        CodeConfig {
            budget_bytes: 256 * 1024 * 1024,
            function_cache_bytes: 128 * 1024 * 1024,
        }
    }
}

impl CodeConfig {
    /// Every problem with the settings.
    pub fn problems(&self) -> Vec<String> {
        if self.budget_bytes == 0 {
            return vec!["code.budget_bytes must be greater than 0".into()];
        }
        Vec::new()
    }
}

/// Loaded code: what an instance is created from.
pub(crate) type Pre = Arc<ProxyPre<HostState>>;

/// Where an app's module can be read again when its code must be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// The module's file.
    pub path: PathBuf,
    /// Its sha256: what the file must hash to, and the compile cache's key.
    pub sha256: [u8; 32],
}

impl ModuleFile {
    /// The file at `path`, whose bytes are `wasm`.
    pub fn of(path: &Path, wasm: &[u8]) -> ModuleFile {
        ModuleFile {
            path: path.to_path_buf(),
            sha256: Sha256::digest(wasm).into(),
        }
    }

    /// The file's bytes, if they still hash to [`ModuleFile::sha256`].
    pub fn read(&self) -> Result<Vec<u8>> {
        let bytes = std::fs::read(&self.path).map_err(|source| Error::Read {
            path: self.path.clone(),
            source,
        })?;
        if <[u8; 32]>::from(Sha256::digest(&bytes)) != self.sha256 {
            return Err(Error::InvalidWasm {
                what: self.path.display().to_string(),
                reason: "the module file no longer matches its digest".into(),
            });
        }
        Ok(bytes)
    }
}

/// Compiles and links components: the engine, the linker and the compile
/// cache, shared by [`crate::Runtime`] and the resident set.
pub(crate) struct Loader {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<HostState>>,
    pub(crate) compile_cache: OnceLock<CompileCache>,
    /// The pool's per-component maxima, held by the check itself too, so
    /// they also bound a node that fell back to on-demand allocation.
    pub(crate) max_memories_per_component: u32,
    pub(crate) max_tables_per_component: u32,
    /// `outpost_runtime_compile_cache_lookups_total{result}`.
    pub(crate) lookups: IntCounterVec,
}

impl Loader {
    /// See [`crate::Runtime::check`].
    pub(crate) fn check(&self, what: &str, wasm: &[u8]) -> Result<ProxyPre<HostState>> {
        let component = self
            .compile_and_trim(wasm)
            .map_err(|e| invalid(what, format!("{e:#}")))?;
        self.link(what, &component)
    }

    /// Resource checks, then the linker: a compiled component ready to
    /// instantiate.
    fn link(&self, what: &str, component: &Component) -> Result<ProxyPre<HostState>> {
        // The pool refuses these already when the component is compiled;
        // on demand nothing would. `None` means the component instantiates
        // modules it imports, which the linker has none of to give.
        if let Some(needs) = component.resources_required() {
            for (count, max, kind) in [
                (
                    needs.num_memories,
                    self.max_memories_per_component,
                    "linear memories",
                ),
                (needs.num_tables, self.max_tables_per_component, "tables"),
            ] {
                if count > max {
                    return Err(invalid(
                        what,
                        format!(
                            "the component has {count} {kind}; at most {max} are allowed per component"
                        ),
                    ));
                }
            }
        }
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| invalid(what, format!("{e:#}")))?;
        ProxyPre::new(pre)
            .map_err(|e| invalid(what, format!("not a wasi:http/proxy worker: {e:#}")))
    }

    /// The compiled form of `wasm`: from the compile cache if enabled and
    /// holding it, else from cranelift (and then saved there).
    fn compile(&self, wasm: &[u8]) -> wasmtime::Result<Component> {
        let Some(cache) = self.compile_cache.get() else {
            return Component::new(&self.engine, wasm);
        };
        let (cached, lookup) = cache.load(&self.engine, wasm);
        self.count(lookup);
        if let Some(component) = cached {
            return Ok(component);
        }
        let component = Component::new(&self.engine, wasm)?;
        // Run it from its cache entry from now on: mapped from the file,
        // its pages belong to the page cache (only those a request touches
        // are resident, and the kernel may drop them), where the compiler's
        // copy is this process's anonymous memory, all of it resident.
        // Measured: 14 JS workers held 607 MiB of anonymous code.
        if cache.store(&component, wasm)
            && let (Some(mapped), _) = cache.load(&self.engine, wasm)
        {
            return Ok(mapped);
        }
        Ok(component)
    }

    /// [`Loader::compile`], then the compiler's scratch memory handed back.
    fn compile_and_trim(&self, wasm: &[u8]) -> wasmtime::Result<Component> {
        let compiled = self.compile(wasm);
        if wasm.len() >= TRIM_AFTER_BYTES {
            release_free_heap();
        }
        compiled
    }

    fn count(&self, lookup: Lookup) {
        self.lookups.with_label_values(&[lookup.as_str()]).inc();
    }

    /// The code of an app validated before: from the compile cache, or
    /// compiled again from the module file if the cache lost it.
    fn load(&self, module: &ModuleFile) -> Result<(Pre, u64)> {
        let what = module.path.display().to_string();
        let cached = self.compile_cache.get().and_then(|cache| {
            let (component, lookup) = cache.load_digest(&self.engine, &module.sha256);
            self.count(lookup);
            component
        });
        let pre = match cached {
            Some(component) => self.link(&what, &component)?,
            None => self.check(&what, &module.read()?)?,
        };
        let size = code_size(&pre);
        Ok((Arc::new(pre), size))
    }
}

/// Modules from this size up leave enough freed compiler memory behind to
/// be worth [`release_free_heap`]; it costs a walk of every malloc arena,
/// which the C hello's millisecond compile would feel.
const TRIM_AFTER_BYTES: usize = 1024 * 1024;

/// Returns the heap's free pages to the kernel. Cranelift compiles on
/// every rayon thread, and glibc keeps what each thread freed in that
/// thread's arena: measured, a 13 MB JS worker left ~500 MiB of RSS
/// behind that nothing used until the next compile.
fn release_free_heap() {
    // SAFETY: malloc_trim only hands free pages back; it takes the arena
    // locks itself and touches nothing it does not own.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

fn invalid(what: &str, reason: String) -> Error {
    // wasmtime's messages can span lines (byte dumps); one line reads
    // better in a JSON error body and a log.
    Error::InvalidWasm {
        what: what.to_string(),
        reason: reason.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Bytes of compiled code (text and data of the image) behind `pre`.
pub(crate) fn code_size(pre: &ProxyPre<HostState>) -> u64 {
    let range = pre.instance_pre().component().image_range();
    (range.end as usize).saturating_sub(range.start as usize) as u64
}

/// An app's code.
pub(crate) enum Code {
    /// Loaded for as long as the app lives.
    Pinned(Pre),
    /// Loaded when needed, through the node's [`Resident`] set.
    OnDemand {
        module: ModuleFile,
        resident: Arc<Resident>,
    },
}

impl Code {
    /// The code, loading it if it is not resident.
    pub(crate) async fn get(&self) -> Result<Pre> {
        match self {
            Code::Pinned(pre) => Ok(pre.clone()),
            Code::OnDemand { module, resident } => resident.get(module).await,
        }
    }
}

impl Drop for Code {
    fn drop(&mut self) {
        if let Code::OnDemand { module, resident } = self {
            resident.release(&module.sha256);
        }
    }
}

/// The node's loaded, evictable code, by module.
pub struct Resident {
    loader: Arc<Loader>,
    /// Bytes of code kept loaded at most (past it, the least recently
    /// used modules are dropped). `u64::MAX`: no limit.
    budget: AtomicU64,
    inner: Mutex<Modules>,
    metrics: CodeMetrics,
}

#[derive(Default)]
struct Modules {
    by_digest: HashMap<[u8; 32], Arc<Entry>>,
    /// Advances on every use: the least recently used module has the
    /// smallest `last_used`.
    clock: u64,
    /// Bytes of the loaded entries in `by_digest`.
    bytes: u64,
    loaded: usize,
}

#[derive(Default)]
struct Entry {
    code: tokio::sync::OnceCell<Pre>,
    /// Bytes counted for it in [`Modules::bytes`] (0 until loaded).
    bytes: AtomicU64,
    last_used: AtomicU64,
    /// Apps running this module.
    users: AtomicU64,
}

/// The share of the budget eviction brings the resident code down to, in
/// percent: evicting a little more than needed spares the next loads a
/// scan of every module.
const LOW_WATER_PERCENT: u64 = 90;

impl Resident {
    pub(crate) fn new(loader: Arc<Loader>, metrics: CodeMetrics) -> Resident {
        metrics.budget.set(i64::MAX);
        Resident {
            loader,
            budget: AtomicU64::new(u64::MAX),
            inner: Mutex::default(),
            metrics,
        }
    }

    /// Sets the budget (bytes of loaded code), evicting at once if needed.
    pub fn set_budget(&self, bytes: u64) {
        self.budget.store(bytes, Ordering::Relaxed);
        self.metrics
            .budget
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let mut modules = self.lock();
        self.evict(&mut modules, None);
    }

    /// The budget.
    pub fn budget(&self) -> u64 {
        self.budget.load(Ordering::Relaxed)
    }

    /// Bytes of code loaded now, and how many modules that is.
    pub fn resident(&self) -> (u64, usize) {
        let modules = self.lock();
        (modules.bytes, modules.loaded)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Modules> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An app of `module` came to be; with `code`, its code is loaded
    /// already (it was just validated) and counts as just used.
    pub(crate) fn register(&self, module: &ModuleFile, code: Option<Pre>) {
        let entry = {
            let mut modules = self.lock();
            modules.clock += 1;
            let clock = modules.clock;
            let entry = modules.by_digest.entry(module.sha256).or_default().clone();
            entry.users.fetch_add(1, Ordering::Relaxed);
            entry.last_used.store(clock, Ordering::Relaxed);
            entry
        };
        if let Some(pre) = code {
            let bytes = code_size(&pre);
            if entry.code.set(pre).is_ok() {
                self.account(&module.sha256, &entry, bytes);
            }
        }
    }

    /// An app of `module` went: its module's code goes with the last one.
    fn release(&self, sha256: &[u8; 32]) {
        let mut modules = self.lock();
        let Some(entry) = modules.by_digest.get(sha256) else {
            return;
        };
        if entry.users.fetch_sub(1, Ordering::Relaxed) > 1 {
            return;
        }
        let entry = modules.by_digest.remove(sha256).expect("just found");
        forget(&mut modules, &entry);
        self.publish(&modules);
    }

    async fn get(&self, module: &ModuleFile) -> Result<Pre> {
        let entry = {
            let mut modules = self.lock();
            modules.clock += 1;
            let clock = modules.clock;
            // An app holds a registration, so its entry exists unless it
            // was evicted: then a fresh one takes its place.
            let entry = modules.by_digest.entry(module.sha256).or_default().clone();
            entry.last_used.store(clock, Ordering::Relaxed);
            entry
        };
        if let Some(pre) = entry.code.get() {
            return Ok(pre.clone());
        }
        let pre = entry
            .code
            .get_or_try_init(|| async {
                let started = Instant::now();
                let loader = self.loader.clone();
                let file = module.clone();
                let loaded = tokio::task::spawn_blocking(move || loader.load(&file))
                    .await
                    .map_err(|e| Error::Engine(format!("code load task failed: {e}")))
                    .and_then(|r| r);
                match &loaded {
                    Ok(_) => self.metrics.loaded(started.elapsed()),
                    Err(e) => {
                        self.metrics.load_failures.inc();
                        tracing::warn!(module = %module.path.display(), error = %e, "could not load an app's code");
                    }
                }
                let (pre, bytes) = loaded?;
                self.account(&module.sha256, &entry, bytes);
                Ok::<_, Error>(pre)
            })
            .await?;
        Ok(pre.clone())
    }

    /// Counts `entry`'s freshly loaded `bytes` (if it is still the entry
    /// for `sha256`: one evicted meanwhile serves its waiters and goes),
    /// then evicts others past the budget.
    fn account(&self, sha256: &[u8; 32], entry: &Arc<Entry>, bytes: u64) {
        let mut modules = self.lock();
        if !modules
            .by_digest
            .get(sha256)
            .is_some_and(|e| Arc::ptr_eq(e, entry))
        {
            return;
        }
        entry.bytes.store(bytes, Ordering::Relaxed);
        modules.bytes += bytes;
        modules.loaded += 1;
        self.evict(&mut modules, Some(sha256));
    }

    /// Drops the least recently used loaded modules (never `keep`) until
    /// the resident code is under the budget's low-water mark.
    fn evict(&self, modules: &mut Modules, keep: Option<&[u8; 32]>) {
        let budget = self.budget();
        if modules.bytes > budget {
            let target = budget / 100 * LOW_WATER_PERCENT;
            let mut loaded: Vec<([u8; 32], u64)> = modules
                .by_digest
                .iter()
                .filter(|(digest, e)| Some(*digest) != keep && e.code.initialized())
                .map(|(digest, e)| (*digest, e.last_used.load(Ordering::Relaxed)))
                .collect();
            loaded.sort_unstable_by_key(|(_, used)| *used);
            for (digest, _) in loaded {
                if modules.bytes <= target {
                    break;
                }
                // A fresh, empty entry keeps the apps' registrations.
                let fresh = Arc::new(Entry::default());
                let old = modules
                    .by_digest
                    .insert(digest, fresh.clone())
                    .expect("listed above");
                fresh
                    .users
                    .store(old.users.load(Ordering::Relaxed), Ordering::Relaxed);
                fresh
                    .last_used
                    .store(old.last_used.load(Ordering::Relaxed), Ordering::Relaxed);
                forget(modules, &old);
                self.metrics.evictions.inc();
            }
        }
        self.publish(modules);
    }

    fn publish(&self, modules: &Modules) {
        self.metrics
            .resident_bytes
            .set(i64::try_from(modules.bytes).unwrap_or(i64::MAX));
        self.metrics.resident_modules.set(modules.loaded as i64);
    }
}

/// Takes a loaded entry's bytes off the count.
fn forget(modules: &mut Modules, entry: &Entry) {
    let bytes = entry.bytes.swap(0, Ordering::Relaxed);
    if entry.code.initialized() && bytes > 0 {
        modules.bytes -= bytes;
        modules.loaded -= 1;
    }
}

/// The resident set's series.
#[derive(Clone)]
pub struct CodeMetrics {
    resident_bytes: IntGauge,
    resident_modules: IntGauge,
    budget: IntGauge,
    loads: IntCounter,
    load_failures: IntCounter,
    load_duration: Histogram,
    evictions: IntCounter,
}

impl CodeMetrics {
    /// Creates the series and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<CodeMetrics> {
        let loads = IntCounterVec::new(
            Opts::new(
                "outpost_runtime_code_loads_total",
                "Modules' compiled code loaded on demand (for a request, after start-up or an eviction), by result.",
            ),
            &["result"],
        )?;
        let m = CodeMetrics {
            resident_bytes: IntGauge::new(
                "outpost_runtime_code_resident_bytes",
                "Bytes of compiled code loaded and evictable (at most about the budget).",
            )?,
            resident_modules: IntGauge::new(
                "outpost_runtime_code_resident_modules",
                "Modules whose compiled code is loaded and evictable.",
            )?,
            budget: IntGauge::new(
                "outpost_runtime_code_budget_bytes",
                "Bytes of compiled code the node keeps loaded at most (code.budget_bytes).",
            )?,
            loads: loads.with_label_values(&["ok"]),
            load_failures: loads.with_label_values(&["error"]),
            load_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "outpost_runtime_code_load_duration_seconds",
                    "Time to load a module's compiled code on demand (a cold app's first request waits this long).",
                )
                .buckets(vec![
                    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
                ]),
            )?,
            evictions: IntCounter::new(
                "outpost_runtime_code_evictions_total",
                "Modules' compiled code dropped to stay within the budget.",
            )?,
        };
        registry.register(Box::new(m.resident_bytes.clone()))?;
        registry.register(Box::new(m.resident_modules.clone()))?;
        registry.register(Box::new(m.budget.clone()))?;
        registry.register(Box::new(loads))?;
        registry.register(Box::new(m.load_duration.clone()))?;
        registry.register(Box::new(m.evictions.clone()))?;
        Ok(m)
    }

    fn loaded(&self, took: std::time::Duration) {
        self.loads.inc();
        self.load_duration.observe(took.as_secs_f64());
    }
}
