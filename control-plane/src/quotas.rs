//! Per-tenant quotas: how much of the shared platform one tenant may hold.
//! Each bounds what every node must load and what every snapshot carries,
//! so one tenant cannot make the fleet's sync or the store unbounded.

use serde::Deserialize;

/// The operator's quotas, the same for every tenant: the `[quotas]`
/// section of the control plane's file, every key optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Apps one tenant may have. Default: 100.
    pub apps: usize,
    /// Routes one app may list. Default: 32.
    pub routes_per_app: usize,
    /// Certificates one tenant may have installed. Default: 100.
    pub certificates: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            apps: 100,
            routes_per_app: 32,
            certificates: 100,
        }
    }
}

impl Quotas {
    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        [
            ("quotas.apps", self.apps),
            ("quotas.routes_per_app", self.routes_per_app),
            ("quotas.certificates", self.certificates),
        ]
        .into_iter()
        .filter(|(_, v)| *v == 0)
        .map(|(name, _)| format!("{name} must be greater than 0"))
        .collect()
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
            ["quotas.routes_per_app must be greater than 0"]
        );
    }
}
