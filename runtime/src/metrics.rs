//! The runtime's Prometheus metrics: per-app request, instance and limit
//! series, compilation and the compile cache, the instance pool.
//!
//! Names follow `outpost_<subsystem>_<what>_<unit>`; labels are bounded
//! (`tenant`, `app`, a status class or a reason — never a raw path or host).
//! Per-app series are bound once when the app is loaded ([`AppMetrics`]), so
//! the request path never hashes label values. The edge node registers
//! these beside its own subsystems' on one registry.
//!
//! Per-app series are bounded ([`PerAppSeries`]): the first
//! `max_apps` apps loaded, and any the operator names, get series of their
//! own; every other app of a tenant counts into that tenant's
//! `app="_other"` series (no app name can start with `_`). So a node
//! holding 10 000 apps exports a few hundred series sets, not 10 000, and
//! `sum by (tenant)` stays exact.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::compile_cache::Lookup;
use crate::host::SubrequestCounters;
use crate::lanes::Demotion;
use crate::limits::KillReason;

/// Buckets for request and instantiation latency: 50 µs to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];

/// Buckets for module compilation: 1 ms to 2 min.
const COMPILE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The `result` labels of `outpost_runtime_subrequests_total`.
/// `denied_address`: the host is allowed but every address it resolved to
/// is not (see [`crate::outbound`]).
pub(crate) const SUBREQUEST_RESULTS: [&str; 4] = ["sent", "denied", "limit", "denied_address"];

/// Status classes used as the `status` label.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `app` label of a tenant's apps past the per-app bound.
pub const OTHER_APPS: &str = "_other";

/// Which apps get series of their own (the node's `[app_metrics]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerAppSeries {
    /// At most this many apps (beyond `always`) have their own series;
    /// the rest of each tenant's count as [`OTHER_APPS`]. Default 100.
    pub max_apps: usize,
    /// Of those places, one tenant holds at most this many, so a tenant
    /// deploying many apps first cannot leave every other tenant's apps
    /// in `_other`. Default 20.
    pub max_apps_per_tenant: usize,
    /// Apps (`tenant/app`) that always have their own series.
    pub always: Vec<String>,
}

