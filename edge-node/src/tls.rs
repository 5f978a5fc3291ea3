//! Certificates on the node: its default certificate, the SNI table
//! tenants' certificates live in, and the TLS metrics. Parsing and checking
//! a certificate is [`outpost_runtime::cert`], shared with the control
//! plane; the rustls server config that looks names up here is
//! [`crate::server`]'s.

use std::collections::HashMap;
use std::sync::Arc;

use outpost_runtime::metrics::LATENCY_BUCKETS;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

pub use outpost_runtime::cert::{Certificate, provider};

use crate::error::{Error, Result};

fn bad(reason: impl Into<String>) -> Error {
    outpost_runtime::Error::Certificate(reason.into()).into()
}

/// The node's default certificate: read from `files` (chain, key), or a
/// self-signed one for `localhost` when none are given — browsers warn,
/// and tenants' own certificates are served for their names anyway.
pub fn default_certificate(
    files: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<Certificate> {
    let Some((chain, key)) = files else {
        tracing::warn!(
            "no --tls-cert given: serving a generated self-signed certificate for names without one"
        );
        return Ok(Certificate::self_signed(&["localhost"])?.0);
    };
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })
    };
    Certificate::parse(&read(chain)?, &read(key)?)
        .map_err(|e| bad(format!("{}: {e}", chain.display())))
}

/// One installed certificate and the tenant it belongs to.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Owning tenant.
    pub tenant: String,
    /// The certificate.
    pub cert: Arc<Certificate>,
}

/// Tenants' certificates by the hostname they were installed for: exact
/// names, and `*.parent` wildcards stored under `parent`. Lookups are two
/// hash probes at most.
#[derive(Debug, Default, Clone)]
pub struct CertTable {
    exact: HashMap<String, Installed>,
    wildcard: HashMap<String, Installed>,
}

impl CertTable {
    /// Adds or replaces the certificate for `hostname` (`a.example.com` or
    /// `*.example.com`).
    pub fn insert(&mut self, hostname: &str, installed: Installed) {
        let host = hostname.to_ascii_lowercase();
        match host.strip_prefix("*.") {
            Some(parent) => self.wildcard.insert(parent.to_string(), installed),
            None => self.exact.insert(host, installed),
        };
    }

    /// Removes the certificate installed for `hostname`.
    pub fn remove(&mut self, hostname: &str) {
        let host = hostname.to_ascii_lowercase();
        match host.strip_prefix("*.") {
            Some(parent) => self.wildcard.remove(parent),
            None => self.exact.remove(&host),
        };
    }

    /// The certificate for a TLS server name: the exact entry, else the
    /// wildcard for its parent domain; `true` with an exact match.
    pub fn lookup(&self, server_name: &str) -> Option<(&Installed, bool)> {
        let name = server_name.trim_end_matches('.');
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        match self.exact.get(name) {
            Some(exact) => Some((exact, true)),
            None => Some((self.wildcard.get(name.split_once('.')?.1)?, false)),
        }
    }

    /// How many certificates are installed.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every installed certificate.
    pub fn iter(&self) -> impl Iterator<Item = &Installed> {
        self.exact.values().chain(self.wildcard.values())
    }
}

/// TLS handshakes and the installed certificates.
#[derive(Clone)]
pub struct Metrics {
    handshakes: IntCounterVec,
    handshake_duration: Histogram,
    certificates: IntGauge,
    expiry: IntGauge,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        let m = Metrics {
            handshakes: IntCounterVec::new(
                Opts::new(
                    "outpost_tls_handshakes_total",
                    "TLS handshakes, by result (ok, error, timeout) and protocol version.",
                ),
                &["result", "version"],
            )?,
            handshake_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "outpost_tls_handshake_duration_seconds",
                    "Time from accepting a connection to a finished TLS handshake.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            certificates: IntGauge::new(
                "outpost_tls_certificates_loaded",
                "Tenant certificates installed on this node.",
            )?,
            // A timestamp, not a countdown: Prometheus subtracts `time()`
            // itself, and the base unit keeps `promtool check metrics` quiet.
            expiry: IntGauge::new(
                "outpost_tls_certificate_expiry_timestamp_seconds",
                "Unix time the nearest certificate (tenants' or the default) expires; 0 while none is installed.",
            )?,
        };
        registry.register(Box::new(m.handshakes.clone()))?;
        registry.register(Box::new(m.handshake_duration.clone()))?;
        registry.register(Box::new(m.certificates.clone()))?;
        registry.register(Box::new(m.expiry.clone()))?;
        // Every result and version from the start, at 0, so dashboards
        // and rates have a series before the first handshake.
        for result in ["ok", "error", "timeout"] {
            let versions: &[&str] = if result == "ok" {
                &["TLSv1_2", "TLSv1_3"]
            } else {
                &["none"]
            };
            for version in versions {
                m.handshakes.with_label_values(&[result, version]);
            }
        }
        Ok(m)
    }

    /// Counts one TLS handshake; `version` is e.g. `TLSv1_3`, or `none`.
    pub fn handshake(&self, result: &str, version: &str, seconds: Option<f64>) {
        self.handshakes.with_label_values(&[result, version]).inc();
        if let Some(s) = seconds {
            self.handshake_duration.observe(s);
        }
    }

    /// Records the installed certificates: how many tenants' there are and
    /// when the first of them (or the default) expires.
    pub fn set_certificates(&self, tenants: usize, nearest_expiry: Option<i64>) {
        self.certificates.set(tenants as i64);
        self.expiry.set(nearest_expiry.unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> Certificate {
        Certificate::self_signed(names).unwrap().0
    }

    #[test]
    fn lookups_try_the_exact_name_then_the_wildcard() {
        let mut table = CertTable::default();
        let entry = |tenant: &str| Installed {
            tenant: tenant.into(),
            cert: Arc::new(cert(&["x.example.com"])),
        };
        table.insert("a.example.com", entry("exact"));
        table.insert("*.example.com", entry("wild"));
        assert_eq!(table.lookup("a.example.com").unwrap().0.tenant, "exact");
        assert_eq!(table.lookup("A.EXAMPLE.COM.").unwrap().0.tenant, "exact");
        let (wild, exact) = table.lookup("b.example.com").unwrap();
        assert_eq!((wild.tenant.as_str(), exact), ("wild", false));
        assert!(table.lookup("example.com").is_none());
        assert!(table.lookup("c.b.example.com").is_none());
        assert_eq!(table.len(), 2);
        table.remove("*.example.com");
        assert!(table.lookup("b.example.com").is_none());
    }
}
