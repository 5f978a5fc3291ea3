//! The per-request sandbox limits, their defaults, and per-app overrides.

use std::time::Duration;

use serde::Deserialize;

use crate::body::ErrorCode;

/// Mebibyte, the unit memory and body limits are configured in.
pub const MIB: u64 = 1024 * 1024;

/// Limits applied to every request an app serves.
///
/// The node has one set of defaults; an app may override any field
/// ([`LimitOverrides`]). Each limit maps to one `reason` label in the
/// `outpost_runtime_limit_kills_total` metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, wasm instructions) one request may burn. Exceeded → 503, reason `fuel`.
    pub fuel: u64,
    /// Memory one instance may hold, in bytes: the sum of all its linear
    /// memories and tables (8 bytes a table element), however many core
    /// instances the component has. Growing past it fails inside the
    /// guest; a resulting trap → 503, reason `memory`.
    pub memory_bytes: u64,
    /// Wall-clock deadline for the whole request, response body included.
    /// Exceeded → 504, reason `timeout`.
    pub timeout: Duration,
    /// Instances of this app running at once. Past it → 503 with
    /// `Retry-After`, reason `concurrency`.
    pub max_concurrency: u32,
    /// Largest request body accepted, in bytes. Past it → 413, reason `request_body`.
    pub max_request_body_bytes: u64,
    /// Largest response body sent, in bytes. Past it the body is cut off
    /// (or 502 if the guest declared a larger `content-length`), reason `response_body`.
    pub max_response_body_bytes: u64,
    /// Guest stdout+stderr kept per request, in bytes; the rest is dropped.
    pub max_log_bytes_per_request: u64,
    /// Outbound HTTP requests (to allow-listed hosts) one request may make.
    /// Past it the guest gets an `internal-error` naming the limit, and the
    /// metric `outpost_runtime_subrequests_total{result="limit"}` counts it.
    pub max_subrequests: u32,
}

impl Limits {
    /// Measured per request: C hello ~400 units, JS hello ~140 000, Python
    /// hello ~700 000. A Python handler doing real work (parsing and
    /// rendering JSON) burns ~10 million; this leaves it ~100× headroom,
    /// and stops a spinning guest within about a second of CPU.
    pub const DEFAULT_FUEL: u64 = 1_000_000_000;
    /// 128 MiB, as in DESIGN.md.
    pub const DEFAULT_MEMORY_BYTES: u64 = 128 * MIB;
    /// 30 s, as in DESIGN.md.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// 64, as in DESIGN.md.
    pub const DEFAULT_MAX_CONCURRENCY: u32 = 64;
    /// 10 MiB, as in DESIGN.md.
    pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 10 * MIB;
    /// 100 MiB, as in DESIGN.md.
    pub const DEFAULT_MAX_RESPONSE_BODY_BYTES: u64 = 100 * MIB;
    /// 64 KiB of guest output per request.
    pub const DEFAULT_MAX_LOG_BYTES_PER_REQUEST: u64 = 64 * 1024;
    /// 50 outbound requests per request (Cloudflare's free-plan figure).
    pub const DEFAULT_MAX_SUBREQUESTS: u32 = 50;

    /// These limits with `overrides` applied on top.
    pub fn with(&self, overrides: &LimitOverrides) -> Limits {
        Limits {
            fuel: overrides.fuel.unwrap_or(self.fuel),
            memory_bytes: overrides
                .memory_mib
                .map(|m| m.saturating_mul(MIB))
                .unwrap_or(self.memory_bytes),
            timeout: overrides
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(self.timeout),
            max_concurrency: overrides.max_concurrency.unwrap_or(self.max_concurrency),
            max_request_body_bytes: overrides
                .max_request_body_bytes
                .unwrap_or(self.max_request_body_bytes),
            max_response_body_bytes: overrides
                .max_response_body_bytes
                .unwrap_or(self.max_response_body_bytes),
            max_log_bytes_per_request: overrides
                .max_log_bytes_per_request
                .unwrap_or(self.max_log_bytes_per_request),
            max_subrequests: overrides.max_subrequests.unwrap_or(self.max_subrequests),
        }
    }

    /// The wire form of the fields a tenant's overrides can set, every
    /// one present: what a tenant's apps get (`GET /v1/whoami`).
    pub fn to_wire(&self) -> outpost_proto::Limits {
        outpost_proto::Limits {
            fuel: Some(self.fuel),
            memory_mib: Some(self.memory_bytes / MIB),
            timeout_ms: Some(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)),
            max_concurrency: Some(self.max_concurrency),
        }
    }

    /// Every problem with these limits, one message each.
    pub fn problems(&self, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.fuel == 0 {
            out.push(format!("{what}: fuel must be greater than 0"));
        }
        if self.memory_bytes < MIB {
            out.push(format!("{what}: memory must be at least 1 MiB"));
        }
        if self.memory_bytes > 4 * 1024 * MIB {
            out.push(format!(
                "{what}: memory must be at most 4096 MiB (the wasm32 address space)"
            ));
        }
        if self.timeout.is_zero() {
            out.push(format!("{what}: timeout must be greater than 0 ms"));
        }
        if self.max_concurrency == 0 {
            out.push(format!("{what}: max concurrency must be greater than 0"));
        }
        out
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: Self::DEFAULT_FUEL,
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            timeout: Self::DEFAULT_TIMEOUT,
            max_concurrency: Self::DEFAULT_MAX_CONCURRENCY,
            max_request_body_bytes: Self::DEFAULT_MAX_REQUEST_BODY_BYTES,
            max_response_body_bytes: Self::DEFAULT_MAX_RESPONSE_BODY_BYTES,
            max_log_bytes_per_request: Self::DEFAULT_MAX_LOG_BYTES_PER_REQUEST,
            max_subrequests: Self::DEFAULT_MAX_SUBREQUESTS,
        }
    }
}

