//! Keeping the node's on-disk caches bounded.
//!
//! In sync mode every version ever deployed lands on every node twice:
//! the module in `modules/` and its compiled code (2–4× larger) in
//! `compiled/`. Without pruning a node that has seen a few thousand
//! deploys fills its disk. After each applied snapshot the node keeps
//! every file the snapshot uses, plus the most recently written unused
//! ones up to a byte budget (so a rollback to a recent version needs no
//! fetch and no compile), and deletes the rest, oldest first. Leftover
//! temporary files from a write cut short by a crash go too.

use std::collections::HashSet;
use std::path::Path;
use std::time::SystemTime;

/// A temporary file older than this is a leftover of a crashed write.
const TMP_LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// What one pass over a directory did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Files removed.
    pub removed: usize,
    /// Bytes they held.
    pub removed_bytes: u64,
    /// Bytes left in the directory's entries, used and unused.
    pub kept_bytes: u64,
}

/// Prunes the `*.{ext}` files of `dir`: files named `{stem}.{ext}` with a
/// stem in `keep` stay; of the others, the newest stay while they total at
/// most `budget` bytes and the rest are deleted. `*.tmp` files older than
/// ten minutes are deleted.
/// Anything else in the directory is left alone.
pub fn prune_dir(
    dir: &Path,
    ext: &str,
    keep: &HashSet<String>,
    budget: u64,
) -> std::io::Result<Pruned> {
    let mut out = Pruned::default();
    let mut unused: Vec<(SystemTime, u64, std::path::PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = match entry.metadata() {
            Ok(m) if m.is_file() => m,
            // Gone since the listing, or not a plain file: not ours.
            _ => continue,
        };
        let (Some(stem), Some(file_ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if file_ext == "tmp" {
            // A fresh one may be a write in progress (a compile that
            // outlived the apply that started it); only leftovers go.
            let age = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .unwrap_or_default();
            if age >= TMP_LEFTOVER_AGE && std::fs::remove_file(&path).is_ok() {
                out.removed += 1;
                out.removed_bytes += meta.len();
            }
        } else if file_ext != ext {
            continue;
        } else if keep.contains(stem) {
            out.kept_bytes += meta.len();
        } else {
            let written = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            unused.push((written, meta.len(), path));
        }
    }
    // Newest first: they are the likeliest rollback targets.
    unused.sort_by_key(|u| std::cmp::Reverse(u.0));
    let mut unused_bytes = 0u64;
    for (_, len, path) in unused {
        if unused_bytes + len <= budget {
            unused_bytes += len;
            out.kept_bytes += len;
        } else if std::fs::remove_file(&path).is_ok() {
            out.removed += 1;
            out.removed_bytes += len;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, len: usize, age_s: u64) {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; len]).unwrap();
        let when = SystemTime::now() - std::time::Duration::from_secs(age_s);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn used_files_stay_and_unused_ones_go_oldest_first_past_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "used.wasm", 500, 1000);
        write(d, "new.wasm", 100, 10);
        write(d, "mid.wasm", 100, 100);
        write(d, "old.wasm", 100, 1000);
        write(d, "torn.tmp", 7, 3600);
        write(d, "writing.tmp", 9, 1);
        write(d, "other.txt", 3, 5);
        let keep = HashSet::from(["used".to_string()]);
        let pruned = prune_dir(d, "wasm", &keep, 250).unwrap();
        assert_eq!(
            names(d),
            [
                "mid.wasm",
                "new.wasm",
                "other.txt",
                "used.wasm",
                "writing.tmp"
            ]
        );
        assert_eq!(
            pruned,
            Pruned {
                removed: 2,
                removed_bytes: 107,
                kept_bytes: 700
            }
        );

        // A zero budget keeps only what is used; the used file is kept
        // however large it is.
        let pruned = prune_dir(d, "wasm", &keep, 0).unwrap();
        assert_eq!(names(d), ["other.txt", "used.wasm", "writing.tmp"]);
        assert_eq!(pruned.kept_bytes, 500);
    }
}
