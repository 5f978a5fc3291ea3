//! The listeners' settings: the `[server]` section of the node's TOML
//! file. Its connection-handling keys are the ones the control plane has
//! too ([`outpost_serve::Config`], defaults and checks there); the TLS
//! ones are the node's own. `--max-connections` and `--redirect-http` are
//! laid over it by [`crate::config`].

use serde::Deserialize;

/// The `[server]` section: every key optional, durations in ms, keys
/// unknown to both parts refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
// One flat table in the file, two structs here: serde's `flatten` would
// let unknown keys through, so the node's keys are taken out first and
// the rest must be exactly the shared ones.
#[serde(try_from = "toml::Table")]
pub struct Config {
    /// Connection cap, timeouts, head caps and HTTP/2 limits, shared with
    /// the control plane; see [`outpost_serve::Config`] for each key.
    pub connections: outpost_serve::Config,
    /// Answer plain HTTP with 308 to HTTPS (when HTTPS is on). Default: false.
    pub redirect_http: bool,
}

impl TryFrom<toml::Table> for Config {
    type Error = String;

    fn try_from(mut table: toml::Table) -> Result<Config, String> {
        let mut config = Config::default();
        if let Some(on) = table.remove("redirect_http") {
            config.redirect_http = on.try_into().map_err(|e| format!("redirect_http: {e}"))?;
        }
        config.connections = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        Ok(config)
    }
}

impl Config {
    /// What is wrong with the settings hyper would otherwise panic on or
    /// that would make the node refuse everything.
    pub fn problems(&self) -> Vec<String> {
        self.connections.problems()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn shared_and_node_keys_share_one_table() {
        let c = parse(
            "idle_timeout_ms = 1500\nmax_connections = 7\nhandshake_timeout_ms = 250\nredirect_http = true",
        )
        .unwrap();
        assert_eq!(c.connections.idle_timeout, Duration::from_millis(1500));
        assert_eq!(c.connections.max_connections, 7);
        assert_eq!(c.connections.handshake_timeout, Duration::from_millis(250));
        assert!(c.redirect_http);
        assert_eq!(parse("").unwrap(), Config::default());
        assert!(Config::default().problems().is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_types_are_refused() {
        let err = parse("idle_timeout = 5").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = parse("redirect_http = 5").unwrap_err();
        assert!(err.to_string().contains("redirect_http"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c = Config {
            connections: outpost_serve::Config {
                max_connections: 0,
                max_uri_bytes: 0,
                handshake_timeout: Duration::ZERO,
                ..Default::default()
            },
            ..Config::default()
        };
        assert_eq!(c.problems().len(), 3, "{:?}", c.problems());
    }
}