/// Optional per-app (or, in config files, node-wide) replacements for
/// [`Limits`] fields. Units match the CLI flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Fuel per request.
    pub fuel: Option<u64>,
    /// Linear memory per instance, in MiB.
    pub memory_mib: Option<u64>,
    /// Wall-clock deadline per request, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Instances running at once.
    pub max_concurrency: Option<u32>,
    /// Largest request body, in bytes.
    pub max_request_body_bytes: Option<u64>,
    /// Largest response body, in bytes.
    pub max_response_body_bytes: Option<u64>,
    /// Guest output kept per request, in bytes.
    pub max_log_bytes_per_request: Option<u64>,
    /// Outbound requests per request.
    pub max_subrequests: Option<u32>,
}

/// The wire form (tenant and app overrides, merged by the control plane)
/// as overrides of a node's defaults.
impl From<&outpost_proto::Limits> for LimitOverrides {
    fn from(wire: &outpost_proto::Limits) -> LimitOverrides {
        LimitOverrides {
            fuel: wire.fuel,
            memory_mib: wire.memory_mib,
            timeout_ms: wire.timeout_ms,
            max_concurrency: wire.max_concurrency,
            ..LimitOverrides::default()
        }
    }
}

impl LimitOverrides {
    /// `other`'s fields where set, else ours.
    pub fn or(&self, other: &LimitOverrides) -> LimitOverrides {
        LimitOverrides {
            fuel: other.fuel.or(self.fuel),
            memory_mib: other.memory_mib.or(self.memory_mib),
            timeout_ms: other.timeout_ms.or(self.timeout_ms),
            max_concurrency: other.max_concurrency.or(self.max_concurrency),
            max_request_body_bytes: other.max_request_body_bytes.or(self.max_request_body_bytes),
            max_response_body_bytes: other
                .max_response_body_bytes
                .or(self.max_response_body_bytes),
            max_log_bytes_per_request: other
                .max_log_bytes_per_request
                .or(self.max_log_bytes_per_request),
            max_subrequests: other.max_subrequests.or(self.max_subrequests),
        }
    }
}

/// Why the node stopped a request. The string form is the metric label and
/// the `x-outpost-error` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KillReason {
    /// Ran out of fuel.
    Fuel,
    /// Hit the memory limit (and trapped).
    Memory,
    /// Passed the wall-clock deadline.
    Timeout,
    /// Too many instances of the app already running.
    Concurrency,
    /// Request body over the cap.
    RequestBody,
    /// Response body over the cap.
    ResponseBody,
    /// Refused without an instance: the app's circuit breaker is open.
    Throttled,
    /// Refused without an instance: the tenant holds its share of the
    /// node's instance slots while other tenants want them.
    TenantShare,
}

impl KillReason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [KillReason; 8] = [
        KillReason::Fuel,
        KillReason::Memory,
        KillReason::Timeout,
        KillReason::Concurrency,
        KillReason::RequestBody,
        KillReason::ResponseBody,
        KillReason::Throttled,
        KillReason::TenantShare,
    ];

    /// Whether the kill says the app itself is expensive (it spun, grew
    /// or stalled), so it goes to the background lane for a while. A full
    /// pool or an oversize body says nothing about the app's code.
    pub fn demotes(self) -> bool {
        matches!(
            self,
            KillReason::Fuel | KillReason::Memory | KillReason::Timeout
        )
    }

    /// The `x-outpost-error` code of a request stopped for this reason.
    pub fn code(self) -> ErrorCode {
        match self {
            KillReason::Fuel => ErrorCode::Fuel,
            KillReason::Memory => ErrorCode::Memory,
            KillReason::Timeout => ErrorCode::Timeout,
            KillReason::Concurrency => ErrorCode::Concurrency,
            KillReason::RequestBody => ErrorCode::RequestBody,
            KillReason::ResponseBody => ErrorCode::ResponseBody,
            KillReason::Throttled => ErrorCode::AppThrottled,
            KillReason::TenantShare => ErrorCode::TenantShare,
        }
    }

    /// The metric label: the same word as the header value.
    pub fn as_str(self) -> &'static str {
        self.code().as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_set() {
        let base = Limits::default();
        let o = LimitOverrides {
            fuel: Some(7),
            timeout_ms: Some(250),
            ..Default::default()
        };
        let l = base.with(&o);
        assert_eq!(l.fuel, 7);
        assert_eq!(l.timeout, Duration::from_millis(250));
        assert_eq!(l.memory_bytes, base.memory_bytes);
        assert_eq!(l.max_concurrency, base.max_concurrency);
    }

    #[test]
    fn later_overrides_win() {
        let file = LimitOverrides {
            fuel: Some(1),
            memory_mib: Some(2),
            ..Default::default()
        };
        let flags = LimitOverrides {
            fuel: Some(3),
            ..Default::default()
        };
        let merged = file.or(&flags);
        assert_eq!(merged.fuel, Some(3));
        assert_eq!(merged.memory_mib, Some(2));
    }

    #[test]
    fn nonsense_limits_are_all_reported() {
        let l = Limits {
            fuel: 0,
            memory_bytes: 0,
            timeout: Duration::ZERO,
            max_concurrency: 0,
            ..Limits::default()
        };
        let p = l.problems("app x");
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p.iter().all(|m| m.starts_with("app x: ")));
    }
}
