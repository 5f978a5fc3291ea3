//! Connection handling settings: the keys of the `[server]` section that
//! the edge node and the control plane share, with their defaults and
//! their checks. Each binary lays its own flags (`--max-connections`) over
//! them; the node adds its own keys (`redirect_http`) beside them.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Connection handling settings: the shared keys of a `[server]` section,
/// every key optional (the defaults below), durations in ms.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Client connections open at once. Default: 10 000.
    pub max_connections: usize,
    /// Time a client has to send a complete request head. Default: 10 s.
    #[serde(rename = "header_read_timeout_ms", deserialize_with = "millis")]
    pub header_read_timeout: Duration,
    /// Time a client has to finish its TLS handshake, on a listener that
    /// serves TLS. Default: 10 s.
    #[serde(rename = "handshake_timeout_ms", deserialize_with = "millis")]
    pub handshake_timeout: Duration,
    /// Time in-flight requests get to finish on shutdown. Default: 10 s.
    #[serde(rename = "shutdown_grace_ms", deserialize_with = "millis")]
    pub shutdown_grace: Duration,
    /// Time a connection may sit with no bytes moving either way while no
    /// request on it waits for its response; it is then closed. This
    /// reclaims idle keep-alive connections (HTTP/1.1 and h2), sockets that
    /// never say anything, and clients that stop reading their response. On
    /// the node a streamed response that pauses longer than this is cut
    /// off too, so keep it above the longest app timeout; the control
    /// plane counts a request in flight until its body ends
    /// ([`crate::Http::busy_through_body`]). Default: 60 s.
    #[serde(rename = "idle_timeout_ms", deserialize_with = "millis")]
    pub idle_timeout: Duration,
    /// Largest HTTP/1 request head; a larger one gets 431. Default: 64 KiB
    /// (at least 8 KiB, hyper's minimum read buffer).
    pub max_header_bytes: usize,
    /// Longest request target (path and query); a longer one gets 414.
    /// Default: 8 KiB.
    pub max_uri_bytes: usize,
    /// HTTP/2 streams one connection may have open at once; more are
    /// refused with `REFUSED_STREAM`. Default: 100.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams a client may reset before the server accepted them
    /// before the connection is closed with GOAWAY — the "rapid reset"
    /// defence (CVE-2023-44487). Default: 20.
    pub h2_max_pending_accept_reset_streams: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_uri_bytes: 8 * 1024,
            h2_max_concurrent_streams: 100,
            h2_max_pending_accept_reset_streams: 20,
        }
    }
}

impl Config {
    /// What is wrong with the settings hyper would otherwise panic on or
    /// that would make the server refuse everything.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.max_connections == 0 {
            out.push("server.max_connections must be greater than 0".into());
        }
        if self.header_read_timeout.is_zero() {
            out.push("server.header_read_timeout_ms must be greater than 0".into());
        }
        if self.handshake_timeout.is_zero() {
            out.push("server.handshake_timeout_ms must be greater than 0".into());
        }
        if self.idle_timeout.is_zero() {
            out.push("server.idle_timeout_ms must be greater than 0".into());
        }
        if self.max_header_bytes < 8192 {
            out.push("server.max_header_bytes must be at least 8192".into());
        }
        if self.max_uri_bytes == 0 {
            out.push("server.max_uri_bytes must be greater than 0".into());
        }
        if self.h2_max_concurrent_streams == 0 {
            out.push("server.h2_max_concurrent_streams must be greater than 0".into());
        }
        if self.h2_max_pending_accept_reset_streams == 0 {
            out.push("server.h2_max_pending_accept_reset_streams must be greater than 0".into());
        }
        out
    }
}

/// A duration written as whole milliseconds.
fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keys_take_their_defaults_and_durations_are_in_ms() {
        let c: Config = toml::from_str("idle_timeout_ms = 1500\nmax_connections = 7").unwrap();
        assert_eq!(c.idle_timeout, Duration::from_millis(1500));
        assert_eq!(c.max_connections, 7);
        assert_eq!(
            Config {
                idle_timeout: Config::default().idle_timeout,
                max_connections: Config::default().max_connections,
                ..c
            },
            Config::default()
        );
        assert!(Config::default().problems().is_empty());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("idle_timeout = 5").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c = Config {
            max_connections: 0,
            header_read_timeout: Duration::ZERO,
            max_uri_bytes: 0,
            ..Config::default()
        };
        assert_eq!(c.problems().len(), 3, "{:?}", c.problems());
    }
}
