//! The fleet view shared by control planes on one store (etcd).
//!
//! A node follows one control plane at a time and reports to it, so each
//! control plane knows only its own nodes, in memory. To let any of them
//! answer `GET /v1/nodes`, `GET /v1/rollout` and `/metrics` for the whole
//! fleet, each publishes its nodes to the store every [`INTERVAL`] and
//! merges what the others published when asked: per node, the entry heard
//! from last wins, and it names the control plane the node follows.
//!
//! Publishing writes only what changed, and an unchanged node again every
//! [`REFRESH_S`], so a fleet of idle nodes costs etcd a write per node
//! every few tens of seconds, not one per heartbeat.

use std::collections::{BTreeMap, HashMap};
use std::sync::Weak;
use std::time::Duration;

use outpost_proto::NodeStatus;

use crate::api::ApiState;

/// How often a control plane publishes its nodes.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// An unchanged node is published again this often, so other control
/// planes see it alive: well inside the minute after which a silent node
/// no longer counts in a rollout.
const REFRESH_S: u64 = 20;

/// Nodes silent this long are dropped from the store.
const FORGET_S: u64 = 7 * 86_400;

/// How many publishing rounds between two sweeps of forgotten nodes.
const SWEEP_EVERY: u32 = 300;

/// Publishes the nodes following this control plane every `interval`,
/// until the state is dropped.
pub async fn publish(state: Weak<ApiState>, interval: Duration) {
    let mut published: HashMap<String, NodeStatus> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    loop {
        ticker.tick().await;
        round = round.wrapping_add(1);
        let Some(state) = state.upgrade() else { return };
        let changed: Vec<NodeStatus> = state
            .nodes
            .lock()
            .unwrap()
            .values()
            .filter(|n| needs_publishing(published.get(&n.id), n))
            .cloned()
            .collect();
        let sweep = round.is_multiple_of(SWEEP_EVERY);
        if changed.is_empty() && !sweep {
            continue;
        }
        let store = state.store().clone();
        // The store may block (etcd unreachable): never hold the state
        // alive across that wait.
        drop(state);
        let written = tokio::task::spawn_blocking(move || {
            store.put_node_statuses(&changed)?;
            if sweep {
                let cutoff = crate::store::now().saturating_sub(FORGET_S);
                let gone: Vec<String> = store
                    .node_statuses()?
                    .into_iter()
                    .filter(|n| n.last_contact < cutoff)
                    .map(|n| n.id)
                    .collect();
                store.forget_node_statuses(&gone)?;
            }
            Ok::<_, crate::store::StoreError>(changed)
        })
        .await;
        match written {
            Ok(Ok(changed)) => {
                for node in changed {
                    published.insert(node.id.clone(), node);
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "publishing the fleet view failed"),
            Err(e) => tracing::warn!(error = %e, "publishing the fleet view failed"),
        }
    }
}

/// Whether `now` differs from what was `published` in anything but a
/// recent contact.
fn needs_publishing(published: Option<&NodeStatus>, now: &NodeStatus) -> bool {
    let Some(published) = published else {
        return true;
    };
    published.applied_revision != now.applied_revision
        || published.unavailable != now.unavailable
        || published.identity != now.identity
        || published.control_plane != now.control_plane
        || now.last_contact >= published.last_contact + REFRESH_S
}

/// This control plane's nodes and the published ones, one entry per
/// node: the one heard from last (this control plane's on a tie, being
/// the freshest), ordered by id.
pub fn merge(own: Vec<NodeStatus>, published: Vec<NodeStatus>) -> Vec<NodeStatus> {
    let mut fleet: BTreeMap<String, NodeStatus> = BTreeMap::new();
    for node in published.into_iter().chain(own) {
        match fleet.get(&node.id) {
            Some(kept) if kept.last_contact > node.last_contact => {}
            _ => {
                fleet.insert(node.id.clone(), node);
            }
        }
    }
    fleet.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, cp: &str, last_contact: u64, applied: u64) -> NodeStatus {
        NodeStatus {
            id: id.into(),
            applied_revision: applied,
            last_contact,
            unavailable: Default::default(),
            identity: None,
            control_plane: Some(cp.into()),
        }
    }

    #[test]
    fn the_entry_heard_from_last_wins_and_ties_go_to_this_control_plane() {
        let own = vec![node("a", "cp-1", 100, 7), node("b", "cp-1", 50, 3)];
        let published = vec![
            node("a", "cp-0", 90, 6),
            node("b", "cp-0", 60, 5),
            node("c", "cp-0", 10, 1),
            node("a", "cp-2", 100, 9),
        ];
        let fleet = merge(own, published);
        let seen: Vec<_> = fleet
            .iter()
            .map(|n| (n.id.as_str(), n.control_plane.as_deref().unwrap()))
            .collect();
        assert_eq!(seen, [("a", "cp-1"), ("b", "cp-0"), ("c", "cp-0")]);
    }

    #[test]
    fn only_changes_and_stale_contacts_are_published_again() {
        let was = node("a", "cp-0", 1_000, 4);
        assert!(needs_publishing(None, &was));
        assert!(!needs_publishing(Some(&was), &node("a", "cp-0", 1_019, 4)));
        assert!(needs_publishing(Some(&was), &node("a", "cp-0", 1_020, 4)));
        assert!(needs_publishing(Some(&was), &node("a", "cp-0", 1_001, 5)));
        assert!(needs_publishing(Some(&was), &node("a", "cp-1", 1_001, 4)));
    }
}
