//! Moving a sled installation into etcd and a registry
//! (`control-plane migrate`): every record copied as it is stored, so
//! tokens, sealed secrets and the revision nodes have applied stay valid,
//! and every module a version uses pushed to the registry.
//!
//! The copy is not one transaction (etcd caps a transaction's size), so
//! it is made safe to interrupt instead: a marker goes in first and comes
//! out with the revision, in the last write. A control plane refuses a
//! store holding the marker (see `schema`), and `migrate` run again over
//! a prefix marked by a copy from the same source finishes it; over any
//! other non-empty prefix it refuses, so it never mixes two installations.

use std::collections::BTreeMap;

use super::blobs::ModuleBlobs;
use super::kv::{Kv, Tree, Write};
use super::logic::REVISION;
use super::{EtcdKv, Result, SledStore, StoreError};

/// In [`Tree::Meta`] while a copy is under way: where it comes from.
pub(super) const MIGRATING: &[u8] = b"migrating";

/// etcd refuses a transaction of more than 128 operations or 1.5 MiB
/// (its defaults); batches stay well under both.
const BATCH_OPS: usize = 64;
const BATCH_BYTES: usize = 512 * 1024;

/// What a copy moved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// The revision the copy ends at: the source's, so nodes that applied
    /// it resume where they were.
    pub revision: u64,
    /// Records per tree, by the tree's name (modules excluded).
    pub records: BTreeMap<&'static str, usize>,
    /// Modules pushed to the registry.
    pub modules: usize,
    /// Their bytes.
    pub module_bytes: u64,
}

impl SledStore {
    /// Copies this store into `target` (an empty etcd prefix, or one a
    /// copy from here stopped in) with module bytes into `blobs`.
    /// `source` names this store in the marker.
    pub fn copy_into(
        &self,
        target: &EtcdKv,
        blobs: &dyn ModuleBlobs,
        source: &str,
    ) -> Result<Copied> {
        match target.get(Tree::Meta, MIGRATING)? {
            None => refuse_if_used(target)?,
            // Finishing another source's copy would mix two installations.
            Some(other) if other != source.as_bytes() => {
                return Err(StoreError::Exists(format!(
                    "a copy from {} (not finished) under this prefix",
                    String::from_utf8_lossy(&other)
                )));
            }
            Some(_) => {}
        }
        target.apply(&[Write::Put(
            Tree::Meta,
            MIGRATING.to_vec(),
            source.as_bytes().to_vec(),
        )])?;
        let mut copied = Copied::default();
        let mut batch = Batch::new(target);
        for tree in Tree::ALL {
            if matches!(tree, Tree::Meta | Tree::Modules) {
                continue;
            }
            let records = self.kv.scan(tree, b"")?;
            copied.records.insert(tree.name(), records.len());
            for (key, value) in records {
                batch.put(tree, key, value)?;
            }
        }
        batch.flush()?;
        // Only modules some version uses: the rest would be collected
        // anyway. One at a time, as they may be tens of MiB each.
        for (digest, _) in self.kv.scan(Tree::ModuleRefs, b"")? {
            let digest = String::from_utf8_lossy(&digest).into_owned();
            let bytes = self
                .kv
                .get(Tree::Modules, digest.as_bytes())?
                .ok_or_else(|| {
                    StoreError::Backend(format!(
                        "module {digest} is used by a version but missing from the source store"
                    ))
                })?;
            blobs.put(&digest, &bytes)?;
            copied.modules += 1;
            copied.module_bytes += bytes.len() as u64;
        }
        // The revision and the schema markers last, with the marker's
        // removal: until this write lands, no control plane serves it.
        let mut last: Vec<Write> = self
            .kv
            .scan(Tree::Meta, b"")?
            .into_iter()
            .filter(|(key, _)| key.as_slice() != MIGRATING)
            .map(|(key, value)| Write::Put(Tree::Meta, key, value))
            .collect();
        last.push(Write::Delete(Tree::Meta, MIGRATING.to_vec()));
        target.apply(&last)?;
        copied.revision = self
            .kv
            .get(Tree::Meta, REVISION)?
            .map(|v| super::logic::read_u64(&v))
            .unwrap_or(0);
        Ok(copied)
    }
}

/// Refuses a prefix that already holds a store (a revision, or any
/// record): a copy would mix two installations.
fn refuse_if_used(target: &EtcdKv) -> Result<()> {
    if let Some(revision) = target.get(Tree::Meta, REVISION)? {
        return Err(StoreError::Exists(format!(
            "a store at revision {} under this prefix",
            super::logic::read_u64(&revision)
        )));
    }
    for tree in Tree::ALL {
        if tree != Tree::Meta && !target.scan(tree, b"")?.is_empty() {
            return Err(StoreError::Exists(format!(
                "a store with {} under this prefix",
                tree.name()
            )));
        }
    }
    Ok(())
}

/// Puts gathered into transactions of bounded size.
struct Batch<'a> {
    target: &'a EtcdKv,
    writes: Vec<Write>,
    bytes: usize,
}

impl<'a> Batch<'a> {
    fn new(target: &'a EtcdKv) -> Batch<'a> {
        Batch {
            target,
            writes: Vec::new(),
            bytes: 0,
        }
    }

    fn put(&mut self, tree: Tree, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        let size = key.len() + value.len();
        if !self.writes.is_empty()
            && (self.writes.len() == BATCH_OPS || self.bytes + size > BATCH_BYTES)
        {
            self.flush()?;
        }
        self.bytes += size;
        self.writes.push(Write::Put(tree, key, value));
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.writes.is_empty() {
            self.target.apply(&self.writes)?;
        }
        self.writes.clear();
        self.bytes = 0;
        Ok(())
    }
}
