//! The key-value contract the store's logic is written against, so the
//! same transactions run on the embedded sled database and on etcd.
//!
//! It is deliberately small: named trees of byte keys and values, and
//! serializable transactions that read, insert and remove keys. Anything
//! richer (scans inside a transaction, watches) would have to be built
//! twice and proven twice; the store's logic does without it.

use super::{Result, StoreError};

/// The record kinds, one key space each (a sled tree; an etcd key prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    /// Tenant name -> [`super::TenantRecord`].
    Tenants,
    /// Token sha256 -> [`super::TokenRecord`].
    Tokens,
    /// `tenant/name` -> token sha256.
    TokenNames,
    /// Tenant -> [`super::Usage`].
    Usage,
    /// Module digest -> how many deployment records use it.
    ModuleRefs,
    /// `tenant/app` -> [`super::AppRecord`].
    Apps,
    /// Normalized route -> `tenant/app` serving it.
    Routes,
    /// Host -> the tenant owning it and how many of its routes are on it.
    Hosts,
    /// `tenant/app/<version, big-endian>` -> [`super::DeploymentRecord`].
    Deployments,
    /// Module digest -> bytes, for backends that keep blobs in the
    /// database (sled); empty when blobs live in a [`super::ModuleBlobs`].
    Modules,
    /// Hostname -> [`super::CertRecord`].
    Certificates,
    /// Node name -> [`super::NodeIdentityRecord`].
    NodeIdentities,
    /// Node id -> its [`outpost_proto::NodeStatus`] as a control plane
    /// sharing the store last published it (the fleet view).
    NodeStatus,
    /// Revision (big-endian) -> [`outpost_proto::PurgeRecord`]: the most
    /// recent edge-cache purges, for nodes catching up.
    Purges,
    /// The revision and the migration markers.
    Meta,
}

impl Tree {
    /// Every tree, in a fixed order (the index of each is `tree as usize`).
    pub const ALL: [Tree; 15] = [
        Tree::Tenants,
        Tree::Tokens,
        Tree::TokenNames,
        Tree::Usage,
        Tree::ModuleRefs,
        Tree::Apps,
        Tree::Routes,
        Tree::Hosts,
        Tree::Deployments,
        Tree::Modules,
        Tree::Certificates,
        Tree::NodeIdentities,
        Tree::NodeStatus,
        Tree::Purges,
        Tree::Meta,
    ];

    /// The tree's name: sled's tree name and etcd's key segment, the same
    /// names the sled store has always used on disk.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Tenants => "tenants",
            Tree::Tokens => "tokens",
            Tree::TokenNames => "token_names",
            Tree::Usage => "usage",
            Tree::ModuleRefs => "module_refs",
            Tree::Apps => "apps",
            Tree::Routes => "routes",
            Tree::Hosts => "hosts",
            Tree::Deployments => "deployments",
            Tree::Modules => "modules",
            Tree::Certificates => "certificates",
            Tree::NodeIdentities => "node_identities",
            Tree::NodeStatus => "node_status",
            Tree::Purges => "purges",
            Tree::Meta => "meta",
        }
    }
}

/// Why a transaction's closure stopped.
#[derive(Debug)]
pub enum TxError {
    /// The logic refused the change: nothing is stored and the error is
    /// the caller's answer.
    Abort(StoreError),
    /// The backend failed (I/O, network, corruption): nothing is stored.
    Backend(StoreError),
    /// Another writer got in the way: the backend runs the closure again
    /// from scratch.
    Conflict,
}

/// `Result` of the operations inside a transaction.
pub type TxResult<T> = std::result::Result<T, TxError>;

/// Refuses the change with `e`.
pub fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(TxError::Abort(e))
}

/// One transaction's view of the database: reads see the transaction's
/// own writes, and all of it commits together or not at all.
pub trait Tx {
    /// The value under `key`.
    fn get(&self, tree: Tree, key: &[u8]) -> TxResult<Option<Vec<u8>>>;
    /// Sets `key` to `value`.
    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> TxResult<()>;
    /// Removes `key`, returning what it held (which counts as a read).
    fn remove(&self, tree: Tree, key: &[u8]) -> TxResult<Option<Vec<u8>>>;
}

/// A write outside any read, for start-up migrations.
#[derive(Debug, Clone)]
pub enum Write {
    /// Sets a key.
    Put(Tree, Vec<u8>, Vec<u8>),
    /// Removes a key.
    Delete(Tree, Vec<u8>),
}

/// A database the store's logic runs on.
pub trait Kv: Send + Sync + 'static {
    /// Runs `f` as one serializable transaction and makes it durable
    /// before returning. `f` may run several times (after a conflict),
    /// each time from scratch: it must have no effect outside `tx` that
    /// is not safe to repeat.
    fn transact<T>(&self, f: impl Fn(&dyn Tx) -> TxResult<T>) -> Result<T>;
    /// The value under `key`, outside any transaction (it reflects every
    /// write acknowledged before the call).
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Every key starting with `prefix`, with its value, in key order.
    fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Whether other processes (other control planes) write to the same
    /// data, so changes can appear that this process did not make.
    fn shared(&self) -> bool {
        false
    }

    /// Woken whenever `key` changes, whoever changed it, for as long as
    /// the database lives; `None` if the database cannot push changes.
    /// A wake-up may be spurious, and several changes may share one.
    fn changes(&self, _tree: Tree, _key: &[u8]) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// Applies `writes` together, without reading (migrations).
    fn apply(&self, writes: &[Write]) -> Result<()> {
        self.transact(|tx| {
            for w in writes {
                match w {
                    Write::Put(tree, k, v) => tx.insert(*tree, k, v)?,
                    Write::Delete(tree, k) => {
                        tx.remove(*tree, k)?;
                    }
                }
            }
            Ok(())
        })
    }
}
