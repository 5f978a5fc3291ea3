//! Per-tenant quotas: how much of the shared platform one tenant may hold.
//! Each bounds what every node must load and what every snapshot carries,
//! so one tenant cannot make the fleet's sync or the store unbounded.
//!
//! The operator sets the defaults (`[quotas]`); the admin may override any
//! of them for one tenant (`PUT /v1/tenants/{tenant}/quotas`). Counts the
//! store keeps exact (apps, hosts, stored bytes) are checked inside the
//! write's own transaction; the rest are checked on the request.

use outpost_proto::TenantQuotas;
use serde::Deserialize;

use crate::store::Allowance;

const MIB: u64 = 1024 * 1024;

/// The operator's quotas, the same for every tenant unless overridden:
/// the `[quotas]` section of the control plane's file, every key optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Apps one tenant may have. Default: 100.
    pub apps: usize,
    /// Routes one app may list. Default: 32.
    pub routes_per_app: usize,
    /// Distinct hosts one tenant may route. Default: 100.
    pub hosts: usize,
    /// Bytes of environment (names and values) in one app. Default: 65536.
    pub env_bytes_per_app: usize,
    /// Certificates one tenant may have installed. Default: 100.
    pub certificates: usize,
    /// MiB of components one tenant may keep (each version kept counts
    /// its size). Default: 1024.
    pub stored_mib: u64,
    /// Versions kept per app: a deploy past it prunes the oldest version
    /// that is not active. Default: 10.
    pub versions_per_app: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            apps: 100,
            routes_per_app: 32,
            hosts: 100,
            env_bytes_per_app: 64 * 1024,
            certificates: 100,
            stored_mib: 1024,
            versions_per_app: 10,
        }
    }
}

/// The most an override may set a quota to: past these one tenant's apps
/// no longer fit a bounded watch stream line or a node's memory.
pub const CEILINGS: Quotas = Quotas {
    apps: 100_000,
    routes_per_app: 1_000,
    hosts: 100_000,
    env_bytes_per_app: 1024 * 1024,
    certificates: 100_000,
    stored_mib: 1024 * 1024,
    versions_per_app: 1_000,
};

impl Quotas {
    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        self.fields()
            .into_iter()
            .filter(|(_, v, ceiling)| *v == 0 || v > ceiling)
            .map(|(name, _, ceiling)| format!("quotas.{name} must be between 1 and {ceiling}"))
            .collect()
    }

    /// Each quota's name, value and ceiling.
    fn fields(&self) -> [(&'static str, u64, u64); 7] {
        let c = &CEILINGS;
        [
            ("apps", self.apps as u64, c.apps as u64),
            (
                "routes_per_app",
                self.routes_per_app as u64,
                c.routes_per_app as u64,
            ),
            ("hosts", self.hosts as u64, c.hosts as u64),
            (
                "env_bytes_per_app",
                self.env_bytes_per_app as u64,
                c.env_bytes_per_app as u64,
            ),
            (
                "certificates",
                self.certificates as u64,
                c.certificates as u64,
            ),
            ("stored_mib", self.stored_mib, c.stored_mib),
            (
                "versions_per_app",
                self.versions_per_app,
                c.versions_per_app,
            ),
        ]
    }

    /// These quotas with a tenant's overrides laid over them.
    pub fn for_tenant(&self, overrides: &TenantQuotas) -> Quotas {
        let n = |o: Option<u64>, d: usize| o.map_or(d, |v| usize::try_from(v).unwrap_or(d));
        Quotas {
            apps: n(overrides.apps, self.apps),
            routes_per_app: n(overrides.routes_per_app, self.routes_per_app),
            hosts: n(overrides.hosts, self.hosts),
            env_bytes_per_app: n(overrides.env_bytes_per_app, self.env_bytes_per_app),
            certificates: n(overrides.certificates, self.certificates),
            stored_mib: overrides.stored_mib.unwrap_or(self.stored_mib),
            versions_per_app: overrides.versions_per_app.unwrap_or(self.versions_per_app),
        }
    }

    /// Every problem with a tenant's overrides (0, or past the ceiling).
    pub fn override_problems(overrides: &TenantQuotas) -> Vec<String> {
        // Absent overrides take the ceiling itself, which always passes.
        let laid = CEILINGS.for_tenant(overrides);
        laid.fields()
            .into_iter()
            .filter(|(_, v, ceiling)| *v == 0 || v > ceiling)
            .map(|(name, _, ceiling)| format!("{name} must be between 1 and {ceiling}"))
            .collect()
    }

    /// What the store checks in its transactions.
    pub fn allowance(&self) -> Allowance {
        Allowance {
            apps: self.apps as u64,
            hosts: self.hosts as u64,
            versions_per_app: self.versions_per_app,
            stored_bytes: self.stored_mib.saturating_mul(MIB),
        }
    }

    /// What a quota counts, for error messages.
    pub fn unit(quota: &str) -> &'static str {
        match quota {
            "apps" => "apps per tenant",
            "routes_per_app" => "routes in one app",
            "hosts" => "hosts per tenant",
            "env_bytes_per_app" => "bytes of environment in one app",
            "certificates" => "certificates per tenant",
            "stored_mib" => "MiB of components kept per tenant",
            "versions_per_app" => "versions kept per app",
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keys_keep_their_defaults_and_zero_is_refused() {
        let q: Quotas = toml::from_str("apps = 3").unwrap();
        assert_eq!(
            q,
            Quotas {
                apps: 3,
                ..Quotas::default()
            }
        );
        assert!(toml::from_str::<Quotas>("buckets = 1").is_err());
        let zero = Quotas {
            routes_per_app: 0,
            ..Quotas::default()
        };
        assert_eq!(
            zero.problems(),
            ["quotas.routes_per_app must be between 1 and 1000"]
        );
    }

    #[test]
    fn overrides_replace_only_what_they_name_and_are_bounded() {
        let o = TenantQuotas {
            apps: Some(5),
            stored_mib: Some(1),
            ..TenantQuotas::default()
        };
        let q = Quotas::default().for_tenant(&o);
        assert_eq!(q.apps, 5);
        assert_eq!(q.stored_mib, 1);
        assert_eq!(q.hosts, Quotas::default().hosts);
        assert_eq!(q.allowance().stored_bytes, MIB);
        assert!(Quotas::override_problems(&o).is_empty());
        let bad = TenantQuotas {
            hosts: Some(0),
            env_bytes_per_app: Some(u64::MAX),
            ..TenantQuotas::default()
        };
        assert_eq!(
            Quotas::override_problems(&bad),
            [
                "hosts must be between 1 and 100000",
                "env_bytes_per_app must be between 1 and 1048576"
            ]
        );
    }
}
