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
    /// A component was refused.
    #[error("{what}: not a valid worker: {reason}")]
    InvalidWasm {
        /// Which app.
        what: String,
        /// Why.
        reason: String,
    },
    /// A certificate or key was refused.
    #[error("{0}")]
    Certificate(String),
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
    /// wasmtime could not be set up.
    #[error("setting up wasmtime: {0}")]
    Engine(String),
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
