//! Sync mode: follow the control plane's watch stream, fetch modules by
//! digest, apply each snapshot atomically, and keep everything in an
//! on-disk cache so a restarted node serves its last state before the
//! control plane answers (or while it is down).
//!
//! The node connects out (it works behind NAT), reads newline-delimited
//! JSON events, and reconnects with capped exponential backoff, resuming
//! from the revision it has applied.
//!
//! - [`config`]: where to follow ([`SyncConfig`]); [`error`]: why a watch
//!   connection ended ([`SyncError`]).
//! - [`cache`]: the on-disk cache (snapshot + modules) and its pruning.
//! - [`convert`]: wire types into what the runtime and TLS layer load.
//! - [`watch`]: the [`Follower`], which runs the watch loop.
//! - [`upstream`]: the control planes a node may follow, and the one it
//!   follows now.
//! - [`reports`]: what the node tells the control plane (applied revision,
//!   guest output).
//! - [`metrics`]: the subsystem's metrics.

pub mod cache;
pub mod config;
pub mod convert;
pub mod error;
pub mod metrics;
pub mod reports;
pub mod upstream;
pub mod watch;

use std::sync::Arc;

use outpost_proto::Snapshot;
use outpost_runtime::Limits;

pub use cache::{Cache, DEFAULT_KEEP_UNUSED_BYTES};
pub use config::SyncConfig;
pub use error::SyncError;
pub use metrics::Metrics;
pub use outpost_runtime::disk::digest_of;
pub use watch::{Follower, next_event};

use crate::node::Node;

/// Applies the cached snapshot, if the cache holds it and every module.
/// Returns it: the follower's deltas apply to it.
pub async fn restore(
    node: &Arc<Node>,
    cache: &Cache,
    defaults: &Limits,
) -> crate::Result<Option<Snapshot>> {
    let Some(snapshot) = cache.snapshot() else {
        return Ok(None);
    };
    let mut apps = Vec::new();
    for app in snapshot.apps.values() {
        // A disabled tenant's app is never loaded: no module needed.
        let module = if app.disabled {
            None
        } else {
            let Some(module) = cache.module_file(&app.digest) else {
                tracing::warn!(digest = %app.digest, "cached module missing; waiting for the control plane");
                return Ok(None);
            };
            Some(module)
        };
        let (routes, mut spec) = convert::app(app, module, defaults)?;
        // An app validated here before serves from its compiled code,
        // loaded at its first request, and its module is not read; any
        // other must have its module whole, or the cache is not served
        // (the bytes read are the ones it is compiled from).
        if let Some(module) = &spec.module
            && !node.runtime().is_validated(&spec)
        {
            let Ok(wasm) = module.read() else {
                tracing::warn!(digest = %app.digest, "cached module corrupt; waiting for the control plane");
                return Ok(None);
            };
            spec.wasm = wasm;
        }
        apps.push((routes, spec));
    }
    // An app that no longer loads (say, after an upgrade) is left out;
    // the others serve.
    node.apply_each(apps).await?;
    node.set_certificates(convert::certificates(&snapshot.certificates));
    node.metrics().sync.set_applied_revision(snapshot.revision);
    tracing::info!(revision = snapshot.revision, "serving the cached snapshot");
    Ok(Some(snapshot))
}
