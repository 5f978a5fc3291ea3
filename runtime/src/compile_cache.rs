//! On-disk cache of compiled components, so a restarted node (or one that
//! is handed the same module again) skips cranelift: a 13 MB JS guest takes
//! seconds to compile and milliseconds to load from here.
//!
//! An entry is keyed by the module's sha256 *and* a hash of everything in
//! the engine that affects code generation (wasmtime version, target,
//! cranelift flags, tunables, wasm features — wasmtime's own
//! `precompile_compatibility_hash`), so a node upgraded or reconfigured
//! never loads code compiled for another setup: it simply misses.
//!
//! Only this node writes here, only from `Component::serialize` of a module
//! it compiled itself; nothing precompiled is ever accepted from outside.
//! Each entry is two files: `<stem>.cwasm`, wasmtime's serialized
//! component as is, and `<stem>.sum`, a sha256 of it, checked before
//! wasmtime sees it, so a torn or corrupted write is deleted and
//! recompiled, never run.
//!
//! A hit is memory-mapped from its file, not copied: the pages are the
//! page cache's, so the kernel shares them and can drop them under
//! pressure, and only the pages a request touches become resident.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub use crate::prune::Pruned;

/// First bytes of every checksum file (and part of every entry's name):
/// bump the version if the layout changes.
const MAGIC: &[u8; 12] = b"outpost-cc2\n";

/// Domain of the validation markers' names.
const VALIDATED_MAGIC: &[u8] = b"outpost-validated1\n";

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Loaded from disk; nothing was compiled.
    Hit,
    /// No entry for this module and engine.
    Miss,
    /// An entry existed but was torn, corrupt or rejected by wasmtime; it
    /// was deleted.
    Invalid,
}

impl Lookup {
    /// Every result, in label order.
    pub const ALL: [Lookup; 3] = [Lookup::Hit, Lookup::Miss, Lookup::Invalid];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Invalid => "invalid",
        }
    }
}

/// The cache directory plus the engine it belongs to.
pub struct CompileCache {
    dir: PathBuf,
    engine_key: [u8; 32],
    /// Entries this process hashed and found whole, with the identity
    /// their file had then: loading the same, unchanged file again (its
    /// code was evicted) skips hashing tens of MiB. Any write, truncation
    /// or replacement changes the identity, and the entry is hashed anew.
    /// This gives up nothing: the entry is memory-mapped, so its pages are
    /// read from disk after any check anyway.
    verified: Mutex<HashMap<PathBuf, (FileId, Vec<u8>)>>,
    /// Entries hashed so far.
    hashed: std::sync::atomic::AtomicU64,
}

/// What identifies a file's contents without reading them: device,
/// inode, size, and modification and change times (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId([i128; 5]);

/// How long ago a file must have last changed for its identity to stand
/// for its contents: file times advance in clock ticks, so a write in the
/// same tick as a check could leave every field as it was (git's "racy
/// clean" problem). A fresh entry is hashed again at its next load.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

impl FileId {
    /// The file's identity, if it has settled (see [`SETTLED`]).
    fn of(path: &Path) -> Option<FileId> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(path).ok()?;
            let settled = m
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= SETTLED);
            if !settled {
                return None;
            }
            let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
            Some(FileId([
                i128::from(m.dev()),
                i128::from(m.ino()),
                i128::from(m.size()),
                ns(m.mtime(), m.mtime_nsec()),
                ns(m.ctime(), m.ctime_nsec()),
            ]))
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            None
        }
    }
}

impl CompileCache {
    /// A cache in `dir` (created, private to this user) for `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<CompileCache> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            engine_key: hasher.0.finalize().into(),
            verified: Mutex::default(),
            hashed: Default::default(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, module: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.cwasm", self.stem(module)))
    }

    /// The checksum file of the entry at `path`.
    fn sum_path(path: &Path) -> PathBuf {
        path.with_extension("sum")
    }

    /// The marker saying an app with this fingerprint was validated here.
    fn marker(&self, fingerprint: &[u8; 32]) -> PathBuf {
        let mut h = Sha256::new();
        h.update(VALIDATED_MAGIC);
        h.update(self.engine_key);
        h.update(fingerprint);
        let stem: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{stem}.ok"))
    }

