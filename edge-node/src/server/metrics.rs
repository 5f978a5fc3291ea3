//! The listeners' metrics: open connections, and requests the node
//! answered itself because no app matched.

use outpost_runtime::body::ErrorCode;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Connections and unrouted requests.
#[derive(Clone)]
pub struct Metrics {
    connections_open: IntGaugeVec,
    unrouted: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        let m = Metrics {
            connections_open: IntGaugeVec::new(
                Opts::new(
                    "outpost_http_connections_open",
                    "Client connections open, by listener (http, https).",
                ),
                &["listener"],
            )?,
            unrouted: IntCounterVec::new(
                Opts::new(
                    "outpost_http_unrouted_requests_total",
                    "Requests the node answered itself because no app could take them (no route, no host, another tenant's TLS name, an app that failed to load here).",
                ),
                &["reason"],
            )?,
        };
        registry.register(Box::new(m.unrouted.clone()))?;
        registry.register(Box::new(m.connections_open.clone()))?;
        for listener in ["http", "https"] {
            m.connections_open.with_label_values(&[listener]);
        }
        for reason in UnroutedReason::ALL {
            m.unrouted.with_label_values(&[reason.code().as_str()]);
        }
        Ok(m)
    }

    /// Counts a request the node answered without any app.
    pub fn unrouted(&self, reason: UnroutedReason) {
        self.unrouted
            .with_label_values(&[reason.code().as_str()])
            .inc();
    }

    /// The open-connections gauge of one listener.
    pub fn connections_open(&self, listener: &str) -> IntGauge {
        self.connections_open.with_label_values(&[listener])
    }
}

/// Why a request reached no app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnroutedReason {
    /// No `Host` header (nor authority in the URI).
    MissingHost,
    /// No route for that host and path.
    UnknownHost,
    /// On TLS, the `Host` belongs to another tenant than the SNI name.
    Misdirected,
    /// The app routed there failed to load on this node.
    AppUnavailable,
    /// The app's tenant is disabled.
    TenantDisabled,
}

impl UnroutedReason {
    const ALL: [UnroutedReason; 5] = [
        UnroutedReason::MissingHost,
        UnroutedReason::UnknownHost,
        UnroutedReason::Misdirected,
        UnroutedReason::AppUnavailable,
        UnroutedReason::TenantDisabled,
    ];

    /// The `x-outpost-error` code, also the metric's `reason` label.
    pub fn code(self) -> ErrorCode {
        match self {
            UnroutedReason::MissingHost => ErrorCode::MissingHost,
            UnroutedReason::UnknownHost => ErrorCode::UnknownHost,
            UnroutedReason::Misdirected => ErrorCode::Misdirected,
            UnroutedReason::AppUnavailable => ErrorCode::AppUnavailable,
            UnroutedReason::TenantDisabled => ErrorCode::TenantDisabled,
        }
    }
}
