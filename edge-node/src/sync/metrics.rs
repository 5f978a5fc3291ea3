//! The sync subsystem's metrics: the revision served, the lag behind the
//! control plane, reconnections, and the on-disk cache's size.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The sync subsystem's metrics.
#[derive(Clone)]
pub struct Metrics {
    applied_revision: IntGauge,
    lag: IntGauge,
    reconnects: IntCounter,
    cache_bytes: IntGaugeVec,
    module_fetches: IntCounterVec,
    control_plane: IntGaugeVec,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        let m = Metrics {
            applied_revision: IntGauge::new(
                "outpost_sync_applied_revision",
                "Control-plane revision this node serves (0 in standalone mode).",
            )?,
            lag: IntGauge::new(
                "outpost_sync_lag_revisions",
                "Revisions the control plane is ahead of what this node serves.",
            )?,
            reconnects: IntCounter::new(
                "outpost_sync_reconnects_total",
                "Times the watch stream to the control plane was re-established.",
            )?,
            cache_bytes: IntGaugeVec::new(
                Opts::new(
                    "outpost_sync_cache_bytes",
                    "Bytes in the node's on-disk cache after the last prune, by kind (modules, compiled).",
                ),
                &["kind"],
            )?,
            control_plane: IntGaugeVec::new(
                Opts::new(
                    "outpost_sync_control_plane",
                    "The control plane this node follows now (one series, value 1).",
                ),
                &["url"],
            )?,
            module_fetches: IntCounterVec::new(
                Opts::new(
                    "outpost_sync_module_fetches_total",
                    "Modules fetched (not in the cache), by source (registry, control_plane) and result (ok, miss: the registry lacks it, error).",
                ),
                &["source", "result"],
            )?,
        };
        registry.register(Box::new(m.applied_revision.clone()))?;
        registry.register(Box::new(m.reconnects.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.cache_bytes.clone()))?;
        registry.register(Box::new(m.module_fetches.clone()))?;
        registry.register(Box::new(m.control_plane.clone()))?;
        Ok(m)
    }

    /// Records the control-plane revision now served.
    pub fn set_applied_revision(&self, revision: u64) {
        self.applied_revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
    }

    /// Records how far behind the control plane this node is.
    pub fn set_lag(&self, revisions: u64) {
        self.lag.set(i64::try_from(revisions).unwrap_or(i64::MAX));
    }

    /// Counts one reconnection of the watch stream.
    pub fn reconnect(&self) {
        self.reconnects.inc();
    }

    /// Records that `url` is the control plane followed now (labels are
    /// bounded by the configured list).
    pub fn set_control_plane(&self, url: &str) {
        self.control_plane.reset();
        self.control_plane.with_label_values(&[url]).set(1);
    }

    /// Counts one module fetch from `source` (`registry`, `control_plane`)
    /// that ended with `result` (`ok`, `miss`, `error`).
    pub fn module_fetched(&self, source: &str, result: &str) {
        self.module_fetches
            .with_label_values(&[source, result])
            .inc();
    }

    /// Records the size of one kind of on-disk cache after a prune.
    pub fn set_cache_bytes(&self, kind: &str, bytes: u64) {
        self.cache_bytes
            .with_label_values(&[kind])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}
