//! The watch loop: connect, apply what arrives, reconnect with backoff.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use outpost_proto::{Delta, OutOfOrder, Snapshot, SnapshotAssembly, WatchEvent};

use outpost_runtime::ModuleFile;
use outpost_runtime::disk::digest_of;

use super::cache::{self, Cache, Pruning};
use super::config::{HttpClient, SyncConfig};
use super::convert;
use super::error::SyncError;
use super::reports::{report_applied, ship_logs};
use super::upstream::Base;
use crate::node::Node;

/// Longest event line accepted. Snapshots come in parts of about a MiB
/// (`outpost_proto::SNAPSHOT_PART_BYTES`); a delta carries one change of
/// one tenant, bounded by its quotas (100 apps of at most ~0.5 MiB each).
const MAX_LINE: usize = 64 * 1024 * 1024;
/// Silence longer than this (heartbeats come every 15 s) means the
/// connection is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(45);
/// The cache is pruned at most this often (and always this long at most
/// after the last change): pruning reads whole directories, which on a
/// node with thousands of apps costs more than applying a deploy.
const PRUNE_INTERVAL: Duration = Duration::from_secs(2);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// `wait` shortened by up to half, at random: reconnecting nodes spread
/// out instead of arriving together.
fn jittered(wait: Duration) -> Duration {
    let mut byte = [0u8; 2];
    let fraction = match getrandom::fill(&mut byte) {
        Ok(()) => f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    wait.mul_f64(1.0 - fraction / 2.0)
}

/// Prunes the node's cache to the modules in use after each change, at
/// most once per [`PRUNE_INTERVAL`], on a blocking thread, holding
/// `applying` so no change fetches a module meanwhile. Ends with the
/// follower.
async fn prune_after_changes(
    node: Arc<Node>,
    pruning: Pruning,
    applying: Arc<tokio::sync::Mutex<()>>,
    mut changes: tokio::sync::watch::Receiver<Arc<HashSet<String>>>,
) {
    while changes.changed().await.is_ok() {
        {
            let _applying = applying.lock().await;
            let in_use = changes.borrow_and_update().clone();
            let (node, pruning) = (node.clone(), pruning.clone());
            let pruned = tokio::task::spawn_blocking(move || {
                pruning.prune(&in_use, node.runtime(), &node.metrics().sync);
                node.prune_validated();
            })
            .await;
            if let Err(e) = pruned {
                tracing::warn!(error = %e, "pruning the cache failed");
            }
        }
        tokio::time::sleep(PRUNE_INTERVAL).await;
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows one control plane for one node: everything the watch loop
/// needs, so no function in it takes five arguments.
pub struct Follower {
    node: Arc<Node>,
    config: SyncConfig,
    cache: Cache,
    client: HttpClient,
    /// The control plane followed now, among those configured.
    base: Arc<Base>,
    /// Where module bytes are pulled from first, if configured.
    registry: Option<Arc<outpost_oci::Registry>>,
    /// The snapshot being served, which deltas apply to; `None` until the
    /// node serves one it has whole (then it asks for a full snapshot).
    have: Option<Snapshot>,
    /// A snapshot arriving in parts.
    assembly: SnapshotAssembly,
    /// Held while an event is applied (its modules fetched, the node
    /// changed, the snapshot saved) and while the cache is pruned, so a
    /// prune never deletes a module a change is about to use.
    applying: Arc<tokio::sync::Mutex<()>>,
    /// The modules the applied snapshot uses, for the pruner (see
    /// [`prune_after_changes`]); `None` until [`Follower::run`] starts it.
    in_use: Option<tokio::sync::watch::Sender<Arc<HashSet<String>>>>,
}

impl Follower {
    /// A follower for `node`, which already serves `served` (what
    /// [`super::restore`] returned), if anything. Refuses a URL or CA file
    /// that cannot be used.
    pub fn new(
        node: Arc<Node>,
        config: SyncConfig,
        cache: Cache,
        served: Option<Snapshot>,
    ) -> crate::Result<Follower> {
        let urls = config.urls();
        let Some(first) = urls.first() else {
            return Err(crate::Error::Config(vec!["--control-plane: no URL".into()]));
        };
        let target = outpost_link::target(first, config.ca_file.as_deref())?;
        // One connector serves them all: the same scheme for every one.
        for url in &urls[1..] {
            if outpost_link::target(url, config.ca_file.as_deref())?.tls != target.tls {
                return Err(crate::Error::Config(vec![
                    "--control-plane: every URL must be https://, or every one http:// to this machine"
                        .into(),
                ]));
            }
        }
        let connector = outpost_link::connector(&target, config.ca_file.as_deref())?;
        let registry = match &config.registry {
            Some(registry) => Some(Arc::new(
                outpost_oci::Registry::new(registry)
                    .map_err(|e| crate::Error::Config(vec![format!("--registry: {e}")]))?,
            )),
            None => None,
        };
        Ok(Follower {
            node,
            base: Arc::new(Base::new(urls)),
            config,
            cache,
            registry,
            client: Client::builder(TokioExecutor::new()).build(connector),
            have: served,
            assembly: SnapshotAssembly::default(),
            applying: Arc::default(),
            in_use: None,
        })
    }

    /// The revision being served whole (0: none yet).
    pub fn served_revision(&self) -> u64 {
        self.revision()
    }

    fn revision(&self) -> u64 {
        self.have.as_ref().map_or(0, |s| s.revision)
    }

    /// Follows the control plane, also shipping guest output, until the
    /// node is stopped; returns only a refusal ([`SyncError::is_refusal`])
    /// met while the node has nothing to serve. With a snapshot to serve,
    /// the node keeps serving it and keeps retrying, whatever the error.
    pub async fn run(mut self) -> Result<(), SyncError> {
        // The shipper waits on the runtime's queue forever: it ends with
        // the follower (a node aborted or shut down), not on its own.
        let _shipper = self.node.runtime().take_guest_logs().map(|lines| {
            AbortOnDrop(tokio::spawn(ship_logs(
                self.config.clone(),
                self.base.clone(),
                self.client.clone(),
                lines,
            )))
        });
        let (in_use, changes) = tokio::sync::watch::channel(Arc::default());
        self.in_use = Some(in_use);
        let _pruner = AbortOnDrop(tokio::spawn(prune_after_changes(
            self.node.clone(),
            self.cache.pruning(),
            self.applying.clone(),
            changes,
        )));
        let mut backoff = BACKOFF_MIN;
        // Refusals in a row: fatal only once every control plane listed
        // has refused (one misconfigured control plane is not the node's
        // fault while another accepts it).
        let mut refusals = 0;
        loop {
            let before = self.revision();
            self.node
                .metrics()
                .sync
                .set_control_plane(&self.base.current());
            match self.watch_once().await {
                Ok(()) => {
                    refusals = 0;
                    tracing::info!("watch stream ended; reconnecting")
                }
                Err(e) if e.is_refusal() && self.have.is_none() => {
                    refusals += 1;
                    if refusals >= self.base.len() {
                        tracing::error!(error = %e, "the control plane refused this node, which has nothing to serve");
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "a control plane refused this node; trying the next");
                }
                Err(e) => {
                    refusals = 0;
                    tracing::warn!(error = %e, "sync with the control plane failed; retrying")
                }
            }
            self.node.metrics().sync.reconnect();
            // A stream that delivered something proves the control plane
            // healthy: retry quickly. Otherwise back off, up to 10 s.
            if self.revision() != before {
                backoff = BACKOFF_MIN;
            }
            // The next control plane (any serves the same state) at once;
            // once every one has been tried, wait. The wait is jittered,
            // so a fleet cut off together does not come back in lockstep.
            if self.base.advance() {
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            } else {
                tokio::time::sleep(jittered(BACKOFF_MIN)).await;
            }
        }
    }

    /// One watch connection, until it ends or fails.
    async fn watch_once(&mut self) -> Result<(), SyncError> {
        let url = format!(
            "{}/v1/nodes/watch?revision={}&node={}",
            self.base.current(),
            self.revision(),
            self.config.node_id
        );
        // Parts of a snapshot never span connections.
        self.assembly = SnapshotAssembly::default();
        let mut body = self.get(&url).await?.into_body();
        let mut buf = BytesMut::new();
        loop {
            let frame = tokio::time::timeout(READ_TIMEOUT, body.frame())
                .await
                .map_err(|_| SyncError::Silent(READ_TIMEOUT))?;
            let Some(frame) = frame else { return Ok(()) };
            let frame = frame.map_err(|source| SyncError::Body {
                what: "the watch stream".into(),
                source,
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(event) = next_event(&mut buf) {
                let applying = self.applying.clone();
                let _applying = applying.lock().await;
                self.handle(event?).await?;
            }
            if buf.len() > MAX_LINE {
                return Err(SyncError::LineTooLong(MAX_LINE));
            }
        }
    }

    async fn handle(&mut self, event: WatchEvent) -> Result<(), SyncError> {
        match event {
            // A snapshot in one line (older control planes send that).
            WatchEvent::Snapshot { snapshot } => {
                self.apply_snapshot(&snapshot).await?;
                self.purge_missed(&snapshot);
                self.applied(snapshot).await
            }
            part @ (WatchEvent::SnapshotBegin { .. }
            | WatchEvent::SnapshotPart { .. }
            | WatchEvent::SnapshotEnd { .. }) => match self.assembly.take(part)? {
                Some(snapshot) => {
                    self.apply_snapshot(&snapshot).await?;
                    self.purge_missed(&snapshot);
                    self.applied(snapshot).await
                }
                None => Ok(()),
            },
            _ if self.assembly.in_progress() => Err(SyncError::Parts(OutOfOrder(
                "another event arrived inside a snapshot",
            ))),
            WatchEvent::Delta { delta } => {
                // A delta from another base means the stream and the node
                // disagree: the error reconnects, and brings a snapshot.
                let mut next = self.have.clone().ok_or(SyncError::DeltaWithoutSnapshot)?;
                next.apply(&delta)?;
                self.apply_delta(&delta).await?;
                // Before the revision is reported: a purge the control
                // plane counts as applied here is gone from this cache.
                let cache = self.node.runtime().edge_cache();
                for p in &delta.purges {
                    cache.purge(&p.tenant, &p.purge);
                }
                self.applied(next).await
            }
            WatchEvent::Heartbeat { revision } => {
                let lag = revision.saturating_sub(self.revision());
                self.node.metrics().sync.set_lag(lag);
                Ok(())
            }
        }
    }

    /// Fetches what is missing, then swaps the node's whole route table.
    async fn apply_snapshot(&self, snapshot: &Snapshot) -> Result<(), SyncError> {
        let mut apps = Vec::with_capacity(snapshot.apps.len());
        for app in snapshot.apps.values() {
            let module = self.module_for(app).await?;
            apps.push(convert::app(app, module, &self.config.defaults)?);
        }
        // One tenant's app that does not load here is left out (503
        // `app_unavailable`); every other tenant's change still applies.
        self.node.apply_each(apps).await?;
        self.node
            .set_certificates(convert::certificates(&snapshot.certificates));
        Ok(())
    }

    /// Applies the edge-cache purges made between the revision this node
    /// had and `snapshot`'s; if the snapshot's list no longer reaches back
    /// that far, empties the cache (a purge may have been missed).
    fn purge_missed(&self, snapshot: &Snapshot) {
        let have = self.revision();
        if have == 0 || snapshot.revision <= have {
            return;
        }
        let cache = self.node.runtime().edge_cache();
        match snapshot.purges.after(have) {
            Some(missed) => {
                for p in missed {
                    cache.purge(&p.tenant, &p.purge);
                }
            }
            None => {
                tracing::info!(
                    have,
                    revision = snapshot.revision,
                    "emptying the edge cache: purges made since this node's revision are no longer listed"
                );
                cache.clear();
            }
        }
    }

    /// Loads only what `delta` changes; every other app keeps serving as is.
    async fn apply_delta(&self, delta: &Delta) -> Result<(), SyncError> {
        let mut upsert = Vec::with_capacity(delta.upsert.len());
        for app in delta.upsert.values() {
            let module = self.module_for(app).await?;
            upsert.push(convert::app(app, module, &self.config.defaults)?);
        }
        let remove: Vec<(String, String)> = delta
            .remove
            .iter()
            .filter_map(|key| self.have.as_ref()?.apps.get(key))
            .map(|app| (app.tenant.clone(), app.name.clone()))
            .collect();
        self.node.update_each(upsert, &remove).await?;
        if !delta.certificates.is_empty() || !delta.removed_certificates.is_empty() {
            self.node.update_certificates(
                convert::certificates(&delta.certificates),
                &delta.removed_certificates,
            );
        }
        Ok(())
    }

    /// Records that `snapshot` is now served: on disk (so a restart serves
    /// it), in metrics, and to the control plane.
    async fn applied(&mut self, snapshot: Snapshot) -> Result<(), SyncError> {
        self.cache
            .save_snapshot(&snapshot)
            .map_err(|source| SyncError::Cache {
                what: "the snapshot".into(),
                source,
            })?;
        if let Some(in_use) = &self.in_use {
            in_use.send_replace(Arc::new(cache::in_use(&snapshot)));
        }
        let revision = snapshot.revision;
        let metrics = &self.node.metrics().sync;
        metrics.set_applied_revision(revision);
        metrics.set_lag(0);
        tracing::info!(revision, apps = snapshot.apps.len(), "applied");
        self.have = Some(snapshot);
        let unavailable = self.node.unavailable();
        report_applied(
            &self.config,
            &self.base.current(),
            &self.client,
            revision,
            &unavailable,
        )
        .await;
        Ok(())
    }

    /// The component `app` runs; none for a disabled tenant's app, which
    /// the node never loads.
    async fn module_for(
        &self,
        app: &outpost_proto::AppSpec,
    ) -> Result<Option<ModuleFile>, SyncError> {
        if app.disabled {
            return Ok(None);
        }
        self.module(&app.digest).await.map(Some)
    }

    /// The file of the module with `digest`: the cached one if its bytes
    /// still match, else pulled from the registry (when one is configured)
    /// or else fetched from the control plane, verified against the digest
    /// either way, and cached. A damaged cached module is repaired here.
    async fn module(&self, digest: &str) -> Result<ModuleFile, SyncError> {
        if let Some(file) = self.cache.module_file(digest)
            && file.read().is_ok()
        {
            return Ok(file);
        }
        let metrics = &self.node.metrics().sync;
        if let Some(registry) = &self.registry {
            // The registry spares the control plane the bytes; when it is
            // down or lacks the module, the control plane still has them.
            match registry.pull(digest).await {
                Ok(Some(bytes)) => {
                    metrics.module_fetched("registry", "ok");
                    return self.keep_module(digest, bytes);
                }
                Ok(None) => {
                    metrics.module_fetched("registry", "miss");
                    tracing::warn!(%digest, "the registry lacks a module; fetching it from the control plane");
                }
                Err(e) => {
                    metrics.module_fetched("registry", "error");
                    tracing::warn!(error = %e, %digest, "pulling from the registry failed; fetching from the control plane");
                }
            }
        }
        let fetched = self.fetch_module(digest).await;
        metrics.module_fetched(
            "control_plane",
            if fetched.is_ok() { "ok" } else { "error" },
        );
        self.keep_module(digest, fetched?)
    }

    /// `GET /v1/modules/{digest}` from the control plane.
    async fn fetch_module(&self, digest: &str) -> Result<Vec<u8>, SyncError> {
        let url = format!("{}/v1/modules/{digest}", self.base.current());
        let bytes = self
            .get(&url)
            .await?
            .into_body()
            .collect()
            .await
            .map_err(|source| SyncError::Body {
                what: url.clone(),
                source,
            })?
            .to_bytes();
        Ok(bytes.to_vec())
    }

    /// Checks fetched bytes against their digest, whoever sent them, and
    /// caches them.
    fn keep_module(&self, digest: &str, bytes: Vec<u8>) -> Result<ModuleFile, SyncError> {
        if digest_of(&bytes) != digest {
            return Err(SyncError::DigestMismatch(digest.to_string()));
        }
        self.cache
            .save_module(digest, &bytes)
            .map_err(|source| SyncError::Cache {
                what: digest.to_string(),
                source,
            })?;
        self.cache
            .module_file(digest)
            .ok_or_else(|| SyncError::DigestMismatch(digest.to_string()))
    }

    async fn get(&self, url: &str) -> Result<http::Response<hyper::body::Incoming>, SyncError> {
        let req = Request::get(url)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.config.token),
            )
            .body(Full::<Bytes>::default())
            .map_err(|source| SyncError::Url {
                url: url.to_string(),
                source,
            })?;
        let resp = self.client.request(req).await.map_err(|source| {
            match outpost_link::rejected_certificate(&source) {
                Some(why) => SyncError::Untrusted {
                    url: url.to_string(),
                    why,
                },
                None => SyncError::Connect {
                    url: url.to_string(),
                    source,
                },
            }
        })?;
        if resp.status() != StatusCode::OK {
            return Err(SyncError::Status {
                url: url.to_string(),
                status: resp.status(),
            });
        }
        Ok(resp)
    }
}

/// Takes the next complete (newline-terminated) event line off the front
/// of `buf` and decodes it; `None` while no whole line has arrived. Public
/// so that the `watch_decode` fuzz target drives exactly what the watch
/// loop runs on bytes from the network.
pub fn next_event(buf: &mut BytesMut) -> Option<Result<WatchEvent, SyncError>> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    let line = buf.split_to(end + 1);
    Some(serde_json::from_slice(&line[..end]).map_err(SyncError::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_jittered_within_half_and_the_list_wraps() {
        let wait = Duration::from_secs(8);
        let waits: Vec<_> = (0..200).map(|_| jittered(wait)).collect();
        assert!(waits.iter().all(|w| *w >= wait / 2 && *w <= wait));
        // Not all the same: a fleet does not come back in lockstep.
        assert!(waits.iter().any(|w| *w != waits[0]));
        let base = Base::new(vec!["https://a".into(), "https://b".into()]);
        assert_eq!(base.current(), "https://a");
        assert!(!base.advance());
        assert_eq!(base.current(), "https://b");
        assert!(base.advance());
        assert_eq!(base.current(), "https://a");
    }

    #[test]
    fn events_are_cut_at_newlines_and_partial_lines_wait() {
        let mut buf = BytesMut::from(&b"{\"type\":\"heartbeat\",\"revision\":3}\n{\"type\":"[..]);
        match next_event(&mut buf) {
            Some(Ok(WatchEvent::Heartbeat { revision: 3 })) => {}
            other => panic!("expected a heartbeat, got {other:?}"),
        }
        assert!(next_event(&mut buf).is_none());
        buf.extend_from_slice(b"\"nope\"}\n");
        assert!(matches!(
            next_event(&mut buf),
            Some(Err(SyncError::Malformed(_)))
        ));
        assert!(buf.is_empty());
    }
}
