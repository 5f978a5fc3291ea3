//! The embedded backend: sled 0.34, one tree per [`Tree`], multi-tree
//! transactions, and a flush before every write returns.

use std::path::Path;

use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::{Db, Transactional};

use super::kv::{Kv, Tree, Tx, TxError, TxResult};
use super::{KvStore, Result, StoreError};

/// The store in one local directory, the default for a single control
/// plane; module bytes are kept in the database.
pub type SledStore = KvStore<SledKv>;

/// A sled database with the store's trees.
pub struct SledKv {
    db: Db,
    /// Indexed by `Tree as usize`.
    trees: Vec<sled::Tree>,
}

/// How long [`SledStore::open`] waits for a lock a store just closed in
/// this process may still hold: sled's flusher thread lets go of the file
/// lock a moment after the last handle is dropped — a moment that passed
/// 2 s once on two cores busy with the whole test suite.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the database, waiting out a lock that is about to be released;
/// a lock another process holds is still an error after the wait.
fn open_db(dir: &Path) -> sled::Result<Db> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new().path(dir).open() {
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && started.elapsed() < LOCK_RELEASE_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl KvStore<SledKv> {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore> {
        let db = open_db(dir)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", dir.display())))?;
        let trees = Tree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()).map_err(backend))
            .collect::<Result<Vec<_>>>()?;
        KvStore::new(SledKv { db, trees }, None)
    }
}

impl SledKv {
    /// One tree, for tests that write records as an older version did.
    pub(super) fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees[tree as usize]
    }

    /// Makes everything written so far durable.
    pub(super) fn flush(&self) -> Result<()> {
        self.db.flush().map_err(backend)?;
        Ok(())
    }
}

/// A transaction's trees, indexed by `Tree as usize`.
struct SledTx<'a>(&'a [TransactionalTree]);

fn unabortable(e: UnabortableTransactionError) -> TxError {
    match e {
        UnabortableTransactionError::Conflict => TxError::Conflict,
        UnabortableTransactionError::Storage(e) => TxError::Backend(backend(e)),
    }
}

impl Tx for SledTx<'_> {
    fn get(&self, tree: Tree, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        let v = self.0[tree as usize].get(key).map_err(unabortable)?;
        Ok(v.map(|v| v.to_vec()))
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.0[tree as usize]
            .insert(key, value)
            .map_err(unabortable)?;
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        let v = self.0[tree as usize].remove(key).map_err(unabortable)?;
        Ok(v.map(|v| v.to_vec()))
    }
}

impl Kv for SledKv {
    fn transact<T>(&self, f: impl Fn(&dyn Tx) -> TxResult<T>) -> Result<T> {
        // Every tree in every transaction: the view is indexed as
        // `Tree::ALL`.
        let trees: Vec<&sled::Tree> = self.trees.iter().collect();
        let out = trees[..]
            .transaction(|view| {
                let tx = SledTx(view);
                f(&tx).map_err(|e| match e {
                    TxError::Conflict => ConflictableTransactionError::Conflict,
                    TxError::Abort(e) | TxError::Backend(e) => {
                        ConflictableTransactionError::Abort(e)
                    }
                })
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => backend(e),
            })?;
        self.flush()?;
        Ok(out)
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree(tree)
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree(tree)
            .scan_prefix(prefix)
            .map(|entry| {
                let (k, v) = entry.map_err(backend)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }
}

/// A database error as the API tells it: a full disk apart from the rest.
fn backend(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(ref io) => StoreError::io(io),
        other => StoreError::Backend(other.to_string()),
    }
}
