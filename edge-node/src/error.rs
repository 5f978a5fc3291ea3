//! The edge node's error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong setting up or running a node. Request-time
/// problems never surface here: they become HTTP responses.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration has problems; every one is listed.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    /// The runtime refused a component or a certificate, or could not set
    /// up wasmtime.
    #[error(transparent)]
    Runtime(#[from] outpost_runtime::Error),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("binding the {what} listener on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
    /// The control plane's URL or trust roots are unusable (an unreadable
    /// CA file).
    #[error(transparent)]
    Link(#[from] outpost_link::LinkError),
    /// The control plane refused this node (its certificate is not
    /// trusted, or it refused the node's credential) while the node had
    /// nothing cached to serve: a setting to fix, not an outage to wait
    /// out.
    // The cause is boxed as a trait object: naming the sync module's
    // error here would make the two modules import each other.
    #[error("the control plane refused this node, which has nothing cached to serve: {0}")]
    Refused(Box<dyn std::error::Error + Send + Sync>),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
