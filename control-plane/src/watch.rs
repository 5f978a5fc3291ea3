//! The push stream to edge nodes: `GET /v1/nodes/watch?revision=N`.
//!
//! Nodes connect out (so they work behind NAT) with the node token and get
//! newline-delimited JSON [`WatchEvent`]s: a full `snapshot` first if the
//! node's revision is not the current one, then a `delta` (apps upserted
//! and removed, from the revision the node has to the newest) per change,
//! and a `heartbeat` every [`HEARTBEAT`] while nothing changes. Each stream
//! follows a `tokio::sync::watch` of the latest revision, so a slow node
//! skips the revisions it missed and gets one delta to the newest state
//! next — it never queues work for the control plane or slows other nodes.
//! The snapshot of each revision is built once and shared by every stream.
//!
//! A stream opened with a per-node identity lasts only as long as the
//! identity: it ends at once when this control plane revokes it, and in
//! any case before the next line goes out (a delta or a heartbeat, so at
//! the latest one [`HEARTBEAT`] later) once the store no longer holds it
//! with the same token — which covers a revocation made by another
//! control plane on a shared store, and a revoked then re-issued name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use outpost_proto::{
    AppSpec, CertSpec, ErrorBody, Limits, SNAPSHOT_PART_BYTES, Snapshot, WatchEvent, app_key,
};
use serde::Deserialize;

use crate::api::ApiState;
use crate::api::auth::{NodeAuth, NodeCredential};
use crate::api::error::{ApiError, ApiResult};
use crate::store::{Store, StoreError};
use outpost_runtime::seal::Sealer;

/// How often an idle stream says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Query of the watch request.
#[derive(Debug, Deserialize)]
pub struct WatchQuery {
    /// The revision the node has applied (0 or absent: nothing).
    #[serde(default)]
    pub revision: u64,
    /// The node's id, to track it in `GET /v1/nodes`. With a per-node
    /// identity it must be the identity's name, and defaults to it.
    #[serde(default)]
    pub node: Option<String>,
}

/// Builds the snapshot of everything nodes should serve: every app with an
/// active version, tenant limits merged into each (a disabled tenant's
/// apps marked so), and every certificate whose tenant still routes its
/// hostname (keys unsealed for the nodes). Apps of a tenant that no longer
/// exists are never served.
pub fn snapshot(store: &dyn Store, sealer: &Sealer) -> Result<Snapshot, StoreError> {
    // Revision first: the apps read after it are at least that new, so a
    // node never believes it has a change it has not seen.
    let revision = store.revision()?;
    let tenants: BTreeMap<String, (Limits, bool)> = store
        .tenants()?
        .into_iter()
        .map(|t| (t.name, (t.limits, t.disabled)))
        .collect();
    let all_apps = store.all_apps()?;
    let mut certificates = BTreeMap::new();
    for cert in store.certificates()? {
        if !crate::api::certs::routed_by(&cert.hostname, &cert.tenant, &all_apps) {
            continue;
        }
        match sealer.open(&cert.hostname, &cert.private_key_sealed) {
            Ok(private_key_pem) => {
                certificates.insert(
                    cert.hostname,
                    CertSpec {
                        tenant: cert.tenant,
                        cert_chain_pem: cert.cert_chain_pem,
                        private_key_pem,
                    },
                );
            }
            Err(e) => {
                tracing::error!(hostname = %cert.hostname, error = %e, "a stored certificate key does not open; is this the right cert_key?");
            }
        }
    }
    let mut apps = BTreeMap::new();
    for app in all_apps {
        let Some(version) = app.active_version else {
            continue;
        };
        let env = match crate::env::open(sealer, &app) {
            Ok(env) => env,
            Err(e) => {
                // Checked at start-up with the configured key: only a
                // tampered or corrupt record gets here.
                tracing::error!(tenant = %app.tenant, app = %app.name, error = %e, "a stored env value does not open; the app is left out");
                continue;
            }
        };
        let Some((limits, disabled)) = tenants.get(&app.tenant) else {
            continue;
        };
        let Some(deployment) = store
            .deployments(&app.tenant, &app.name)?
            .into_iter()
            .find(|d| d.version == version)
        else {
            continue;
        };
        apps.insert(
            app_key(&app.tenant, &app.name),
            AppSpec {
                limits: limits.clone(),
                disabled: *disabled,
                tenant: app.tenant,
                name: app.name,
                routes: app.routes,
                version,
                digest: deployment.digest,
                env,
                allow_outbound: app.allow_outbound,
            },
        );
    }
    // Read after the revision: a purge newer than the snapshot may be
    // listed too, and applying a purge early is harmless.
    let purges = store.recent_purges()?;
    Ok(Snapshot {
        revision,
        apps,
        certificates,
        purges,
    })
}

