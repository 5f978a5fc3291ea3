//! Why a watch connection ended.

use std::time::Duration;

use http::StatusCode;

/// Why one watch connection ended (the follower then reconnects, unless
/// it is a [`SyncError::is_refusal`] and the node has nothing to serve).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The configured URL does not make a request.
    #[error("bad URL {url}: {source}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        source: http::Error,
    },
    /// The control plane could not be reached.
    #[error("{url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        source: hyper_util::client::legacy::Error,
    },
    /// The control plane's certificate is not trusted.
    #[error("{url}: {why}; give the CA that signed it with --ca-file or OUTPOST_CA_FILE")]
    Untrusted {
        /// The URL.
        url: String,
        /// What rustls found wrong with it.
        why: String,
    },
    /// The control plane answered with an error status.
    #[error("{url}: {status}")]
    Status {
        /// The URL.
        url: String,
        /// What it answered.
        status: StatusCode,
    },
    /// A body broke off.
    #[error("reading {what}: {source}")]
    Body {
        /// The stream or the module.
        what: String,
        /// Why.
        source: hyper::Error,
    },
    /// No event or heartbeat arrived for this long.
    #[error("no event or heartbeat for {} s", .0.as_secs())]
    Silent(Duration),
    /// An event line grew past the cap without ending.
    #[error("an event line exceeds {} MiB", .0 / (1024 * 1024))]
    LineTooLong(usize),
    /// An event line is not a watch event.
    #[error("malformed event: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A delta came before any snapshot it could apply to.
    #[error("a delta arrived before any snapshot")]
    DeltaWithoutSnapshot,
    /// The parts of a snapshot arrived out of order.
    #[error(transparent)]
    Parts(#[from] outpost_proto::OutOfOrder),
    /// A delta for another base than the snapshot served.
    #[error(transparent)]
    StaleDelta(#[from] outpost_proto::StaleDelta),
    /// A fetched module does not hash to its digest.
    #[error("module {0} does not match its digest")]
    DigestMismatch(String),
    /// The cache could not be written.
    #[error("caching {what}: {source}")]
    Cache {
        /// The snapshot or a module.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The node refused what arrived (a route, a component).
    #[error(transparent)]
    Apply(#[from] crate::Error),
}

impl SyncError {
    /// The control plane refused this node in a way retrying will not
    /// fix: its certificate is not trusted here, or it refused the node's
    /// credential (unknown, revoked, or not a node's).
    pub fn is_refusal(&self) -> bool {
        match self {
            SyncError::Untrusted { .. } => true,
            SyncError::Status { status, .. } => {
                matches!(*status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            }
            _ => false,
        }
    }
}
