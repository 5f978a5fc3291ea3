//! The runtime's error type.

use std::path::PathBuf;

/// What can go wrong setting up the engine, checking a component or
/// parsing a certificate. Request-time problems never surface here: they
/// become HTTP responses.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    /// A file or directory could not be read or created.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// wasmtime could not be set up.
    #[error("setting up wasmtime: {0}")]
    Engine(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
