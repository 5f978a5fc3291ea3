//! The control plane's state, behind a trait so a replicated store can
//! replace the embedded sled one.
//!
//! Every mutation is one atomic transaction that also bumps the global
//! revision, and is durable (flushed) before it returns: an acknowledged
//! write survives a crash. Module blobs are content-addressed by sha256.
//!
//! The logic of every write (`logic`, `kv_store`) is written once
//! against a small transactional key-value contract ([`kv`]) and runs on
//! two backends: sled, embedded, one control plane ([`SledStore`]); and
//! etcd, shared by several stateless control planes ([`EtcdStore`]), with
//! module bytes outside it ([`ModuleBlobs`]).

pub mod blobs;
mod copy;
mod etcd_kv;
pub mod faulty;
pub mod kv;
mod kv_store;
mod logic;
mod registry_blobs;
mod schema;
mod sled_kv;

use std::collections::BTreeMap;

use outpost_proto::{Limits, TenantQuotas};
use serde::{Deserialize, Serialize};

pub use blobs::{DirBlobs, ModuleBlobs};
pub use copy::Copied;
pub use etcd_kv::{EtcdKv, EtcdOptions, EtcdStore, EtcdTls};
pub use faulty::FaultyStore;
pub use kv_store::KvStore;
pub use registry_blobs::RegistryBlobs;
pub use sled_kv::{SledKv, SledStore};

/// A monotonically increasing number, bumped by every change to what nodes
/// serve.
pub type Revision = u64;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing already exists (tenant or app name taken).
    #[error("{0} already exists")]
    Exists(String),
    /// A route belongs to another app.
    #[error("route {route} is already served by another app")]
    RouteTaken {
        /// The route.
        route: String,
        /// `tenant/app` owning it (only shown to admins).
        owner: String,
    },
    /// The host of a route belongs to another tenant: once a tenant routes
    /// any path on a host, every path on it is that tenant's.
    #[error("{host} is routed by another tenant")]
    HostTaken {
        /// The host.
        host: String,
    },
    /// The thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The change would take the tenant past one of its quotas.
    #[error("quota {quota}: at most {limit}")]
    QuotaExceeded {
        /// The quota's name, as in `[quotas]`.
        quota: &'static str,
        /// Its value for this tenant.
        limit: u64,
    },
    /// The disk under the store is full (`ENOSPC`): nothing was changed,
    /// and retrying helps only once an operator frees space.
    #[error("no space left for the store: {0}")]
    Full(String),
    /// The underlying database failed (I/O error, corruption, …).
    #[error("storage failure: {0}")]
    Backend(String),
}

impl StoreError {
    /// Classifies an I/O error from the database: a full disk is told
    /// apart from every other failure, because the operator's fix differs.
    pub fn io(e: &std::io::Error) -> StoreError {
        // `StorageFull` is what std maps ENOSPC (and EDQUOT) to.
        if e.kind() == std::io::ErrorKind::StorageFull {
            StoreError::Full(e.to_string())
        } else {
            StoreError::Backend(e.to_string())
        }
    }
}

/// A change to a record made inside a store transaction; it may refuse
/// (`Err(reason)`), which stores nothing. The transaction may run it more
/// than once, each time on a fresh copy of the stored record.
pub type Change<'a, T> = dyn FnMut(&mut T) -> std::result::Result<(), String> + Send + 'a;

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stored tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Name.
    pub name: String,
    /// sha256 of its bearer token, hex. The token itself is never stored.
    pub token_sha256: String,
    /// Limit overrides for its apps.
    pub limits: Limits,
    /// Unix seconds.
    pub created_at: u64,
    /// Domains the admin granted it: it may route each and every name
    /// under it.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Disabled by the admin: its hosts answer 403, its writes are refused.
    #[serde(default)]
    pub disabled: bool,
    /// Quota overrides (absent fields: the operator's defaults).
    #[serde(default)]
    pub quotas: TenantQuotas,
}

/// One of a tenant's bearer tokens, by the sha256 it is stored under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The tenant it lets in.
    pub tenant: String,
    /// Its name, unique within the tenant (`default` for the first).
    pub name: String,
    /// sha256 of the token, hex.
    pub token_sha256: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// A node's own credential: the node named `name` authenticates with the
/// token whose sha256 this is. Revoking it (deleting the record) shuts
/// that one node out without touching the rest of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentityRecord {
    /// The node's name, which is also its id in the fleet.
    pub name: String,
    /// sha256 of its token, hex. The token itself is never stored.
    pub token_sha256: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// What a tenant holds, kept exact by every write that changes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Apps.
    pub apps: u64,
    /// Distinct hosts its routes are on.
    pub hosts: u64,
    /// Bytes of the deployments kept (a module kept twice counts twice).
    pub stored_bytes: u64,
}