/// The snapshot of the newest revision, built once per revision however
/// many streams ask for it.
async fn current(state: &Arc<ApiState>) -> ApiResult<Arc<Snapshot>> {
    let wanted = *state.revision.borrow();
    if let Some(cached) = state.latest_snapshot.lock().expect("not poisoned").clone()
        && cached.revision >= wanted
    {
        return Ok(cached);
    }
    let sealed = state.clone();
    let built = Arc::new(
        state
            .blocking(move |store| snapshot(store, &sealed.sealer))
            .await?,
    );
    let mut latest = state.latest_snapshot.lock().expect("not poisoned");
    if latest.as_ref().is_none_or(|l| l.revision < built.revision) {
        *latest = Some(built.clone());
    }
    Ok(built)
}

fn line(event: &WatchEvent) -> Bytes {
    let mut bytes = serde_json::to_vec(event).expect("events serialize");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The handler.
#[utoipa::path(
    get,
    path = "/v1/nodes/watch",
    tag = "nodes",
    params(("revision" = Option<u64>, Query, description = "Revision the node has applied"), ("node" = Option<String>, Query, description = "Node id")),
    responses((status = 200, body = WatchEvent), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("node" = []))
)]
pub async fn watch(
    auth: NodeAuth,
    State(state): State<Arc<ApiState>>,
    Query(query): Query<WatchQuery>,
) -> ApiResult<Response> {
    // Subscribed before the credential is checked again in the stream: a
    // revocation from now on is seen, one before is found by that check.
    let revocations = state.identities_revoked.subscribe();
    let node = match auth.identity() {
        Some(name) => match &query.node {
            Some(asked) if asked != name => return Err(ApiError::wrong_node(name)),
            _ => Some(name.to_string()),
        },
        None => {
            let node = query
                .node
                .filter(|id| crate::api::check_name("node", id).is_ok());
            if let Some(id) = &node {
                auth.may_act_as(&state, id).await?;
            }
            node
        }
    };
    if let Some(id) = &node {
        state.node_seen(id, auth.identity(), Some(query.revision));
    }
    // Subscribed before the snapshot is read: a change landing meanwhile
    // is seen by the stream and sent if it is newer than the snapshot.
    let changes = state.revision.subscribe();
    let first = current(&state).await?;
    let follower = Follower {
        node,
        credential: auth.0,
        revocations,
    };
    let stream = async_stream(state, first, query.revision, changes, follower);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

type Item = Result<Bytes, std::io::Error>;

/// Decrements the open-streams gauge however the stream task ends.
struct StreamGauge(Arc<ApiState>);

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.metrics.watch_streams(-1);
    }
}

/// Who is following a stream, and what ends it early.
struct Follower {
    /// The node's id, if it gave one (or has an identity).
    node: Option<String>,
    /// The credential the stream was opened with.
    credential: NodeCredential,
    /// Bumped when this control plane revokes a node identity.
    revocations: tokio::sync::watch::Receiver<u64>,
}

/// The event stream: the first snapshot (unless the node is up to date),
/// then one delta per newer revision, heartbeats in between.
fn async_stream(
    state: Arc<ApiState>,
    first: Arc<Snapshot>,
    node_revision: u64,
    changes: tokio::sync::watch::Receiver<u64>,
    follower: Follower,
) -> impl futures::Stream<Item = Item> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<Item>(1);
    let mut closing = state.closing.subscribe();
    tokio::spawn(async move {
        state.metrics.watch_streams(1);
        let _open = StreamGauge(state.clone());
        tokio::select! {
            _ = closing.wait_for(|closed| *closed) => {}
            _ = stream_events(state, first, node_revision, changes, tx, follower) => {}
        }
    });
    tokio_stream(rx)
}