    /// Records that an app with `fingerprint` (see
    /// [`crate::AppSpec::fingerprint`]) compiled and instantiated under its
    /// limits on this engine, so a restarted node may serve it without
    /// trying again. Best effort: a lost marker costs one trial.
    pub fn mark_validated(&self, fingerprint: &[u8; 32]) {
        if let Err(e) = crate::disk::write_atomically(&self.marker(fingerprint), b"") {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not record a validated app");
        }
    }

    /// Whether [`CompileCache::mark_validated`] recorded `fingerprint` for
    /// this engine (and its compiled code is still here).
    pub fn is_validated(&self, fingerprint: &[u8; 32], module: &[u8; 32]) -> bool {
        self.marker(fingerprint).is_file() && self.path(module).is_file()
    }

    /// Deletes the validation markers of every fingerprint not in `keep`.
    pub fn prune_validated(&self, keep: &[[u8; 32]]) -> std::io::Result<Pruned> {
        let keep = keep
            .iter()
            .filter_map(|f| Some(self.marker(f).file_stem()?.to_str()?.to_string()))
            .collect();
        crate::prune::prune_dir(&self.dir, "ok", &keep, 0)
    }

    /// The file stem of the entry for the module whose sha256 is `module`.
    fn stem(&self, module: &[u8; 32]) -> String {
        let mut h = Sha256::new();
        h.update(MAGIC);
        h.update(self.engine_key);
        h.update(module);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Deletes entries of modules not in `keep` (sha256 of each module)
    /// past `budget` bytes, oldest first; entries of other engine setups
    /// count as unused. See [`crate::prune`].
    pub fn prune(&self, keep: &[[u8; 32]], budget: u64) -> std::io::Result<Pruned> {
        let keep = keep.iter().map(|m| self.stem(m)).collect();
        let pruned = crate::prune::prune_dir(&self.dir, "cwasm", &keep, budget)?;
        // A checksum whose entry went is of no use.
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "sum")
                && !path.with_extension("cwasm").exists()
            {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(pruned)
    }

    /// The compiled form of `wasm`, if this engine compiled it before.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> (Option<Component>, Lookup) {
        self.load_digest(engine, &Sha256::digest(wasm).into())
    }

    /// The compiled form of the module whose sha256 is `module`, if this
    /// engine compiled it before.
    pub fn load_digest(&self, engine: &Engine, module: &[u8; 32]) -> (Option<Component>, Lookup) {
        let path = self.path(module);
        let sum_path = Self::sum_path(&path);
        let (Ok(sum), true) = (std::fs::read(&sum_path), path.is_file()) else {
            return (None, Lookup::Miss);
        };
        let invalid = |why: &str| {
            tracing::warn!(path = %path.display(), why, "compiled-module cache entry refused; recompiling");
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&sum_path);
            (None, Lookup::Invalid)
        };
        let id = FileId::of(&path);
        let seen = id.is_some_and(|id| {
            self.verified()
                .get(&path)
                .is_some_and(|(had, had_sum)| *had == id && *had_sum == sum)
        });
        let whole = seen || {
            self.hashed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sum.strip_prefix(MAGIC.as_slice())
                .zip(file_sha256(&path).ok())
                .is_some_and(|(want, have)| want == have)
        };
        if !whole {
            self.verified().remove(&path);
            return invalid("torn or corrupt");
        }
        if let (false, Some(id)) = (seen, id) {
            self.verified().insert(path.clone(), (id, sum));
        }
        // SAFETY: `Component::deserialize_file` maps the file and runs it
        // as native code, so it must come from `Component::serialize` of a
        // compatible engine and must not change while mapped. It does and
        // it will not: only `store` below writes this private directory,
        // from a component this node compiled, and always by renaming a
        // new file over the name (a mapped file keeps its inode, and a
        // pruned one lives on until unmapped); the file name binds the
        // entry to this engine's configuration and the module's digest;
        // and the checksum just verified proves the file is whole.
        // wasmtime also checks its own header and refuses anything built
        // for another version or configuration.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize_file(engine, &path) };
        match component {
            Ok(component) => (Some(component), Lookup::Hit),
            Err(e) => invalid(&format!("wasmtime refused it: {e:#}")),
        }
    }

    /// Saves a component this node just compiled from `wasm`. Best effort:
    /// a full disk costs the next load a compile, nothing more. Whether
    /// it was saved.
    pub fn store(&self, component: &Component, wasm: &[u8]) -> bool {
        let path = self.path(&Sha256::digest(wasm).into());
        let result = component
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|payload| {
                // The entry first, its checksum last: an entry without one
                // is a miss, never a hit.
                crate::disk::write_atomically(&path, &payload)?;
                let mut sum = MAGIC.to_vec();
                sum.extend_from_slice(&Sha256::digest(&payload));
                crate::disk::write_atomically(&Self::sum_path(&path), &sum)
            });
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not cache a compiled module");
                false
            }
        }
    }
}

