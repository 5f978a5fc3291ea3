//! Sync mode: follow the control plane's watch stream, fetch modules by
//! digest, apply each snapshot atomically, and keep everything in an
//! on-disk cache so a restarted node serves its last state before the
//! control plane answers (or while it is down).
//!
//! The node connects out (it works behind NAT), reads newline-delimited
//! JSON events, and reconnects with capped exponential backoff, resuming
//! from the revision it has applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use outpost_proto::{AppSpec as WireApp, CertSpec, Delta, Snapshot, WatchEvent};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::node::Node;
use crate::router::Route;
use crate::runtime::{AppSpec, LimitOverrides, Limits};
use crate::tls::Certificate;

/// Where and how to follow a control plane.
#[derive(Clone)]
pub struct SyncConfig {
    /// Base URL, e.g. `http://127.0.0.1:7070`.
    pub url: String,
    /// The node token.
    pub token: String,
    /// Limits for fields neither tenant nor app sets.
    pub defaults: Limits,
    /// This node's id in `GET /v1/nodes`.
    pub node_id: String,
}

impl std::fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches logs.
        f.debug_struct("SyncConfig")
            .field("url", &self.url)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// One client for the watch stream, module fetches and status reports.
type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Longest event line accepted; a snapshot of many apps stays far below.
const MAX_LINE: usize = 64 * 1024 * 1024;
/// Silence longer than this (heartbeats come every 15 s) means the
/// connection is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(45);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The on-disk cache: `snapshot.json` and `modules/<sha256>.wasm`, each
/// written to a temporary file and renamed, and each re-verified when read
/// (a module against its digest, the snapshot against the checksum on its
/// first line), so a half-written or corrupted entry is refetched, never
/// executed or served.
pub struct Cache {
    dir: PathBuf,
    keep_unused_bytes: u64,
}

impl Cache {
    /// A cache in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Cache> {
        let failed = |source| Error::Read {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir.join("modules")).map_err(failed)?;
        // The snapshot holds tenants' private keys: owner only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(failed)?;
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
            keep_unused_bytes: DEFAULT_KEEP_UNUSED_BYTES,
        })
    }

    /// Keeps at most `bytes` of modules (and, separately, of compiled
    /// code) that the applied snapshot does not use; see [`crate::prune`].
    pub fn keep_unused_bytes(mut self, bytes: u64) -> Cache {
        self.keep_unused_bytes = bytes;
        self
    }

    /// Deletes cached modules and compiled code that `snapshot` does not
    /// use, past the budget, and records what is left in the metrics.
    /// Best effort: a failure is logged and costs only disk space.
    fn prune(&self, snapshot: &Snapshot, node: &Node) {
        let hexes: std::collections::HashSet<String> = snapshot
            .apps
            .values()
            .filter_map(|app| app.digest.strip_prefix("sha256:"))
            .map(str::to_string)
            .collect();
        let raw: Vec<[u8; 32]> = hexes.iter().filter_map(|h| unhex32(h)).collect();
        let budget = self.keep_unused_bytes;
        let modules = crate::prune::prune_dir(&self.dir.join("modules"), "wasm", &hexes, budget);
        let compiled = node.runtime().prune_compile_cache(&raw, budget);
        for (kind, result) in [("modules", Some(modules)), ("compiled", compiled)] {
            match result {
                Some(Ok(pruned)) => {
                    node.metrics().set_cache_bytes(kind, pruned.kept_bytes);
                    if pruned.removed > 0 {
                        tracing::info!(
                            kind,
                            files = pruned.removed,
                            bytes = pruned.removed_bytes,
                            "pruned the cache"
                        );
                    }
                }
                Some(Err(e)) => tracing::warn!(kind, error = %e, "could not prune the cache"),
                None => {}
            }
        }
    }

    /// The last applied snapshot, if one was saved whole: its checksum
    /// matches and it parses.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let bytes = std::fs::read(self.dir.join("snapshot.json")).ok()?;
        // A flipped bit inside a route or an env value still parses as
        // JSON, so parsing alone does not prove the file intact.
        let verified = bytes.strip_prefix(SNAPSHOT_HEADER).and_then(|rest| {
            let end = rest.iter().position(|b| *b == b'\n')?;
            let (sum, json) = (&rest[..end], &rest[end + 1..]);
            (digest_of(json).as_bytes() == sum).then_some(json)
        });
        let Some(json) = verified else {
            tracing::warn!(dir = %self.dir.display(), "cached snapshot torn or corrupt; waiting for the control plane");
            return None;
        };
        serde_json::from_slice(json).ok()
    }

    fn save_snapshot(&self, snapshot: &Snapshot) -> std::io::Result<()> {
        let json = serde_json::to_vec(snapshot).expect("snapshots serialize");
        let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER.len() + 72 + json.len());
        bytes.extend_from_slice(SNAPSHOT_HEADER);
        bytes.extend_from_slice(digest_of(&json).as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(&json);
        write_atomically(&self.dir.join("snapshot.json"), &bytes)
    }

    /// A cached module whose bytes still hash to `digest`.
    pub fn module(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.module_path(digest)?).ok()?;
        (digest_of(&bytes) == digest).then_some(bytes)
    }

    fn save_module(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.module_path(digest).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "malformed digest")
        })?;
        write_atomically(&path, bytes)
    }

    /// Only `sha256:` + 64 hex digits maps to a file: a digest from the
    /// wire never becomes an arbitrary path.
    fn module_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join("modules").join(format!("{hex}.wasm")))
    }
}

