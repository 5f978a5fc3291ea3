//! Changes other control planes make: with a shared store (etcd) another
//! control plane's write moves the revision without this process knowing,
//! so the nodes following this one would not hear of it. A follower reads
//! the store's revision when the store says it moved (an etcd watch on the
//! revision key) and at least every [`INTERVAL`], and announces a newer
//! one to this control plane's watch streams, which then send the change
//! as they do for their own writes. A node's lag behind a write made
//! elsewhere is one watch event plus one read; the interval bounds it when
//! the watch is broken. The same reads tell `/healthz` whether the store
//! answers.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::api::ApiState;

/// How often the shared store's revision is read without being told it
/// moved.
pub const INTERVAL: Duration = Duration::from_millis(1000);

/// Announces revisions other control planes wrote, until this one closes.
/// It holds the state only while it reads: the store closes when the
/// server lets go of it, not when this task next wakes.
pub async fn follow(state: Weak<ApiState>, every: Duration) {
    let Some((mut closing, moved)) = state
        .upgrade()
        .map(|s| (s.closing.subscribe(), s.store().revision_changes()))
    else {
        return;
    };
    let moved = async || match &moved {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    };
    let mut failing = false;
    loop {
        tokio::select! {
            _ = closing.wait_for(|closed| *closed) => return,
            () = tokio::time::sleep(every) => {}
            () = moved() => {}
        }
        let Some(state) = state.upgrade() else {
            return;
        };
        match state.blocking(|store| store.revision()).await {
            Ok(revision) => {
                state.store_reachable.store(true, Ordering::Relaxed);
                if failing {
                    tracing::info!(revision, "the shared store answers again");
                    failing = false;
                }
                state.notify(revision);
            }
            // Logged once per outage, not every interval.
            Err(e) if !failing => {
                state.store_reachable.store(false, Ordering::Relaxed);
                tracing::warn!(error = ?e, "reading the shared store's revision failed");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