impl PerAppSeries {
    /// What is wrong with it, if anything.
    pub fn problems(&self) -> Vec<String> {
        let name = |n: &str| {
            (1..=63).contains(&n.len())
                && !n.starts_with('-')
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        self.always
            .iter()
            .filter(|entry| {
                !entry
                    .split_once('/')
                    .is_some_and(|(t, a)| name(t) && name(a))
            })
            .map(|entry| format!("app_metrics.always: {entry:?} is not TENANT/APP"))
            .collect()
    }
}

impl Default for PerAppSeries {
    fn default() -> Self {
        PerAppSeries {
            max_apps: 100,
            max_apps_per_tenant: 20,
            always: Vec::new(),
        }
    }
}

/// Which loaded apps have series of their own and which count as their
/// tenant's [`OTHER_APPS`].
#[derive(Default)]
struct Binding {
    policy: PerAppSeries,
    /// Apps with their own series, counted against `max_apps` unless
    /// named in `always`.
    own: std::collections::HashSet<(String, String)>,
    /// Of `own`, how many count against `max_apps`.
    counted: usize,
    /// Of `counted`, how many each tenant holds.
    counted_by_tenant: std::collections::HashMap<String, usize>,
    /// Per tenant, the apps counting into its `_other` series.
    folded: std::collections::HashMap<String, std::collections::HashSet<String>>,
}

/// The runtime's metrics. Cloning shares the series.
#[derive(Clone)]
pub struct Metrics {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    instantiate_duration: HistogramVec,
    fuel_consumed: IntCounterVec,
    limit_kills: IntCounterVec,
    traps: IntCounterVec,
    instances_in_flight: IntGaugeVec,
    guest_log_dropped: IntCounterVec,
    guest_log_unshipped: IntCounterVec,
    compile_duration: HistogramVec,
    compile_cache: IntCounterVec,
    subrequests: IntCounterVec,
    demotions: IntCounterVec,
    background_requests: IntCounterVec,
    apps_loaded: IntGauge,
    apps_unavailable: IntGauge,
    pooling_allocator: IntGauge,
    pool_memories: IntGauge,
    pool_warm_memories: IntGauge,
    pool_warm_memory_bytes: IntGauge,
    /// Compiled code loaded on demand.
    code: crate::code::CodeMetrics,
    function_cache: crate::function_cache::FunctionCacheMetrics,
    edge_cache: crate::edge_cache::CacheMetrics,
    /// The engine's pooling allocator, read at each [`Metrics::refresh`].
    pool_source: std::sync::Arc<std::sync::OnceLock<wasmtime::PoolingAllocatorMetrics>>,
    /// Which apps have series of their own.
    binding: std::sync::Arc<std::sync::Mutex<Binding>>,
}

impl Metrics {
    /// The metrics on a registry of their own, for a runtime whose series
    /// nobody scrapes (the control plane's validator, tests).
    pub fn new() -> Metrics {
        Self::register(&Registry::new()).expect("metric definitions are valid and unique")
    }

    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        let app = &["tenant", "app"];
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "outpost_http_requests_total",
                    "Requests answered for an app, by status class.",
                ),
                &["tenant", "app", "status"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "outpost_http_request_duration_seconds",
                    "Time from request head to response head, per app.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                app,
            )?,
            instantiate_duration: HistogramVec::new(
                HistogramOpts::new(
                    "outpost_runtime_instantiate_duration_seconds",
                    "Time to create a fresh instance for one request.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                app,
            )?,
            fuel_consumed: IntCounterVec::new(
                Opts::new(
                    "outpost_runtime_fuel_consumed_total",
                    "Fuel burned by an app's instances.",
                ),
                app,
            )?,
            limit_kills: IntCounterVec::new(
                Opts::new(
                    "outpost_runtime_limit_kills_total",
                    "Requests stopped because they hit a limit, by limit.",
                ),
                &["tenant", "app", "reason"],
            )?,
            traps: IntCounterVec::new(
                Opts::new(
                    "outpost_runtime_traps_total",
                    "Guest traps not caused by a limit (bugs in the guest).",
                ),
                app,
            )?,
            instances_in_flight: IntGaugeVec::new(
                Opts::new(
                    "outpost_runtime_instances_in_flight",
                    "Instances of an app alive right now.",
                ),
                app,
            )?,
            guest_log_dropped: IntCounterVec::new(
                Opts::new(
                    "outpost_runtime_guest_log_dropped_bytes_total",
                    "Guest stdout/stderr bytes dropped over the per-request cap.",
                ),
                app,
            )?,
            guest_log_unshipped: IntCounterVec::new(
                Opts::new(
                    "outpost_runtime_guest_log_unshipped_lines_total",
                    "Guest output lines dropped before shipping to the control plane: the tenant's ship queue, or the node's, was full (the node's own log keeps them).",
                ),
                app,
            )?,
            compile_duration: HistogramVec::new(
                HistogramOpts::new(
                    "outpost_runtime_compile_duration_seconds",
                    "Time to compile an app's component.",
                )
                .buckets(COMPILE_BUCKETS.to_vec()),
                app,
            )?,
            subrequests: IntCounterVec::new(
                Opts::new(
                    "outpost_runtime_subrequests_total",
                    "Outbound HTTP requests from guests, by result (sent, denied: host not allow-listed, limit: over the per-request cap, denied_address: every address of an allowed host refused).",
                ),
                &["tenant", "app", "result"],
            )?,
            demotions: IntCounterVec::new(
                Opts::new(
                    "outpost_runtime_demotions_total",
                    "Times an app was sent to the low-priority background lane, by reason (cpu: a request used up its foreground CPU budget; limit: a request ended in a limit kill or a trap).",
                ),
                &["tenant", "app", "reason"],
            )?,
            background_requests: IntCounterVec::new(
                Opts::new(
                    "outpost_runtime_background_requests_total",
                    "Requests that ran, wholly or partly, in the low-priority background lane.",
                ),
                app,
            )?,
            compile_cache: IntCounterVec::new(
                Opts::new(
                    "outpost_runtime_compile_cache_lookups_total",
                    "Compiled-module cache lookups, by result (hit, miss, invalid).",
                ),
                &["result"],
            )?,
            apps_loaded: IntGauge::new("outpost_runtime_apps_loaded", "Apps ready to serve.")?,
            apps_unavailable: IntGauge::new(
                "outpost_runtime_apps_unavailable",
                "Apps routed to this node that failed to load here (their routes answer 503 app_unavailable).",
            )?,
            pool_memories: IntGauge::new(
                "outpost_runtime_pool_memories_in_use",
                "Linear-memory slots of the instance pool in use right now.",
            )?,
            pool_warm_memories: IntGauge::new(
                "outpost_runtime_pool_warm_memories",
                "Unused memory slots that were used before and keep some pages resident (at most pool.max_unused_warm_slots).",
            )?,
            pool_warm_memory_bytes: IntGauge::new(
                "outpost_runtime_pool_warm_memory_bytes",
                "Bytes kept resident in unused warm memory slots.",
            )?,
            pooling_allocator: IntGauge::new(
                "outpost_runtime_pooling_allocator",
                "1 if instances come from the pooling allocator, 0 if on-demand.",
            )?,
            code: crate::code::CodeMetrics::register(registry)?,
            function_cache: crate::function_cache::FunctionCacheMetrics::register(registry)?,
            edge_cache: crate::edge_cache::CacheMetrics::register(registry)?,
            pool_source: Default::default(),
            binding: Default::default(),
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.request_duration.clone()))?;
        registry.register(Box::new(m.instantiate_duration.clone()))?;
        registry.register(Box::new(m.fuel_consumed.clone()))?;
        registry.register(Box::new(m.limit_kills.clone()))?;
        registry.register(Box::new(m.traps.clone()))?;
        registry.register(Box::new(m.instances_in_flight.clone()))?;
        registry.register(Box::new(m.guest_log_dropped.clone()))?;
        registry.register(Box::new(m.guest_log_unshipped.clone()))?;
        registry.register(Box::new(m.compile_duration.clone()))?;
        registry.register(Box::new(m.compile_cache.clone()))?;
        registry.register(Box::new(m.subrequests.clone()))?;
        registry.register(Box::new(m.demotions.clone()))?;
        registry.register(Box::new(m.background_requests.clone()))?;
        registry.register(Box::new(m.apps_loaded.clone()))?;
        registry.register(Box::new(m.apps_unavailable.clone()))?;
        registry.register(Box::new(m.pooling_allocator.clone()))?;
        registry.register(Box::new(m.pool_memories.clone()))?;
        registry.register(Box::new(m.pool_warm_memories.clone()))?;
        registry.register(Box::new(m.pool_warm_memory_bytes.clone()))?;
        for result in Lookup::ALL {
            m.compile_cache.with_label_values(&[result.as_str()]);
        }
        Ok(m)
    }

    /// The compile cache's lookups, by result.
    pub(crate) fn compile_cache_lookups(&self) -> IntCounterVec {
        self.compile_cache.clone()
    }

    /// The series of compiled code loaded on demand.
    pub(crate) fn code(&self) -> crate::code::CodeMetrics {
        self.code.clone()
    }

    pub(crate) fn edge_cache(&self) -> crate::edge_cache::CacheMetrics {
        self.edge_cache.clone()
    }

    pub(crate) fn function_cache(&self) -> crate::function_cache::FunctionCacheMetrics {
        self.function_cache.clone()
    }

    /// Reads the instance pool's occupancy from `pool` at every render.
    pub fn watch_pool(&self, pool: wasmtime::PoolingAllocatorMetrics) {
        let _ = self.pool_source.set(pool);
    }

    /// Brings the gauges read from elsewhere (the instance pool) up to
    /// date; call before each scrape.
    pub fn refresh(&self) {
        if let Some(pool) = self.pool_source.get() {
            let int = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            self.pool_memories.set(int(pool.memories()));
            self.pool_warm_memories
                .set(i64::from(pool.unused_warm_memories()));
            self.pool_warm_memory_bytes
                .set(int(pool.unused_memory_bytes_resident()));
        }
    }

    /// Sets which apps get series of their own; apps already loaded keep
    /// what they have.
    pub fn set_per_app(&self, policy: PerAppSeries) {
        self.binding.lock().unwrap().policy = policy;
    }

    /// Binds the series of one app: its own, or its tenant's
    /// [`OTHER_APPS`] once the per-app bound is reached.
    pub fn app(&self, tenant: &str, app: &str) -> AppMetrics {
        let key = (tenant.to_string(), app.to_string());
        let mut binding = self.binding.lock().unwrap();
        let own = if binding.own.contains(&key) {
            true
        } else if binding.folded.get(tenant).is_some_and(|f| f.contains(app)) {
            false
        } else if binding.policy.always.contains(&format!("{tenant}/{app}")) {
            binding.own.insert(key);
            true
        } else if binding.counted < binding.policy.max_apps
            && binding.counted_by_tenant.get(tenant).copied().unwrap_or(0)
                < binding.policy.max_apps_per_tenant
        {
            binding.own.insert(key);
            binding.counted += 1;
            *binding
                .counted_by_tenant
                .entry(tenant.to_string())
                .or_default() += 1;
            true
        } else {
            binding.folded.entry(key.0).or_default().insert(key.1);
            false
        };
        drop(binding);
        self.bind(tenant, if own { app } else { OTHER_APPS })
    }

    /// The series labelled `tenant`, `app`.
    fn bind(&self, tenant: &str, app: &str) -> AppMetrics {
        let labels = [tenant, app];
        AppMetrics {
            requests: STATUS_CLASSES
                .map(|class| self.requests.with_label_values(&[tenant, app, class])),
            request_duration: self.request_duration.with_label_values(&labels),
            instantiate_duration: self.instantiate_duration.with_label_values(&labels),
            fuel_consumed: self.fuel_consumed.with_label_values(&labels),
            limit_kills: KillReason::ALL.map(|r| {
                self.limit_kills
                    .with_label_values(&[tenant, app, r.as_str()])
            }),
            traps: self.traps.with_label_values(&labels),
            instances_in_flight: self.instances_in_flight.with_label_values(&labels),
            guest_log_dropped: self.guest_log_dropped.with_label_values(&labels),
            guest_log_unshipped: self.guest_log_unshipped.with_label_values(&labels),
            compile_duration: self.compile_duration.with_label_values(&labels),
            subrequests: {
                let [sent, denied, limit, denied_address] = SUBREQUEST_RESULTS
                    .map(|r| self.subrequests.with_label_values(&[tenant, app, r]));
                SubrequestCounters {
                    sent,
                    denied,
                    limit,
                    denied_address,
                }
            },
            demotions: Demotion::ALL
                .map(|r| self.demotions.with_label_values(&[tenant, app, r.as_str()])),
            background_requests: self.background_requests.with_label_values(&labels),
        }
    }

    /// Forgets an unloaded app's series so they don't linger forever (its
    /// tenant's [`OTHER_APPS`] series go with the last app counting there).
    pub fn remove_app(&self, tenant: &str, app: &str) {
        let key = (tenant.to_string(), app.to_string());
        let mut binding = self.binding.lock().unwrap();
        if binding.own.remove(&key) {
            if !binding.policy.always.contains(&format!("{tenant}/{app}")) {
                binding.counted = binding.counted.saturating_sub(1);
                if let Some(n) = binding.counted_by_tenant.get_mut(tenant) {
                    *n -= 1;
                    if *n == 0 {
                        binding.counted_by_tenant.remove(tenant);
                    }
                }
            }
            drop(binding);
            self.unbind(tenant, app);
            return;
        }
        let emptied = match binding.folded.get_mut(tenant) {
            Some(apps) => apps.remove(app) && apps.is_empty(),
            None => false,
        };
        if emptied {
            binding.folded.remove(tenant);
            drop(binding);
            self.unbind(tenant, OTHER_APPS);
        }
    }

    /// Removes the series labelled `tenant`, `app`.
    fn unbind(&self, tenant: &str, app: &str) {
        let labels = [tenant, app];
        for class in STATUS_CLASSES {
            let _ = self.requests.remove_label_values(&[tenant, app, class]);
        }
        for r in KillReason::ALL {
            let _ = self
                .limit_kills
                .remove_label_values(&[tenant, app, r.as_str()]);
        }
        let _ = self.request_duration.remove_label_values(&labels);
        let _ = self.instantiate_duration.remove_label_values(&labels);
        let _ = self.fuel_consumed.remove_label_values(&labels);
        let _ = self.traps.remove_label_values(&labels);
        let _ = self.instances_in_flight.remove_label_values(&labels);
        let _ = self.guest_log_dropped.remove_label_values(&labels);
        let _ = self.guest_log_unshipped.remove_label_values(&labels);
        let _ = self.compile_duration.remove_label_values(&labels);
        for r in SUBREQUEST_RESULTS {
            let _ = self.subrequests.remove_label_values(&[tenant, app, r]);
        }
        for r in Demotion::ALL {
            let _ = self
                .demotions
                .remove_label_values(&[tenant, app, r.as_str()]);
        }
        let _ = self.background_requests.remove_label_values(&labels);
    }

    /// Sets the number of apps that failed to load.
    pub fn set_apps_unavailable(&self, n: usize) {
        self.apps_unavailable.set(n as i64);
    }

    /// Sets the number of apps ready to serve.
    pub fn set_apps_loaded(&self, n: usize) {
        self.apps_loaded.set(n as i64);
    }

    /// Records whether the pooling allocator is in use.
    pub fn set_pooling_allocator(&self, on: bool) {
        self.pooling_allocator.set(i64::from(on));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// One app's pre-bound series.
#[derive(Clone)]
pub struct AppMetrics {
    requests: [IntCounter; 5],
    /// Time to response head.
    pub request_duration: Histogram,
    /// Time to create an instance.
    pub instantiate_duration: Histogram,
    /// Fuel burned.
    pub fuel_consumed: IntCounter,
    limit_kills: [IntCounter; KillReason::ALL.len()],
    /// Guest traps not caused by a limit.
    pub traps: IntCounter,
    /// Live instances.
    pub instances_in_flight: IntGauge,
    /// Guest output dropped over the cap.
    pub guest_log_dropped: IntCounter,
    /// Guest lines dropped from the ship queue before shipping.
    pub guest_log_unshipped: IntCounter,
    /// Component compile time.
    pub compile_duration: Histogram,
    /// Outbound requests: sent, denied, over the limit, denied by address.
    pub subrequests: SubrequestCounters,
    /// Demotions to the background lane, in [`Demotion::ALL`] order.
    pub demotions: [IntCounter; 2],
    /// Requests that ran in the background lane.
    pub background_requests: IntCounter,
}

impl AppMetrics {
    /// Counts one answered request by its status code.
    pub fn request(&self, status: u16) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        self.requests[class].inc();
    }

    /// Counts one request stopped by a limit.
    pub fn kill(&self, reason: KillReason) {
        self.kill_counter(reason).inc();
    }

    /// The counter for one limit, for code that counts later by itself.
    pub fn kill_counter(&self, reason: KillReason) -> IntCounter {
        let i = KillReason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("ALL lists every reason");
        self.limit_kills[i].clone()
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder as _, TextEncoder};

    use super::*;

    fn render(registry: &Registry) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn lines<'a>(text: &'a str, starts: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(starts)).collect()
    }

    /// Whole-line match: `x 1` must not pass for `x 10`.
    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn app_series_render_with_their_labels() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap();
        let a = m.app("acme", "web");
        a.request(200);
        a.request(204);
        a.request(503);
        a.kill(KillReason::Fuel);
        a.fuel_consumed.inc_by(1234);
        a.instances_in_flight.inc();
        a.guest_log_unshipped.inc_by(7);
        m.set_apps_loaded(3);
        m.compile_cache_lookups()
            .with_label_values(&[Lookup::Hit.as_str()])
            .inc();
        let text = render(&registry);
        assert_eq!(
            lines(&text, "outpost_http_requests_total{"),
            vec![
                r#"outpost_http_requests_total{app="web",status="1xx",tenant="acme"} 0"#,
                r#"outpost_http_requests_total{app="web",status="2xx",tenant="acme"} 2"#,
                r#"outpost_http_requests_total{app="web",status="3xx",tenant="acme"} 0"#,
                r#"outpost_http_requests_total{app="web",status="4xx",tenant="acme"} 0"#,
                r#"outpost_http_requests_total{app="web",status="5xx",tenant="acme"} 1"#,
            ]
        );
        for line in [
            r#"outpost_runtime_limit_kills_total{app="web",reason="fuel",tenant="acme"} 1"#,
            r#"outpost_runtime_limit_kills_total{app="web",reason="timeout",tenant="acme"} 0"#,
            r#"outpost_runtime_fuel_consumed_total{app="web",tenant="acme"} 1234"#,
            r#"outpost_runtime_instances_in_flight{app="web",tenant="acme"} 1"#,
            r#"outpost_runtime_guest_log_unshipped_lines_total{app="web",tenant="acme"} 7"#,
            "outpost_runtime_apps_loaded 3",
            r#"outpost_runtime_compile_cache_lookups_total{result="hit"} 1"#,
            r#"outpost_runtime_compile_cache_lookups_total{result="invalid"} 0"#,
            "# TYPE outpost_http_request_duration_seconds histogram",
        ] {
            assert!(has_line(&text, line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn removed_apps_leave_no_series() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap();
        m.app("acme", "web").request(200);
        m.remove_app("acme", "web");
        assert!(!render(&registry).contains(r#"app="web""#));
    }

    #[test]
    fn past_the_bound_apps_count_into_their_tenants_other_series() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap();
        m.set_per_app(PerAppSeries {
            max_apps: 2,
            always: vec!["b/vip".into()],
            ..PerAppSeries::default()
        });
        for (tenant, app) in [
            ("a", "one"),
            ("a", "two"),
            ("a", "three"),
            ("b", "vip"),
            ("b", "x"),
        ] {
            m.app(tenant, app).request(200);
        }
        // Bound again (a new version of a loaded app): the same series.
        m.app("a", "three").request(500);
        let text = render(&registry);
        for line in [
            r#"outpost_http_requests_total{app="one",status="2xx",tenant="a"} 1"#,
            r#"outpost_http_requests_total{app="two",status="2xx",tenant="a"} 1"#,
            r#"outpost_http_requests_total{app="_other",status="2xx",tenant="a"} 1"#,
            r#"outpost_http_requests_total{app="_other",status="5xx",tenant="a"} 1"#,
            r#"outpost_http_requests_total{app="vip",status="2xx",tenant="b"} 1"#,
            r#"outpost_http_requests_total{app="_other",status="2xx",tenant="b"} 1"#,
        ] {
            assert!(has_line(&text, line), "{line:?} missing from\n{text}");
        }
        assert!(!text.contains(r#"app="three""#) && !text.contains(r#"app="x""#));

        // The last app counting into `_other` takes it along; an app with
        // its own series frees its place for the next one loaded.
        m.remove_app("a", "three");
        assert!(!render(&registry).contains(r#"app="_other",status="2xx",tenant="a""#));
        m.remove_app("a", "one");
        m.app("a", "four").request(200);
        let text = render(&registry);
        assert!(has_line(
            &text,
            r#"outpost_http_requests_total{app="four",status="2xx",tenant="a"} 1"#
        ));
        assert!(!text.contains(r#"app="one""#));
    }

    /// One tenant that loads many apps first takes at most its share of
    /// the places: later tenants' apps still get series of their own.
    #[test]
    fn one_tenant_cannot_take_every_per_app_place() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap();
        m.set_per_app(PerAppSeries {
            max_apps: 10,
            max_apps_per_tenant: 4,
            always: Vec::new(),
        });
        for a in 0..50 {
            m.app("greedy", &format!("app-{a}")).request(200);
        }
        m.app("late", "web").request(200);
        let text = render(&registry);
        assert!(
            has_line(
                &text,
                r#"outpost_http_requests_total{app="web",status="2xx",tenant="late"} 1"#
            ),
            "{text}"
        );
        let greedy_own = (0..50)
            .filter(|a| text.contains(&format!(r#"app="app-{a}""#)))
            .count();
        assert_eq!(greedy_own, 4);
        assert!(has_line(
            &text,
            r#"outpost_http_requests_total{app="_other",status="2xx",tenant="greedy"} 46"#
        ));
        // A place the tenant frees is its own to take again.
        m.remove_app("greedy", "app-0");
        m.app("greedy", "app-new").request(200);
        assert!(render(&registry).contains(r#"app="app-new""#));
    }

    /// With the default bound, 10 000 apps export well under 2 MB, however
    /// they are spread over tenants (within reason: each tenant past the
    /// bound adds one `_other` set).
    #[test]
    fn ten_thousand_apps_render_under_two_megabytes() {
        for (tenants, apps_each) in [(10, 1_000), (100, 100)] {
            let registry = Registry::new();
            let m = Metrics::register(&registry).unwrap();
            for t in 0..tenants {
                for a in 0..apps_each {
                    m.app(&format!("tenant-{t}"), &format!("app-{a}"))
                        .request(200);
                }
            }
            let size = render(&registry).len();
            println!("{tenants} tenants x {apps_each} apps: /metrics {size} bytes");
            assert!(size < 2_000_000, "{size} bytes");
        }
    }
}