/// Unused cached modules (and compiled code) kept by default: 512 MiB.
pub const DEFAULT_KEEP_UNUSED_BYTES: u64 = 512 * 1024 * 1024;

/// The 32 bytes written as 64 hex digits in `hex`.
fn unhex32(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// First bytes of the cached snapshot, followed by `sha256:<hex>` of the
/// JSON, a newline, and the JSON. Bump the version if the layout changes.
const SNAPSHOT_HEADER: &[u8] = b"outpost-snapshot1 ";

/// Writes `bytes` to a temporary file, syncs it and renames it over
/// `path`, so readers see the old file or the whole new one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    // A name of its own per write: two apps of one module may compile and
    // cache it at the same moment, and must not rename each other's file.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Applies the cached snapshot, if the cache holds it and every module.
/// Returns its revision.
pub async fn restore(node: &Arc<Node>, cache: &Cache, defaults: &Limits) -> Result<Option<u64>> {
    let Some(snapshot) = cache.snapshot() else {
        return Ok(None);
    };
    let mut apps = Vec::new();
    for app in snapshot.apps.values() {
        let Some(wasm) = cache.module(&app.digest) else {
            tracing::warn!(digest = %app.digest, "cached module missing or corrupt; waiting for the control plane");
            return Ok(None);
        };
        apps.push(to_runtime(app, wasm, defaults)?);
    }
    node.apply(apps).await?;
    node.set_certificates(certificates(&snapshot.certificates));
    node.metrics().set_applied_revision(snapshot.revision);
    tracing::info!(revision = snapshot.revision, "serving the cached snapshot");
    Ok(Some(snapshot.revision))
}

/// Parses wire certificates into what the TLS listener serves. One that
/// does not parse (the control plane checked it, so this is corruption or a
/// version skew) is left out with a warning rather than failing the whole
/// revision: its hostname falls back to the node's default certificate.
fn certificates<'a>(
    certs: impl IntoIterator<Item = (&'a String, &'a CertSpec)>,
) -> Vec<(String, String, Certificate)> {
    certs
        .into_iter()
        .filter_map(|(host, spec)| {
            match Certificate::parse(spec.cert_chain_pem.as_bytes(), spec.private_key_pem.as_bytes()) {
                Ok(cert) => Some((host.clone(), spec.tenant.clone(), cert)),
                Err(e) => {
                    tracing::warn!(hostname = %host, tenant = %spec.tenant, error = %e, "certificate left out");
                    None
                }
            }
        })
        .collect()
}

/// Turns a wire app into what the runtime loads.
fn to_runtime(app: &WireApp, wasm: Vec<u8>, defaults: &Limits) -> Result<(Vec<Route>, AppSpec)> {
    let routes = app
        .routes
        .iter()
        .map(|r| r.parse::<Route>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(vec![format!("app {}/{}: {e}", app.tenant, app.name)]))?;
    let overrides = LimitOverrides {
        fuel: app.limits.fuel,
        memory_mib: app.limits.memory_mib,
        timeout_ms: app.limits.timeout_ms,
        max_concurrency: app.limits.max_concurrency,
        ..LimitOverrides::default()
    };
    Ok((
        routes,
        AppSpec {
            tenant: app.tenant.clone(),
            name: app.name.clone(),
            wasm,
            limits: defaults.with(&overrides),
            env: app.env.clone().into_iter().collect(),
            allow_outbound: app.allow_outbound.clone(),
        },
    ))
}