impl CompileCache {
    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (FileId, Vec<u8>)>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sha256 of a file, read in small chunks (an entry of a large guest
/// is tens of MiB; it is not held in memory to be checked).
fn file_sha256(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// Feeds `Hash` output into sha256, which (unlike `DefaultHasher`) is the
/// same in every build, so the key is stable across restarts.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_entries_load_and_a_bad_one_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompileCache::open(dir.path(), &engine).unwrap();
        let wasm = outpost_test_fixtures::hello("cached\n");
        let module: [u8; 32] = Sha256::digest(&wasm).into();
        assert_eq!(cache.load_digest(&engine, &module).1, Lookup::Miss);
        cache.store(&Component::new(&engine, &wasm).unwrap(), &wasm);
        assert_eq!(cache.load_digest(&engine, &module).1, Lookup::Hit);
        let path = cache.path(&module);
        let good = std::fs::read(&path).unwrap();
        let sum = std::fs::read(CompileCache::sum_path(&path)).unwrap();

        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 1;
        for (what, entry, sum) in [
            ("torn", good[..good.len() / 2].to_vec(), sum.clone()),
            ("flipped bit", flipped, sum.clone()),
            (
                "checksum of another layout",
                good.clone(),
                sum[1..].to_vec(),
            ),
        ] {
            std::fs::write(&path, &entry).unwrap();
            std::fs::write(CompileCache::sum_path(&path), &sum).unwrap();
            assert_eq!(
                cache.load_digest(&engine, &module).1,
                Lookup::Invalid,
                "{what}"
            );
            assert!(
                !path.exists() && !CompileCache::sum_path(&path).exists(),
                "{what}"
            );
        }
        // An entry whose checksum never reached the disk: a miss.
        std::fs::write(&path, &good).unwrap();
        assert_eq!(cache.load_digest(&engine, &module).1, Lookup::Miss);
    }
    #[test]
    fn a_settled_entry_is_hashed_once_and_any_change_is_hashed_again() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompileCache::open(dir.path(), &engine).unwrap();
        let wasm = outpost_test_fixtures::hello("settled\n");
        let module: [u8; 32] = Sha256::digest(&wasm).into();
        cache.store(&Component::new(&engine, &wasm).unwrap(), &wasm);
        let path = cache.path(&module);
        // Fresh: hashed at every load, as a write in the same clock tick
        // would not show in the file's times.
        for _ in 0..2 {
            assert_eq!(cache.load_digest(&engine, &module).1, Lookup::Hit);
        }
        assert_eq!(cache.hashed.load(Relaxed), 2);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(old).unwrap();
        for _ in 0..3 {
            assert_eq!(cache.load_digest(&engine, &module).1, Lookup::Hit);
        }
        assert_eq!(
            cache.hashed.load(Relaxed),
            3,
            "settled: hashed once more, then not"
        );

        // Altered in place, same size, its modification time put back:
        // the change time still moved, so it is hashed and refused.
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, &bytes).unwrap();
        file.set_modified(old).unwrap();
        assert_eq!(cache.load_digest(&engine, &module).1, Lookup::Invalid);
        assert_eq!(cache.hashed.load(Relaxed), 4);
    }
}
