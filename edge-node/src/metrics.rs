//! The node's Prometheus registry: each subsystem registers its own
//! metrics on it ([`outpost_runtime::metrics`] for apps and the pool,
//! [`crate::server::metrics::Metrics`] for connections and unrouted requests,
//! [`crate::tls::Metrics`] for handshakes and certificates,
//! [`crate::sync::metrics::Metrics`] for following the control plane, and
//! the standard `process_*` series: resident memory, CPU, open files), and
//! the admin listener renders the whole registry.

use prometheus::{Encoder as _, Registry, TextEncoder};

/// Every metric the node exports, by subsystem. Cloning shares the series.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Apps, instances, limits, compilation, the instance pool.
    pub runtime: outpost_runtime::Metrics,
    /// Connections and requests no app answered.
    pub server: crate::server::metrics::Metrics,
    /// TLS handshakes and installed certificates.
    pub tls: crate::tls::Metrics,
    /// Following the control plane.
    pub sync: crate::sync::metrics::Metrics,
}

impl Metrics {
    /// Every subsystem's metrics on a fresh registry.
    pub fn new() -> Metrics {
        Self::register(Registry::new()).expect("metric definitions are valid and unique")
    }

    /// Every subsystem's metrics on `registry`.
    pub fn register(registry: Registry) -> prometheus::Result<Metrics> {
        // The node's memory as the kernel counts it: what `[code]
        // budget_bytes` and the pool's settings bound.
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            runtime: outpost_runtime::Metrics::register(&registry)?,
            server: crate::server::metrics::Metrics::register(&registry)?,
            tls: crate::tls::Metrics::register(&registry)?,
            sync: crate::sync::metrics::Metrics::register(&registry)?,
            registry,
        })
    }

    /// The registry, for adding other metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        self.runtime.refresh();
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use outpost_runtime::KillReason;
    use outpost_runtime::body::ErrorCode;

    use super::*;
    use crate::server::metrics::UnroutedReason;

    /// Whole-line match: `x 1` must not pass for `x 10`.
    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn every_subsystem_renders_on_one_registry() {
        let m = Metrics::new();
        m.runtime.app("acme", "web").kill(KillReason::Fuel);
        m.server.unrouted(UnroutedReason::UnknownHost);
        m.tls.handshake("ok", "TLSv1_3", Some(0.001));
        m.sync.set_applied_revision(12);
        let text = m.render();
        let unrouted = |code: ErrorCode, n: u32| {
            format!(r#"outpost_http_unrouted_requests_total{{reason="{code}"}} {n}"#)
        };
        for line in [
            r#"outpost_runtime_limit_kills_total{app="web",reason="fuel",tenant="acme"} 1"#.into(),
            unrouted(ErrorCode::UnknownHost, 1),
            unrouted(ErrorCode::MissingHost, 0),
            r#"outpost_http_connections_open{listener="https"} 0"#.into(),
            r#"outpost_tls_handshakes_total{result="ok",version="TLSv1_3"} 1"#.into(),
            "outpost_sync_applied_revision 12".to_string(),
        ] {
            assert!(has_line(&text, &line), "{line:?} missing from\n{text}");
        }
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(rss.is_some_and(|b| b > 1e6), "{rss:?}");
    }
}