/// The quotas a write is checked against, in the same transaction, so two
/// racing writes cannot both pass the last free unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Apps.
    pub apps: u64,
    /// Distinct hosts.
    pub hosts: u64,
    /// Deployments kept per app: past it, the oldest inactive one goes.
    pub versions_per_app: u64,
    /// Bytes of deployments kept.
    pub stored_bytes: u64,
}

impl Allowance {
    /// No bound at all (store tests; migrations).
    pub const UNLIMITED: Allowance = Allowance {
        apps: u64::MAX,
        hosts: u64::MAX,
        versions_per_app: u64::MAX,
        stored_bytes: u64::MAX,
    };
}

/// A stored app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    /// Owning tenant.
    pub tenant: String,
    /// Name.
    pub name: String,
    /// Normalized routes.
    pub routes: Vec<String>,
    /// Guest environment: names and values, the values sealed (see
    /// [`crate::env`]) unless `env_sealed` is false.
    pub env: BTreeMap<String, String>,
    /// Whether `env`'s values are sealed: true in every record written
    /// since env sealing; older ones are sealed at start-up.
    #[serde(default)]
    pub env_sealed: bool,
    /// Version serving traffic.
    pub active_version: Option<u64>,
    /// Deployments made so far (the next one is `versions + 1`).
    pub versions: u64,
    /// The versions still stored, oldest first (older ones were pruned).
    /// Empty in records written before pruning: every version is kept.
    #[serde(default)]
    pub kept: Vec<u64>,
    /// Hosts the worker may call over outbound HTTP.
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
}

/// An app's environment as [`Store::update_env`] hands it to a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnv {
    /// Names and values.
    pub values: BTreeMap<String, String>,
    /// Whether the values are sealed; a change that seals them sets it.
    pub sealed: bool,
}

/// A stored deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// 1, 2, 3, …
    pub version: u64,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// Unix seconds.
    pub created_at: u64,
}

/// A tenant's TLS certificate. The private key is stored sealed
/// ([`outpost_runtime::seal::Sealer`]), never in clear.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    /// The hostname it is served for (`a.example.com` or `*.example.com`).
    pub hostname: String,
    /// Owning tenant.
    pub tenant: String,
    /// PEM chain, leaf first.
    pub cert_chain_pem: String,
    /// The PEM private key, sealed (hex of nonce + ciphertext).
    pub private_key_sealed: String,
    /// DNS names the certificate covers.
    pub names: Vec<String>,
    /// Validity, Unix seconds.
    pub not_before: i64,
    /// Expiry, Unix seconds.
    pub not_after: i64,
    /// Unix seconds.
    pub created_at: u64,
}

impl std::fmt::Debug for CertRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRecord")
            .field("hostname", &self.hostname)
            .field("tenant", &self.tenant)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The control plane's storage.
