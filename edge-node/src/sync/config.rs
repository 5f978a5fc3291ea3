//! Where and how a node follows a control plane.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use outpost_runtime::Limits;

/// Where and how to follow a control plane.
#[derive(Clone)]
pub struct SyncConfig {
    /// Base URL: `https://…`, or `http://` to this machine
    /// ([`outpost_link`] has the rules); several, comma-separated, for
    /// control planes sharing one store: the node follows one and moves
    /// to the next when it fails.
    pub url: String,
    /// CA file its certificate is verified against; `None`: the system's
    /// roots.
    pub ca_file: Option<PathBuf>,
    /// The OCI registry modules are pulled from first, if any.
    pub registry: Option<outpost_oci::RegistryConfig>,
    /// The node token.
    pub token: String,
    /// Limits for fields neither tenant nor app sets.
    pub defaults: Limits,
    /// This node's id in `GET /v1/nodes`.
    pub node_id: String,
}

impl SyncConfig {
    /// The control planes' base URLs, in the order they are tried.
    pub fn urls(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect()
    }
}

impl std::fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches logs.
        f.debug_struct("SyncConfig")
            .field("url", &self.url)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// One client for the watch stream, module fetches and status reports.
pub(crate) type HttpClient = Client<outpost_link::Connector, Full<Bytes>>;
