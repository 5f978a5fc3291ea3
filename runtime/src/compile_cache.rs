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
//! Each file carries a sha256 of its payload, checked before wasmtime sees
//! it, so a torn or corrupted write is deleted and recompiled, never run.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub use crate::prune::Pruned;

/// First bytes of every entry; bump the version if the layout changes.
const MAGIC: &[u8; 12] = b"outpost-cc1\n";

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
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, module: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.cwasm", self.stem(module)))
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
        crate::prune::prune_dir(&self.dir, "cwasm", &keep, budget)
    }

    /// The compiled form of `wasm`, if this engine compiled it before.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> (Option<Component>, Lookup) {
        self.load_digest(engine, &Sha256::digest(wasm).into())
    }

    /// The compiled form of the module whose sha256 is `module`, if this
    /// engine compiled it before.
    pub fn load_digest(&self, engine: &Engine, module: &[u8; 32]) -> (Option<Component>, Lookup) {
        let path = self.path(module);
        let Ok(bytes) = std::fs::read(&path) else {
            return (None, Lookup::Miss);
        };
        let Some(payload) = verified_payload(&bytes) else {
            tracing::warn!(path = %path.display(), "torn or corrupt compiled-module cache entry; recompiling");
            let _ = std::fs::remove_file(&path);
            return (None, Lookup::Invalid);
        };
        // SAFETY: `Component::deserialize` runs the bytes as native code,
        // so they must come from `Component::serialize` of a compatible
        // engine. They do: only `store` below writes this private
        // directory, from a component this node compiled; the file name
        // binds the entry to this engine's configuration and the module's
        // digest; and the checksum just verified proves the file is whole.
        // wasmtime also checks its own header and refuses anything built
        // for another version or configuration.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, payload) };
        match component {
            Ok(component) => (Some(component), Lookup::Hit),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "wasmtime refused a cached compiled module; recompiling");
                let _ = std::fs::remove_file(&path);
                (None, Lookup::Invalid)
            }
        }
    }

    /// Saves a component this node just compiled from `wasm`. Best effort:
    /// a full disk costs the next load a compile, nothing more.
    pub fn store(&self, component: &Component, wasm: &[u8]) {
        let result = component
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|payload| {
                let mut file = Vec::with_capacity(MAGIC.len() + 32 + payload.len());
                file.extend_from_slice(MAGIC);
                file.extend_from_slice(&Sha256::digest(&payload));
                file.extend_from_slice(&payload);
                crate::disk::write_atomically(&self.path(&Sha256::digest(wasm).into()), &file)
            });
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not cache a compiled module");
        }
    }
}

/// The payload of an entry whose magic and checksum are right.
fn verified_payload(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (sum, payload) = rest.split_at(32);
    (Sha256::digest(payload).as_slice() == sum).then_some(payload)
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
    fn only_whole_entries_verify() {
        let payload = b"compiled code";
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&Sha256::digest(payload));
        file.extend_from_slice(payload);
        assert_eq!(verified_payload(&file), Some(&payload[..]));
        // Torn: the tail never reached the disk.
        assert_eq!(verified_payload(&file[..file.len() - 3]), None);
        // Flipped bit.
        let mut bad = file.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(verified_payload(&bad), None);
        // Not ours at all.
        assert_eq!(verified_payload(b"\0asm\x01\0\0\0"), None);
        assert_eq!(verified_payload(&file[..MAGIC.len() + 10]), None);
    }
}