pub trait Store: Send + Sync + 'static {
    /// Current revision.
    fn revision(&self) -> Result<Revision>;

    /// Whether other control planes write to the same state (etcd), so
    /// the revision can move without this process's writes.
    fn shared(&self) -> bool {
        false
    }

    /// Woken when the revision may have moved (another control plane
    /// wrote), so changes reach this one's nodes at once rather than at
    /// the next poll; `None` if the store cannot push.
    fn revision_changes(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// Creates a tenant; its name must be free.
    fn create_tenant(&self, record: TenantRecord) -> Result<()>;
    /// Every tenant, by name.
    fn tenants(&self) -> Result<Vec<TenantRecord>>;
    /// One tenant.
    fn tenant(&self, name: &str) -> Result<Option<TenantRecord>>;
    /// The tenant whose token hashes to `token_sha256`.
    fn tenant_by_token(&self, token_sha256: &str) -> Result<Option<TenantRecord>>;
    /// Changes a tenant's record with `change` in one transaction (limits,
    /// domains, quotas, disabled); `change` may refuse (`Err(reason)`),
    /// which stores nothing.
    fn update_tenant(
        &self,
        name: &str,
        change: &mut Change<'_, TenantRecord>,
    ) -> Result<std::result::Result<Revision, String>>;
    /// Deletes a tenant with everything it holds: apps, routes, versions,
    /// certificates, tokens; modules no one else uses are collected.
    fn delete_tenant(&self, name: &str) -> Result<Revision>;
    /// What a tenant holds.
    fn usage(&self, tenant: &str) -> Result<Usage>;

    /// Adds a named token to a tenant (the name must be free).
    fn create_token(&self, record: TokenRecord) -> Result<()>;
    /// A tenant's tokens, by name.
    fn tokens(&self, tenant: &str) -> Result<Vec<TokenRecord>>;
    /// Revokes a tenant's token by name: it lets no one in from now on.
    fn revoke_token(&self, tenant: &str, name: &str) -> Result<()>;

    /// Adds a per-node identity (the name must be free). Like tokens, it
    /// leaves the revision alone: nothing nodes serve changes.
    fn create_node_identity(&self, record: NodeIdentityRecord) -> Result<()>;
    /// One node identity, by name.
    fn node_identity(&self, name: &str) -> Result<Option<NodeIdentityRecord>>;
    /// Every node identity, by name.
    fn node_identities(&self) -> Result<Vec<NodeIdentityRecord>>;
    /// Revokes a node identity: its token lets no one in from now on.
    fn revoke_node_identity(&self, name: &str) -> Result<()>;

    /// Publishes nodes' statuses for the other control planes sharing the
    /// store (see [`crate::fleet`]); an entry heard from later than the
    /// one given (another control plane's) is kept. Leaves the revision
    /// alone.
    fn put_node_statuses(&self, statuses: &[outpost_proto::NodeStatus]) -> Result<()>;
    /// Every published node status.
    fn node_statuses(&self) -> Result<Vec<outpost_proto::NodeStatus>>;
    /// Drops the published statuses of the nodes named.
    fn forget_node_statuses(&self, ids: &[String]) -> Result<()>;

    /// Creates an app; its name must be free within the tenant and its
    /// routes free across all tenants.
    fn create_app(&self, record: AppRecord, allowance: &Allowance) -> Result<Revision>;
    /// One app.
    fn app(&self, tenant: &str, name: &str) -> Result<Option<AppRecord>>;
    /// A tenant's apps, by name.
    fn apps(&self, tenant: &str) -> Result<Vec<AppRecord>>;
    /// Every app of every tenant.
    fn all_apps(&self) -> Result<Vec<AppRecord>>;
    /// Deletes an app, its routes and its deployments.
    fn delete_app(&self, tenant: &str, name: &str) -> Result<Revision>;
    /// Replaces an app's routes (all free or already its own).
    fn set_routes(
        &self,
        tenant: &str,
        name: &str,
        routes: Vec<String>,
        allowance: &Allowance,
    ) -> Result<Revision>;
    /// Replaces the hosts an app may call.
    fn set_outbound(&self, tenant: &str, name: &str, hosts: Vec<String>) -> Result<Revision>;
    /// Replaces an app's environment with `env`, whose values are sealed.
    fn set_env(&self, tenant: &str, name: &str, env: BTreeMap<String, String>) -> Result<Revision>;

    /// Changes an app's environment with `change` in one transaction;
    /// `change` may refuse (`Err(reason)`), which stores nothing.
    fn update_env(
        &self,
        tenant: &str,
        name: &str,
        change: &mut Change<'_, StoredEnv>,
    ) -> Result<std::result::Result<Revision, String>>;

    /// Stores a module blob under its digest (idempotent).
    fn put_module(&self, digest: &str, bytes: &[u8]) -> Result<()>;
    /// A module blob.
    fn module(&self, digest: &str) -> Result<Option<Vec<u8>>>;

    /// Stores `bytes` under `digest` and records a deployment of it, made
    /// active, as one change: if it fails, neither the module nor the
    /// version is stored. Versions past `allowance.versions_per_app`
    /// are pruned, oldest inactive first, and modules no version uses
    /// any more are collected, in the same change.
    fn deploy_module(
        &self,
        tenant: &str,
        app: &str,
        digest: &str,
        bytes: &[u8],
        now: u64,
        allowance: &Allowance,
    ) -> Result<(DeploymentRecord, Revision)>;

    /// Records a new deployment of a stored module and makes it active.
    fn deploy(
        &self,
        tenant: &str,
        app: &str,
        digest: &str,
        size: u64,
        now: u64,
        allowance: &Allowance,
    ) -> Result<(DeploymentRecord, Revision)>;
    /// An app's deployments, oldest first.
    fn deployments(&self, tenant: &str, app: &str) -> Result<Vec<DeploymentRecord>>;
    /// Makes an earlier version active again.
    fn rollback(&self, tenant: &str, app: &str, version: u64) -> Result<Revision>;

    /// Stores a certificate for its hostname, replacing the one there.
    fn put_certificate(&self, record: CertRecord) -> Result<Revision>;
    /// Every certificate of every tenant, by hostname.
    fn certificates(&self) -> Result<Vec<CertRecord>>;
    /// Removes a tenant's certificate (not found if it is another's).
    fn delete_certificate(&self, tenant: &str, hostname: &str) -> Result<Revision>;

    // Edge cache
    /// Records a purge of `tenant`'s edge-cache partition as a new
    /// revision (nodes apply it when they reach that revision); keeps the
    /// most recent [`outpost_proto::RECENT_PURGES`] purges.
    fn purge_cache(&self, tenant: &str, purge: outpost_proto::CachePurge) -> Result<Revision>;
    /// The most recent purges, oldest first, and the revision after which
    /// the list is complete.
    fn recent_purges(&self) -> Result<outpost_proto::RecentPurges>;
}

/// Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
