//! Outpost edge node.
//!
//! Terminates client HTTP and HTTPS (certificates by SNI, [`tls`]), routes
//! each request by `Host` (+ path prefix) to
//! a tenant's WebAssembly worker, and runs it in a fresh wasmtime instance
//! with fuel, memory, time and concurrency limits, exporting Prometheus
//! metrics on a separate listener.
//!
//! Apps come from its own configuration ("standalone mode") or from a
//! control plane it follows ([`sync`]: watch stream, modules fetched by
//! digest, an on-disk cache served from at restart, compiled code cached
//! on disk too). What it deliberately is not: a general reverse proxy —
//! every request is answered by a worker or by the node itself.
//!
//! The node's one start-up path is [`start()`]: the binary in `main.rs`
//! parses its config and calls it, and so do `outpost dev` and the tests,
//! so every component is compiled and the cached snapshot applied before
//! any port is bound, wherever a node runs.

pub mod config;
pub mod error;
pub mod metrics;
pub mod node;
pub mod server;
mod start;
pub mod sync;
pub mod tls;

pub use config::Config;
pub use error::{Error, Result};
pub use node::Node;
pub use start::{Running, start};
