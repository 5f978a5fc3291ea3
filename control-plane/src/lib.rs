//! Outpost control plane.
//!
//! Holds the fleet's desired state — tenants, apps, routes, deployments and
//! module blobs — behind the [`store::Store`] trait (sled embedded, or etcd
//! shared by several control planes), bumping a global revision on every
//! change so edge nodes can follow it, and serves the REST API ([`api`])
//! that tenants and admins drive.
//!
//! Edge nodes follow it through the watch stream ([`watch`]).
//!
//! It serves HTTPS when given a certificate ([`tls`]); plain HTTP is for
//! `outpost dev` and loopback.
//!
//! Its one start-up path is [`start()`] (or [`start_with`] over a given
//! store): the `control-plane` binary parses its config and calls it, and
//! so do `outpost dev` and the tests.
//!
//! Components and certificates are vetted with the same runtime the nodes
//! run ([`outpost_runtime`]); this crate does not depend on the edge node.
//! Nodes consume the watch stream and report what they serve; `/metrics`
//! and `/v1/openapi.json` describe the rest.

pub mod api;
pub mod config;
pub mod env;
pub mod fanout;
pub mod fleet;
pub mod metrics;
pub mod migrate;
pub mod quotas;
pub mod server;
mod start;
pub mod store;
pub mod tls;
pub mod watch;

pub use start::{Running, StartError, start, start_with};
