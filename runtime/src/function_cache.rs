//! Compiled functions shared between compiles.
//!
//! Every JavaScript worker carries the same engine (about 12 MB of wasm
//! before its script) and every Python worker the same interpreter, so
//! most of what cranelift compiles for one upload it compiled already for
//! another. Cranelift's incremental cache keys each function by a sha256
//! of its IR and the target, and this is its store: a module whose
//! functions were compiled before, for any module, compiles only the
//! functions that are new. A 13 MB JS worker after another one took
//! seconds instead of half a minute (see `loadtests/README.md`).
//!
//! Entries live in memory, within a byte budget (`[code]
//! function_cache_bytes`), least recently used out first. Losing one only
//! costs a compile; it never changes what a module compiles to, because
//! the key covers everything the function's code depends on. The store
//! is this process's own: nothing compiled elsewhere enters it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The share of the budget eviction brings the store down to, in percent
/// (as in [`crate::code`]: a little more than needed spares the next
/// inserts a scan).
const LOW_WATER_PERCENT: u64 = 90;

/// Cranelift's per-function cache, bounded in bytes.
#[derive(Debug)]
pub struct FunctionCache {
    /// Bytes (keys and values) kept at most; 0 turns the cache off.
    budget: AtomicU64,
    inner: Mutex<Entries>,
    metrics: FunctionCacheMetrics,
}

#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<Box<[u8]>, Stored>,
    /// Advances on every use: the least recently used entry has the
    /// smallest `last_used`.
    clock: u64,
    bytes: u64,
}

#[derive(Debug)]
struct Stored {
    value: Box<[u8]>,
    last_used: u64,
}

impl Stored {
    fn bytes(&self, key: &[u8]) -> u64 {
        (key.len() + self.value.len()) as u64
    }
}

impl FunctionCache {
    pub(crate) fn new(budget: u64, metrics: FunctionCacheMetrics) -> FunctionCache {
        let cache = FunctionCache {
            budget: AtomicU64::new(0),
            inner: Mutex::default(),
            metrics,
        };
        cache.set_budget(budget);
        cache
    }

    /// Sets the budget, evicting at once if needed; 0 empties the cache
    /// and turns it off.
    pub fn set_budget(&self, bytes: u64) {
        self.budget.store(bytes, Ordering::Relaxed);
        self.metrics
            .budget
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let mut entries = self.lock();
        self.evict(&mut entries);
    }

    /// Bytes held now, and how many functions that is.
    pub fn stored(&self) -> (u64, usize) {
        let entries = self.lock();
        (entries.bytes, entries.by_key.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn evict(&self, entries: &mut Entries) {
        let budget = self.budget.load(Ordering::Relaxed);
        if entries.bytes > budget {
            let target = budget / 100 * LOW_WATER_PERCENT;
            let mut by_age: Vec<(u64, Box<[u8]>)> = entries
                .by_key
                .iter()
                .map(|(key, stored)| (stored.last_used, key.clone()))
                .collect();
            by_age.sort_unstable_by_key(|(used, _)| *used);
            for (_, key) in by_age {
                if entries.bytes <= target {
                    break;
                }
                let stored = entries.by_key.remove(&key).expect("listed above");
                entries.bytes -= stored.bytes(&key);
                self.metrics.evictions.inc();
            }
        }
        self.metrics
            .bytes
            .set(i64::try_from(entries.bytes).unwrap_or(i64::MAX));
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let mut entries = self.lock();
        entries.clock += 1;
        let clock = entries.clock;
        match entries.by_key.get_mut(key) {
            Some(stored) => {
                stored.last_used = clock;
                self.metrics.hits.inc();
                Some(Cow::Owned(stored.value.to_vec()))
            }
            None => {
                self.metrics.misses.inc();
                None
            }
        }
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let budget = self.budget.load(Ordering::Relaxed);
        let bytes = (key.len() + value.len()) as u64;
        // One function taking more than a tenth of the store would push
        // out many others for one module's sake.
        if bytes > budget / 10 {
            return false;
        }
        let mut entries = self.lock();
        entries.clock += 1;
        let stored = Stored {
            value: value.into_boxed_slice(),
            last_used: entries.clock,
        };
        if let Some(old) = entries.by_key.insert(key.into(), stored) {
            entries.bytes -= old.bytes(key);
        }
        entries.bytes += bytes;
        self.evict(&mut entries);
        true
    }
}

/// The function cache's series.
#[derive(Debug, Clone)]
pub struct FunctionCacheMetrics {
    hits: IntCounter,
    misses: IntCounter,
    bytes: IntGauge,
    budget: IntGauge,
    evictions: IntCounter,
}

impl FunctionCacheMetrics {
    /// Creates the series and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<FunctionCacheMetrics> {
        let lookups = IntCounterVec::new(
            Opts::new(
                "outpost_runtime_function_cache_lookups_total",
                "Functions looked up in the compiled-function cache while compiling a module, by result (a hit is a function not compiled again).",
            ),
            &["result"],
        )?;
        let m = FunctionCacheMetrics {
            hits: lookups.with_label_values(&["hit"]),
            misses: lookups.with_label_values(&["miss"]),
            bytes: IntGauge::new(
                "outpost_runtime_function_cache_bytes",
                "Bytes of compiled functions kept for later compiles.",
            )?,
            budget: IntGauge::new(
                "outpost_runtime_function_cache_budget_bytes",
                "Bytes of compiled functions kept at most (code.function_cache_bytes).",
            )?,
            evictions: IntCounter::new(
                "outpost_runtime_function_cache_evictions_total",
                "Compiled functions dropped to stay within the budget.",
            )?,
        };
        registry.register(Box::new(lookups))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.budget.clone()))?;
        registry.register(Box::new(m.evictions.clone()))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore;

    fn cache(budget: u64) -> (FunctionCache, Registry) {
        let registry = Registry::new();
        let metrics = FunctionCacheMetrics::register(&registry).unwrap();
        (FunctionCache::new(budget, metrics), registry)
    }

    #[test]
    fn the_least_recently_used_functions_go_past_the_budget() {
        let (cache, _) = cache(1000);
        for key in [b"a", b"b", b"c"] {
            assert!(cache.insert(key, vec![0; 99]));
        }
        assert_eq!(cache.stored(), (300, 3));
        // "a" is used again, so "b" is now the oldest.
        assert!(cache.get(b"a").is_some());
        for key in [b"d", b"e", b"f", b"g", b"h", b"i", b"j", b"k"] {
            assert!(cache.insert(key, vec![0; 99]));
        }
        let (bytes, _) = cache.stored();
        assert!(
            bytes <= 900,
            "{bytes} bytes kept, budget 1000 brought to 900"
        );
        assert!(cache.get(b"b").is_none(), "the oldest went first");
        assert!(cache.get(b"a").is_some(), "a used entry stays");
        assert!(cache.get(b"k").is_some(), "the newest stays");
    }

    #[test]
    fn an_entry_over_a_tenth_of_the_budget_or_a_zero_budget_stores_nothing() {
        let (cache, _) = cache(1000);
        assert!(!cache.insert(b"big", vec![0; 100]));
        assert!(cache.insert(b"ok", vec![0; 97]));
        cache.set_budget(0);
        assert_eq!(cache.stored(), (0, 0));
        assert!(!cache.insert(b"ok", vec![0; 1]));
        assert!(cache.get(b"ok").is_none());
    }
}
