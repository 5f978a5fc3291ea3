//! The node's on-disk cache: `snapshot.json` and `modules/<sha256>.wasm`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use outpost_proto::Snapshot;
use outpost_runtime::ModuleFile;
use outpost_runtime::disk::{digest_of, unhex32, write_atomically};
use outpost_runtime::prune::prune_dir;

use outpost_runtime::Runtime;
use outpost_runtime::seal::Sealer;

use super::metrics::Metrics;
use crate::error::{Error, Result};

/// The on-disk cache: `snapshot.json` and `modules/<sha256>.wasm`, each
/// written to a temporary file and renamed, and each re-verified when read
/// (a module against its digest, the snapshot by its seal), so a
/// half-written or corrupted entry is refetched, never executed or served.
///
/// The snapshot holds tenants' env values and private keys, so it is
/// sealed (XChaCha20-Poly1305) with a key that is not in the directory: a
/// copied cache reveals nothing, and the seal also proves it intact.
pub struct Cache {
    dir: PathBuf,
    keep_unused_bytes: u64,
    sealer: Sealer,
}

impl Cache {
    /// A cache in `dir` (created if missing) whose snapshot is sealed
    /// with `sealer`.
    pub fn open(dir: &Path, sealer: Sealer) -> Result<Cache> {
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
            sealer,
        })
    }

    /// Keeps at most `bytes` of modules (and, separately, of compiled
    /// code) that the applied snapshot does not use; see [`outpost_runtime::prune`].
    pub fn keep_unused_bytes(mut self, bytes: u64) -> Cache {
        self.keep_unused_bytes = bytes;
        self
    }

    /// What prunes this cache, to be moved to a task of its own.
    pub(crate) fn pruning(&self) -> Pruning {
        Pruning {
            dir: self.dir.clone(),
            keep_unused_bytes: self.keep_unused_bytes,
        }
    }

    /// The last applied snapshot, if one was saved whole: it opens with
    /// this cache's key (or, written before sealing, its checksum matches)
    /// and it parses.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let bytes = std::fs::read(self.dir.join("snapshot.json")).ok()?;
        let json = if let Some(sealed) = bytes.strip_prefix(SNAPSHOT_HEADER) {
            self.sealer.open_bytes(SNAPSHOT_CONTEXT, sealed).ok()
        } else {
            // A flipped bit inside a route or an env value still parses
            // as JSON, so parsing alone does not prove the file intact.
            bytes.strip_prefix(CLEAR_SNAPSHOT_HEADER).and_then(|rest| {
                let end = rest.iter().position(|b| *b == b'\n')?;
                let (sum, json) = (&rest[..end], &rest[end + 1..]);
                (digest_of(json).as_bytes() == sum).then(|| json.to_vec())
            })
        };
        let Some(json) = json else {
            tracing::warn!(dir = %self.dir.display(), "cached snapshot torn, corrupt or sealed with another key; waiting for the control plane");
            return None;
        };
        serde_json::from_slice(&json).ok()
    }

    pub(crate) fn save_snapshot(&self, snapshot: &Snapshot) -> std::io::Result<()> {
        let json = serde_json::to_vec(snapshot).expect("snapshots serialize");
        let mut bytes = SNAPSHOT_HEADER.to_vec();
        bytes.extend_from_slice(&self.sealer.seal_bytes(SNAPSHOT_CONTEXT, &json));
        write_atomically(&self.dir.join("snapshot.json"), &bytes)
    }

    /// The cached module file of `digest`, if there is one (unread: its
    /// bytes are checked against the digest when they are read).
    pub fn module_file(&self, digest: &str) -> Option<ModuleFile> {
        let path = self.module_path(digest)?;
        let sha256 = unhex32(digest.strip_prefix("sha256:")?)?;
        path.is_file().then_some(ModuleFile { path, sha256 })
    }

    pub(crate) fn save_module(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
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

/// First bytes of the cached snapshot, followed by the sealed JSON (nonce
/// and ciphertext). Bump the version if the layout changes.
const SNAPSHOT_HEADER: &[u8] = b"outpost-snapshot2\n";

/// What the sealed snapshot is bound to.
const SNAPSHOT_CONTEXT: &str = "outpost node cache: snapshot.json";

/// First bytes of a snapshot written before sealing, followed by
/// `sha256:<hex>` of the JSON, a newline, and the JSON in clear. Still
/// read, so an upgraded node serves from its cache; the next save seals it.
const CLEAR_SNAPSHOT_HEADER: &[u8] = b"outpost-snapshot1 ";

/// Where a node's cache key comes from when none is configured: its node
/// token, which the cache directory does not hold.
pub fn sealer_from_token(token: &str) -> Sealer {
    Sealer::derived("outpost node cache key v1", token.as_bytes())
}

/// The modules (hex digests) `snapshot` uses: what pruning keeps.
pub(crate) fn in_use(snapshot: &Snapshot) -> HashSet<String> {
    snapshot
        .apps
        .values()
        .filter_map(|app| app.digest.strip_prefix("sha256:"))
        .map(str::to_string)
        .collect()
}

/// Prunes a node's cache; see [`Pruning::prune`].
#[derive(Debug, Clone)]
pub(crate) struct Pruning {
    dir: PathBuf,
    keep_unused_bytes: u64,
}

impl Pruning {
    /// Deletes cached modules and compiled code not in `hexes` (see
    /// [`in_use`]), past the budget, and records what is left in the
    /// metrics. Best effort: a failure is logged and costs only disk
    /// space. Reads whole directories: run it off the async workers.
    pub(crate) fn prune(&self, hexes: &HashSet<String>, runtime: &Runtime, metrics: &Metrics) {
        let raw: Vec<[u8; 32]> = hexes.iter().filter_map(|h| unhex32(h)).collect();
        let budget = self.keep_unused_bytes;
        let modules = prune_dir(&self.dir.join("modules"), "wasm", hexes, budget);
        let compiled = runtime.prune_compile_cache(&raw, budget);
        for (kind, result) in [("modules", Some(modules)), ("compiled", compiled)] {
            match result {
                Some(Ok(pruned)) => {
                    metrics.set_cache_bytes(kind, pruned.kept_bytes);
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
}
