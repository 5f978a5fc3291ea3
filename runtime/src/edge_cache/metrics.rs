//! The edge cache's series, by tenant (never by URL: those are unbounded).

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::verdict::Verdict;

/// The edge cache's series.
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    requests: IntCounterVec,
    coalesced: IntCounterVec,
    stored: IntGaugeVec,
    evictions: IntCounterVec,
    purged: IntCounterVec,
    bytes: IntGauge,
    budget: IntGauge,
}

impl CacheMetrics {
    /// Creates the series and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<CacheMetrics> {
        let m = CacheMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "outpost_cache_requests_total",
                    "Workers' GET and HEAD fetches through the edge cache, by tenant and result (hit, miss, stale, revalidated, bypass).",
                ),
                &["tenant", "result"],
            )?,
            coalesced: IntCounterVec::new(
                Opts::new(
                    "outpost_cache_coalesced_total",
                    "Fetches that waited for another request's origin fetch of the same URL instead of making their own.",
                ),
                &["tenant"],
            )?,
            stored: IntGaugeVec::new(
                Opts::new(
                    "outpost_cache_stored_bytes",
                    "Bytes of a tenant's objects in the edge cache.",
                ),
                &["tenant"],
            )?,
            evictions: IntCounterVec::new(
                Opts::new(
                    "outpost_cache_evictions_total",
                    "Objects dropped from the edge cache to stay within a budget, by the tenant that owned them.",
                ),
                &["tenant"],
            )?,
            purged: IntCounterVec::new(
                Opts::new(
                    "outpost_cache_purged_objects_total",
                    "Objects removed from the edge cache by the tenant's purges.",
                ),
                &["tenant"],
            )?,
            bytes: IntGauge::new(
                "outpost_cache_bytes",
                "Bytes of all tenants' objects in the edge cache.",
            )?,
            budget: IntGauge::new(
                "outpost_cache_budget_bytes",
                "Bytes the edge cache holds at most (cache.budget_bytes; 0 while the cache is off).",
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.coalesced.clone()))?;
        registry.register(Box::new(m.stored.clone()))?;
        registry.register(Box::new(m.evictions.clone()))?;
        registry.register(Box::new(m.purged.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.budget.clone()))?;
        Ok(m)
    }

    pub(super) fn verdict(&self, tenant: &str, verdict: Verdict) {
        if verdict == Verdict::Miss {
            self.touch(tenant);
        }
        self.requests
            .with_label_values(&[tenant, verdict.label()])
            .inc();
    }

    /// Creates every series of `tenant` at 0 (on a miss, which comes
    /// before anything of the tenant's is stored, evicted or served from
    /// the cache), so a dashboard shows 0 rather than nothing.
    fn touch(&self, tenant: &str) {
        for verdict in Verdict::ALL {
            self.requests.with_label_values(&[tenant, verdict.label()]);
        }
        self.coalesced.with_label_values(&[tenant]);
        self.evictions.with_label_values(&[tenant]);
        self.purged.with_label_values(&[tenant]);
    }

    pub(super) fn coalesced(&self, tenant: &str) {
        self.coalesced.with_label_values(&[tenant]).inc();
    }

    pub(super) fn evicted(&self, tenant: &str, n: usize) {
        self.evictions.with_label_values(&[tenant]).inc_by(n as u64);
    }

    pub(super) fn purged(&self, tenant: &str, n: usize) {
        self.purged.with_label_values(&[tenant]).inc_by(n as u64);
    }

    /// A tenant's stored bytes; a tenant holding nothing has no series.
    pub(super) fn set_stored(&self, tenant: &str, bytes: u64) {
        if bytes == 0 {
            let _ = self.stored.remove_label_values(&[tenant]);
        } else {
            self.stored
                .with_label_values(&[tenant])
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    pub(super) fn set_total(&self, bytes: u64) {
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub(super) fn set_budget(&self, bytes: u64) {
        self.budget.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}