async fn stream_events(
    state: Arc<ApiState>,
    first: Arc<Snapshot>,
    node_revision: u64,
    mut changes: tokio::sync::watch::Receiver<u64>,
    tx: tokio::sync::mpsc::Sender<Item>,
    follower: Follower,
) {
    let Follower {
        node,
        credential,
        mut revocations,
    } = follower;
    let identity = match &credential {
        NodeCredential::Identity { name, .. } => Some(name.clone()),
        NodeCredential::Shared => None,
    };
    // The identity may have been revoked since the request was let in,
    // before this stream listened for revocations.
    if !credential.still_valid(&state).await {
        return;
    }
    // What the node has now: deltas are computed from it.
    let mut sent = first.clone();
    // A snapshot goes in parts of about a MiB each: no line grows with the
    // number of apps, however large the fleet.
    let events = if first.revision != node_revision || node_revision == 0 {
        first.in_parts(SNAPSHOT_PART_BYTES)
    } else {
        vec![WatchEvent::Heartbeat {
            revision: node_revision,
        }]
    };
    for event in events {
        if tx.send(Ok(line(&event))).await.is_err() {
            return;
        }
    }
    // One timer, reset only when a line goes out: changes that send
    // nothing (and revocations of other identities) do not put off the
    // heartbeat, nor the credential check that comes with it.
    let heartbeat = tokio::time::sleep(HEARTBEAT);
    tokio::pin!(heartbeat);
    loop {
        let lines = tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                if *changes.borrow_and_update() <= sent.revision {
                    continue;
                }
                match current(&state).await {
                    Ok(newer) if newer.revision > sent.revision => {
                        let lines = change_lines(&sent, &newer);
                        sent = newer;
                        lines
                    }
                    Ok(_) => continue,
                    // The node keeps its state; it will reconnect.
                    Err(_) => return,
                }
            }
            revoked = revocations.changed(), if identity.is_some() => {
                if revoked.is_err() || !credential.still_valid(&state).await {
                    return;
                }
                continue;
            }
            _ = &mut heartbeat => {
                vec![line(&WatchEvent::Heartbeat { revision: sent.revision })]
            }
        };
        // Nothing more goes out on a credential that no longer holds (a
        // delta carries tenants' secrets): the store is asked before every
        // line, so a revocation this control plane was not told of (made
        // by another one sharing the store) ends the stream by the next
        // heartbeat at the latest.
        if !credential.still_valid(&state).await {
            return;
        }
        // A node that stops reading fills the one-slot channel and this
        // task waits on it alone; the node's connection dropping ends it.
        for bytes in lines {
            if tx.send(Ok(bytes)).await.is_err() {
                return;
            }
        }
        heartbeat
            .as_mut()
            .reset(tokio::time::Instant::now() + HEARTBEAT);
        // The stream keeps moving, so the node is reading: it is alive.
        if let Some(id) = &node {
            state.node_seen(id, identity.as_deref(), None);
        }
    }
}

/// The lines that take a node from `from` to `to`: one delta line, or,
/// when that line would be longer than a snapshot part (a node that missed
/// many changes, a tenant disabled with all its apps), the snapshot in
/// parts. So no line of the stream is ever much over
/// [`SNAPSHOT_PART_BYTES`], whatever changed.
fn change_lines(from: &Snapshot, to: &Arc<Snapshot>) -> Vec<Bytes> {
    let delta = line(&WatchEvent::Delta {
        delta: from.delta_to(to),
    });
    if delta.len() <= SNAPSHOT_PART_BYTES {
        return vec![delta];
    }
    to.in_parts(SNAPSHOT_PART_BYTES).iter().map(line).collect()
}

fn tokio_stream(mut rx: tokio::sync::mpsc::Receiver<Item>) -> impl futures::Stream<Item = Item> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(tenant: &str, n: usize, env_bytes: usize, disabled: bool) -> AppSpec {
        AppSpec {
            tenant: tenant.into(),
            name: format!("app{n}"),
            routes: vec![format!("app{n}.{tenant}.example.com")],
            version: 1,
            digest: "sha256:00".into(),
            env: [("BIG".to_string(), "\"".repeat(env_bytes))].into(),
            limits: Limits::default(),
            allow_outbound: Vec::new(),
            disabled,
        }
    }

    fn snapshot(revision: u64, apps: impl IntoIterator<Item = AppSpec>) -> Snapshot {
        Snapshot {
            purges: Default::default(),
            revision,
            apps: apps
                .into_iter()
                .map(|a| (app_key(&a.tenant, &a.name), a))
                .collect(),
            certificates: BTreeMap::new(),
        }
    }

    /// One small change is one delta line; disabling a tenant whose 100
    /// apps carry 60 KB of env each (6× that once JSON-escaped) would be a
    /// 36 MB delta, so it goes as a snapshot in bounded parts instead.
    #[test]
    fn a_change_never_makes_a_line_much_longer_than_a_part() {
        let before = snapshot(1, (0..100).map(|n| app("acme", n, 60_000, false)));
        let one = snapshot(2, (0..100).map(|n| app("acme", n, 60_000, n == 7)));
        let lines = change_lines(&before, &Arc::new(one));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with(br#"{"type":"delta""#));

        let all = Arc::new(snapshot(3, (0..100).map(|n| app("acme", n, 60_000, true))));
        let lines = change_lines(&before, &all);
        assert!(lines.len() > 3, "{} lines", lines.len());
        let longest = lines.iter().map(Bytes::len).max().unwrap();
        assert!(
            longest <= SNAPSHOT_PART_BYTES + 512 * 1024,
            "a {longest}-byte line"
        );
        assert!(lines[0].starts_with(br#"{"type":"snapshot_begin""#));
    }
}
