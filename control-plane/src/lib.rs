//! Outpost control plane.
//!
//! Holds the fleet's desired state — tenants, apps, routes, deployments and
//! module blobs — behind the [`store::Store`] trait (sled today), bumping a
//! global revision on every change so edge nodes can follow it, and serves
//! the REST API ([`api`]) that tenants and admins drive.
//!
//! Edge nodes follow it through the watch stream ([`watch`]).
//!
//! The `control-plane` binary (`main.rs`) is thin: [`config::Config`],
//! [`store::SledStore::open`], bind, [`server::run`].
//!
//! Edge nodes consume the stream in sync mode (`outpost_edge_node::sync`)
//! and report what they serve; `/metrics` and `/v1/openapi.json` describe
//! the rest. Not here yet: delta events (only snapshots are sent).

pub mod api;
pub mod config;
pub mod metrics;
pub mod secrets;
pub mod server;
pub mod store;
pub mod watch;
