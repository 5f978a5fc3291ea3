//! The control plane's Prometheus metrics (`GET /metrics`).

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::store::Revision;

/// Every metric the control plane exports.
pub struct CpMetrics {
    registry: Registry,
    revision: IntGauge,
    deployments: IntCounterVec,
    purges: IntCounterVec,
    watch_streams: IntGauge,
    tls_handshakes: IntCounterVec,
    node_applied: IntGaugeVec,
    node_lag: IntGaugeVec,
    node_last_contact: IntGaugeVec,
    node_control_plane: IntGaugeVec,
}

impl CpMetrics {
    /// Creates and registers the metrics.
    pub fn new() -> CpMetrics {
        let m = CpMetrics {
            registry: Registry::new(),
            revision: IntGauge::new(
                "outpost_cp_revision",
                "Current revision of the desired state.",
            )
            .unwrap(),
            deployments: IntCounterVec::new(
                Opts::new(
                    "outpost_cp_deployments_total",
                    "Deployments accepted, per tenant.",
                ),
                &["tenant"],
            )
            .unwrap(),
            purges: IntCounterVec::new(
                Opts::new(
                    "outpost_cp_cache_purges_total",
                    "Edge-cache purges recorded, per tenant.",
                ),
                &["tenant"],
            )
            .unwrap(),
            watch_streams: IntGauge::new(
                "outpost_cp_watch_streams",
                "Edge nodes connected to the watch stream.",
            )
            .unwrap(),
            tls_handshakes: IntCounterVec::new(
                Opts::new(
                    "outpost_cp_tls_handshakes_total",
                    "TLS handshakes on the API listener, by result (ok, error, timeout).",
                ),
                &["result"],
            )
            .unwrap(),
            node_applied: IntGaugeVec::new(
                Opts::new(
                    "outpost_cp_node_applied_revision",
                    "Revision each node reported applied.",
                ),
                &["node"],
            )
            .unwrap(),
            node_lag: IntGaugeVec::new(
                Opts::new(
                    "outpost_cp_node_lag_revisions",
                    "How many revisions each node is behind.",
                ),
                &["node"],
            )
            .unwrap(),
            node_last_contact: IntGaugeVec::new(
                Opts::new(
                    "outpost_cp_node_last_contact_timestamp_seconds",
                    "Unix time each node was last heard from (watch stream or report).",
                ),
                &["node"],
            )
            .unwrap(),
            node_control_plane: IntGaugeVec::new(
                Opts::new(
                    "outpost_cp_node_control_plane",
                    "1 for the control plane each node follows, by node and control plane name.",
                ),
                &["node", "control_plane"],
            )
            .unwrap(),
        };
        m.registry.register(Box::new(m.revision.clone())).unwrap();
        m.registry
            .register(Box::new(m.deployments.clone()))
            .unwrap();
        m.registry.register(Box::new(m.purges.clone())).unwrap();
        m.registry
            .register(Box::new(m.watch_streams.clone()))
            .unwrap();
        m.registry
            .register(Box::new(m.tls_handshakes.clone()))
            .unwrap();
        m.registry
            .register(Box::new(m.node_applied.clone()))
            .unwrap();
        m.registry.register(Box::new(m.node_lag.clone())).unwrap();
        m.registry
            .register(Box::new(m.node_last_contact.clone()))
            .unwrap();
        m.registry
            .register(Box::new(m.node_control_plane.clone()))
            .unwrap();
        m
    }

    /// Records the current revision.
    pub fn set_revision(&self, revision: Revision) {
        self.revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
    }

    /// Counts one accepted deployment.
    pub fn deployed(&self, tenant: &str) {
        self.deployments.with_label_values(&[tenant]).inc();
    }

    /// Counts one recorded edge-cache purge.
    pub fn purged(&self, tenant: &str) {
        self.purges.with_label_values(&[tenant]).inc();
    }

    /// A watch stream opened (`+1`) or closed (`-1`).
    pub fn watch_streams(&self, delta: i64) {
        self.watch_streams.add(delta);
    }

    /// Counts one TLS handshake on the API listener: `ok`, `error` or
    /// `timeout`.
    pub fn tls_handshake(&self, result: &str) {
        self.tls_handshakes.with_label_values(&[result]).inc();
    }

    /// Renders the text format, with per-node series from `nodes`.
    pub fn render(&self, nodes: &[outpost_proto::NodeStatus]) -> String {
        let current = self.revision.get();
        for node in nodes {
            let applied = i64::try_from(node.applied_revision).unwrap_or(i64::MAX);
            self.node_applied
                .with_label_values(&[&node.id])
                .set(applied);
            self.node_lag
                .with_label_values(&[&node.id])
                .set((current - applied).max(0));
            self.node_last_contact
                .with_label_values(&[&node.id])
                .set(i64::try_from(node.last_contact).unwrap_or(i64::MAX));
        }
        // A node that moved keeps no series for the control plane it left.
        self.node_control_plane.reset();
        for node in nodes {
            if let Some(cp) = &node.control_plane {
                self.node_control_plane
                    .with_label_values(&[node.id.as_str(), cp])
                    .set(1);
            }
        }
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for CpMetrics {
    fn default() -> Self {
        CpMetrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_revision_deploys_and_node_lag() {
        let m = CpMetrics::new();
        m.set_revision(7);
        m.deployed("acme");
        m.deployed("acme");
        m.watch_streams(1);
        m.tls_handshake("timeout");
        let text = m.render(&[outpost_proto::NodeStatus {
            id: "edge-1".into(),
            applied_revision: 5,
            last_contact: 1_795_000_000,
            unavailable: Default::default(),
            identity: None,
            control_plane: Some("cp-1".into()),
        }]);
        for line in [
            "outpost_cp_revision 7",
            r#"outpost_cp_deployments_total{tenant="acme"} 2"#,
            "outpost_cp_watch_streams 1",
            r#"outpost_cp_tls_handshakes_total{result="timeout"} 1"#,
            r#"outpost_cp_node_applied_revision{node="edge-1"} 5"#,
            r#"outpost_cp_node_lag_revisions{node="edge-1"} 2"#,
            r#"outpost_cp_node_last_contact_timestamp_seconds{node="edge-1"} 1795000000"#,
            r#"outpost_cp_node_control_plane{control_plane="cp-1",node="edge-1"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
