//! Module bytes kept outside the database, for stores whose database
//! cannot hold them: etcd refuses requests past 1.5 MiB and modules go up
//! to 50 MiB. The database keeps only which digests are in use.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use super::{Result, StoreError};

/// Content-addressed module blobs, by `sha256:<hex>` digest.
///
/// The store writes a blob before the transaction that records a version
/// of it, and deletes it after the transaction that removed its last user
/// commits, so an implementation needs no transactions of its own.
pub trait ModuleBlobs: Send + Sync {
    /// Stores `bytes` under `digest`; durable when it returns. Idempotent,
    /// and expected to be cheap when the blob is already there: a deploy
    /// may put the same blob again inside a transaction that reruns.
    fn put(&self, digest: &str, bytes: &[u8]) -> Result<()>;
    /// The blob, or `None` if it is not stored.
    fn get(&self, digest: &str) -> Result<Option<Vec<u8>>>;
    /// Removes the blob; removing one that is not there is no error.
    fn delete(&self, digest: &str) -> Result<()>;
}

/// Blobs as files in one directory (a shared volume for several control
/// planes), each named by its digest's hex.
pub struct DirBlobs {
    dir: PathBuf,
}

/// Makes temporary file names unique within the process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl DirBlobs {
    /// Blobs in `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<DirBlobs> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(&e))?;
        Ok(DirBlobs {
            dir: dir.to_path_buf(),
        })
    }

    /// The file of `digest`, refusing anything but `sha256:` and 64 hex
    /// digits, so no digest can name a path outside the directory.
    fn path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| StoreError::Backend(format!("not a sha256 digest: {digest:?}")))?;
        Ok(self.dir.join(hex.to_ascii_lowercase()))
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::from("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::io(&e)
}

impl ModuleBlobs for DirBlobs {
    fn put(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(digest)?;
        if path.exists() {
            return Ok(());
        }
        if !sha256_digest(bytes).eq_ignore_ascii_case(digest) {
            return Err(StoreError::Backend(format!(
                "bytes do not hash to {digest}"
            )));
        }
        // Written aside and renamed into place: a reader (or a crash)
        // never sees half a blob under the digest's name.
        let temp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map_err(io)
    }

    fn get(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let bytes = match std::fs::read(self.path(digest)?) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        if !sha256_digest(&bytes).eq_ignore_ascii_case(digest) {
            return Err(StoreError::Backend(format!(
                "stored blob of {digest} does not match its digest"
            )));
        }
        Ok(Some(bytes))
    }

    fn delete(&self, digest: &str) -> Result<()> {
        match std::fs::remove_file(self.path(digest)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_checked_against_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = DirBlobs::open(dir.path()).unwrap();
        let digest = sha256_digest(b"wasm");
        assert!(blobs.get(&digest).unwrap().is_none());
        blobs.put(&digest, b"wasm").unwrap();
        blobs.put(&digest, b"wasm").unwrap();
        assert_eq!(blobs.get(&digest).unwrap().unwrap(), b"wasm");
        assert!(blobs.put(&sha256_digest(b"x"), b"not x").is_err());
        assert!(blobs.get("sha256:../../etc/passwd").is_err());
        // A blob changed on disk is refused rather than served.
        std::fs::write(dir.path().join(&digest[7..]), b"evil").unwrap();
        assert!(blobs.get(&digest).is_err());
        blobs.delete(&digest).unwrap();
        blobs.delete(&digest).unwrap();
        assert!(blobs.get(&digest).unwrap().is_none());
    }
}
