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
//! The binary in `main.rs` is thin: [`config::Config::from_args`], then
//! [`Node::new`] + [`Node::apply`] (every component compiled before any
//! port is bound), then [`server::Listeners::bind`] and [`server::run`].
//! Tests run exactly that in-process.

pub mod body;
pub mod config;
pub mod error;
pub mod metrics;
pub mod node;
pub mod prune;
pub mod router;
pub mod runtime;
pub mod server;
pub mod sync;
pub mod tls;

pub use config::Config;
pub use error::{Error, Result};
pub use node::Node;