/// Follows the control plane forever: connect, apply what arrives,
/// reconnect with backoff. `applied` is the revision already being served
/// (what [`restore`] returned, or 0).
pub async fn follow(node: Arc<Node>, config: SyncConfig, cache: Cache, applied: u64) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    if let Some(lines) = node.runtime().take_guest_logs() {
        let shipper = ship_logs(config.clone(), client.clone(), lines);
        tokio::spawn(shipper);
    }
    // Deltas apply to the snapshot being served; without it (nothing
    // restored) the node asks for a full snapshot first.
    let mut have = cache
        .snapshot()
        .filter(|s| applied != 0 && s.revision == applied);
    let mut backoff = BACKOFF_MIN;
    loop {
        let before = have.as_ref().map(|s| s.revision);
        match watch_once(&node, &config, &cache, &client, &mut have).await {
            Ok(()) => tracing::info!("watch stream ended; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "sync with the control plane failed; retrying"),
        }
        node.metrics().sync_reconnect();
        // A stream that delivered something proves the control plane
        // healthy: retry quickly. Otherwise back off, up to 10 s.
        if have.as_ref().map(|s| s.revision) != before {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn watch_once(
    node: &Arc<Node>,
    config: &SyncConfig,
    cache: &Cache,
    client: &HttpClient,
    have: &mut Option<Snapshot>,
) -> std::result::Result<(), String> {
    let url = format!(
        "{}/v1/nodes/watch?revision={}&node={}",
        config.url.trim_end_matches('/'),
        have.as_ref().map_or(0, |s| s.revision),
        config.node_id
    );
    let resp = get(client, &url, &config.token).await?;
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    loop {
        let frame = tokio::time::timeout(READ_TIMEOUT, body.frame())
            .await
            .map_err(|_| "no event or heartbeat for 45 s".to_string())?;
        let Some(frame) = frame else { return Ok(()) };
        let frame = frame.map_err(|e| format!("reading the stream: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(event) = next_event(&mut buf) {
            match event? {
                WatchEvent::Snapshot { snapshot } => {
                    apply(node, config, cache, client, &snapshot).await?;
                    applied(node, config, cache, client, have, snapshot).await?;
                }
                WatchEvent::Delta { delta } => {
                    // A delta from another base means the stream and the
                    // node disagree: reconnect, and get a snapshot.
                    let mut next = have.clone().ok_or("a delta arrived before any snapshot")?;
                    next.apply(&delta).map_err(|e| e.to_string())?;
                    apply_delta(node, config, cache, client, have.as_ref(), &delta).await?;
                    applied(node, config, cache, client, have, next).await?;
                }
                WatchEvent::Heartbeat { revision } => {
                    let at = have.as_ref().map_or(0, |s| s.revision);
                    node.metrics().set_sync_lag(revision.saturating_sub(at));
                }
            }
        }
        if buf.len() > MAX_LINE {
            return Err("an event line exceeds 64 MiB".into());
        }
    }
}

/// Takes the next complete (newline-terminated) event line off the front
/// of `buf` and decodes it; `None` while no whole line has arrived. Public
/// so that the `watch_decode` fuzz target drives exactly what the watch
/// loop runs on bytes from the network.
pub fn next_event(buf: &mut BytesMut) -> Option<std::result::Result<WatchEvent, String>> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    let line = buf.split_to(end + 1);
    Some(serde_json::from_slice(&line[..end]).map_err(|e| format!("malformed event: {e}")))
}

/// Records that `snapshot` is now served: on disk (so a restart serves
/// it), in metrics, and to the control plane.
async fn applied(
    node: &Arc<Node>,
    config: &SyncConfig,
    cache: &Cache,
    client: &HttpClient,
    have: &mut Option<Snapshot>,
    snapshot: Snapshot,
) -> std::result::Result<(), String> {
    cache
        .save_snapshot(&snapshot)
        .map_err(|e| format!("caching the snapshot: {e}"))?;
    cache.prune(&snapshot, node);
    let revision = snapshot.revision;
    node.metrics().set_applied_revision(revision);
    node.metrics().set_sync_lag(0);
    tracing::info!(revision, apps = snapshot.apps.len(), "applied");
    *have = Some(snapshot);
    report(config, client, revision).await;
    Ok(())
}

/// Lines sent in one batch at most.
const LOG_BATCH: usize = 500;
/// How long a batch waits to fill before it is sent.
const LOG_LINGER: Duration = Duration::from_millis(200);

/// Ships guest output lines to the control plane in batches, for `outpost
/// logs`. Best effort: a batch the control plane does not take is dropped
/// (the node's own log still has every line).
async fn ship_logs(
    config: SyncConfig,
    client: HttpClient,
    mut lines: tokio::sync::mpsc::Receiver<outpost_proto::GuestLogLine>,
) {
    let url = format!(
        "{}/v1/nodes/{}/logs",
        config.url.trim_end_matches('/'),
        config.node_id
    );
    let mut batch = Vec::with_capacity(LOG_BATCH);
    while lines.recv_many(&mut batch, LOG_BATCH).await > 0 {
        let deadline = tokio::time::Instant::now() + LOG_LINGER;
        while batch.len() < LOG_BATCH {
            match tokio::time::timeout_at(deadline, lines.recv()).await {
                Ok(Some(line)) => batch.push(line),
                Ok(None) | Err(_) => break,
            }
        }
        let body = serde_json::to_vec(&batch).expect("log lines serialize");
        batch.clear();
        let req = Request::post(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", config.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let Ok(req) = req else { return };
        match client.request(req).await {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => tracing::debug!(status = %resp.status(), "shipping guest logs failed"),
            Err(e) => tracing::debug!(error = %e, "shipping guest logs failed"),
        }
    }
}

/// Tells the control plane what this node now serves (best effort: the
/// next watch connection reports it again).
async fn report(config: &SyncConfig, client: &HttpClient, revision: u64) {
    let url = format!(
        "{}/v1/nodes/{}/status",
        config.url.trim_end_matches('/'),
        config.node_id
    );
    let body = serde_json::to_vec(&outpost_proto::NodeReport {
        applied_revision: revision,
    })
    .expect("reports serialize");
    let req = Request::put(&url)
        .header(header::AUTHORIZATION, format!("Bearer {}", config.token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)));
    let outcome = match req {
        Ok(req) => client.request(req).await.map(|r| r.status()),
        Err(e) => {
            tracing::warn!(error = %e, "bad status URL");
            return;
        }
    };
    match outcome {
        Ok(status) if status.is_success() => {}
        Ok(status) => tracing::warn!(%status, "reporting the applied revision failed"),
        Err(e) => tracing::warn!(error = %e, "reporting the applied revision failed"),
    }
}

async fn get(
    client: &HttpClient,
    url: &str,
    token: &str,
) -> std::result::Result<http::Response<hyper::body::Incoming>, String> {
    let req = Request::get(url)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::default())
        .map_err(|e| format!("bad URL {url}: {e}"))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if resp.status() != StatusCode::OK {
        return Err(format!("GET {url}: {}", resp.status()));
    }
    Ok(resp)
}

/// The module with `digest`: from the cache, else fetched from the control
/// plane, verified against the digest, and cached.
async fn module(
    config: &SyncConfig,
    cache: &Cache,
    client: &HttpClient,
    digest: &str,
) -> std::result::Result<Vec<u8>, String> {
    if let Some(wasm) = cache.module(digest) {
        return Ok(wasm);
    }
    let url = format!("{}/v1/modules/{digest}", config.url.trim_end_matches('/'));
    let bytes = get(client, &url, &config.token)
        .await?
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
        .to_bytes();
    if digest_of(&bytes) != digest {
        return Err(format!("module {digest} does not match its digest"));
    }
    cache
        .save_module(digest, &bytes)
        .map_err(|e| format!("caching {digest}: {e}"))?;
    Ok(bytes.to_vec())
}

/// Fetches what is missing, then swaps the node's whole route table.
async fn apply(
    node: &Arc<Node>,
    config: &SyncConfig,
    cache: &Cache,
    client: &HttpClient,
    snapshot: &Snapshot,
) -> std::result::Result<(), String> {
    let mut apps = Vec::with_capacity(snapshot.apps.len());
    for app in snapshot.apps.values() {
        let wasm = module(config, cache, client, &app.digest).await?;
        apps.push(to_runtime(app, wasm, &config.defaults).map_err(|e| e.to_string())?);
    }
    node.apply(apps).await.map_err(|e| e.to_string())?;
    node.set_certificates(certificates(&snapshot.certificates));
    Ok(())
}

/// Loads only what `delta` changes; every other app keeps serving as is.
async fn apply_delta(
    node: &Arc<Node>,
    config: &SyncConfig,
    cache: &Cache,
    client: &HttpClient,
    have: Option<&Snapshot>,
    delta: &Delta,
) -> std::result::Result<(), String> {
    let mut upsert = Vec::with_capacity(delta.upsert.len());
    for app in delta.upsert.values() {
        let wasm = module(config, cache, client, &app.digest).await?;
        upsert.push(to_runtime(app, wasm, &config.defaults).map_err(|e| e.to_string())?);
    }
    let remove: Vec<(String, String)> = delta
        .remove
        .iter()
        .filter_map(|key| have?.apps.get(key))
        .map(|app| (app.tenant.clone(), app.name.clone()))
        .collect();
    node.update(upsert, &remove)
        .await
        .map_err(|e| e.to_string())?;
    if !delta.certificates.is_empty() || !delta.removed_certificates.is_empty() {
        node.update_certificates(
            certificates(&delta.certificates),
            &delta.removed_certificates,
        );
    }
    Ok(())
}
