//! Outpost control plane.
//!
//! Holds the fleet's desired state — tenants, apps, routes, deployments and
//! module blobs — behind the [`store::Store`] trait (sled today), bumping a
//! global revision on every change so edge nodes can follow it.
//!
//! Not here yet: the REST API, authentication and the push stream to nodes
//! (issue 3 continues); edge nodes still run in standalone mode.

pub mod store;
