//! Outpost control plane.
//!
//! Holds the fleet's desired state — tenants, apps, routes, deployments and
//! module blobs — behind the [`store::Store`] trait (sled today), bumping a
//! global revision on every change so edge nodes can follow it, and serves
//! the REST API ([`api`]) that tenants and admins drive.
//!
//! Edge nodes follow it through the watch stream ([`watch`]).
//!
//! Not here yet: nodes consuming that stream (sync mode), the OpenAPI
//! document and the `control-plane` binary (issue 3 continues).

pub mod api;
pub mod store;
pub mod watch;
