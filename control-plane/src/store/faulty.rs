//! A [`Store`] wrapper that fails writes on demand, for tests of what the
//! API does when the disk fills up or the database breaks.
//!
//! It is a plain public type rather than a `cfg(test)` one because the
//! tests that need it are integration tests (a real server over a real
//! socket), which only see the crate's public API. Nothing in the binary
//! constructs it.
//!
//! The failure happens *instead of* the write, as a full disk does for a
//! sled transaction that cannot be flushed: the wrapped store never sees
//! the failed call. What it proves is therefore what the layers above do
//! with the error (the status code, the JSON body, not announcing a
//! revision) and whether an operation the API performs as several store
//! calls can be left half-applied. Real `ENOSPC` from sled on a small
//! filesystem is exercised separately (`tests/disk_full.rs`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{
    Allowance, AppRecord, CertRecord, Change, DeploymentRecord, NodeIdentityRecord, Result,
    Revision, Store, StoreError, StoredEnv, TenantRecord, TokenRecord, Usage,
};

/// The error a failing write returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `ENOSPC`: no space left on device.
    NoSpace,
    /// `EIO`: any other I/O failure.
    Io,
}

impl Fault {
    fn error(self) -> StoreError {
        let io = match self {
            // 28 is ENOSPC and 5 is EIO on Linux; going through the OS
            // error code exercises the same classification as a real one.
            Fault::NoSpace => std::io::Error::from_raw_os_error(28),
            Fault::Io => std::io::Error::from_raw_os_error(5),
        };
        StoreError::io(&io)
    }
}

/// Wraps a store; after the write budget is spent, every write fails with
/// the chosen [`Fault`] and changes nothing. Reads always pass through.
pub struct FaultyStore<S> {
    inner: S,
    /// Writes still allowed (`None`: unlimited) and the fault after them.
    budget: Mutex<(Option<u64>, Fault)>,
}

impl<S: Store> FaultyStore<S> {
    /// A wrapper that lets every write through until told otherwise.
    pub fn new(inner: S) -> FaultyStore<S> {
        FaultyStore {
            inner,
            budget: Mutex::new((None, Fault::NoSpace)),
        }
    }

    /// Lets `writes` more writes through, then fails the rest with `fault`.
    pub fn fail_after(&self, writes: u64, fault: Fault) {
        *self.budget.lock().unwrap() = (Some(writes), fault);
    }

    /// Lets every write through again (the operator freed space).
    pub fn heal(&self) {
        self.budget.lock().unwrap().0 = None;
    }

    /// Spends one write from the budget, or fails.
    fn write(&self) -> Result<()> {
        let mut budget = self.budget.lock().unwrap();
        match &mut budget.0 {
            None => Ok(()),
            Some(0) => Err(budget.1.error()),
            Some(left) => {
                *left -= 1;
                Ok(())
            }
        }
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn revision(&self) -> Result<Revision> {
        self.inner.revision()
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn create_tenant(&self, record: TenantRecord) -> Result<()> {
        self.write()?;
        self.inner.create_tenant(record)
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>> {
        self.inner.tenants()
    }

    fn tenant(&self, name: &str) -> Result<Option<TenantRecord>> {
        self.inner.tenant(name)
    }

    fn tenant_by_token(&self, token_sha256: &str) -> Result<Option<TenantRecord>> {
        self.inner.tenant_by_token(token_sha256)
    }

    fn update_tenant(
        &self,
        name: &str,
        change: &mut Change<'_, TenantRecord>,
    ) -> Result<std::result::Result<Revision, String>> {
        self.write()?;
        self.inner.update_tenant(name, change)
    }

    fn delete_tenant(&self, name: &str) -> Result<Revision> {
        self.write()?;
        self.inner.delete_tenant(name)
    }

    fn usage(&self, tenant: &str) -> Result<Usage> {
        self.inner.usage(tenant)
    }

    fn create_token(&self, record: TokenRecord) -> Result<()> {
        self.write()?;
        self.inner.create_token(record)
    }

    fn tokens(&self, tenant: &str) -> Result<Vec<TokenRecord>> {
        self.inner.tokens(tenant)
    }

    fn revoke_token(&self, tenant: &str, name: &str) -> Result<()> {
        self.write()?;
        self.inner.revoke_token(tenant, name)
    }

    fn create_node_identity(&self, record: NodeIdentityRecord) -> Result<()> {
        self.write()?;
        self.inner.create_node_identity(record)
    }

    fn node_identity(&self, name: &str) -> Result<Option<NodeIdentityRecord>> {
        self.inner.node_identity(name)
    }

    fn node_identities(&self) -> Result<Vec<NodeIdentityRecord>> {
        self.inner.node_identities()
    }

    fn revoke_node_identity(&self, name: &str) -> Result<()> {
        self.write()?;
        self.inner.revoke_node_identity(name)
    }

    fn put_node_statuses(&self, statuses: &[outpost_proto::NodeStatus]) -> Result<()> {
        self.write()?;
        self.inner.put_node_statuses(statuses)
    }

    fn node_statuses(&self) -> Result<Vec<outpost_proto::NodeStatus>> {
        self.inner.node_statuses()
    }

    fn forget_node_statuses(&self, ids: &[String]) -> Result<()> {
        self.write()?;
        self.inner.forget_node_statuses(ids)
    }

    fn create_app(&self, record: AppRecord, allowance: &Allowance) -> Result<Revision> {
        self.write()?;
        self.inner.create_app(record, allowance)
    }

    fn app(&self, tenant: &str, name: &str) -> Result<Option<AppRecord>> {
        self.inner.app(tenant, name)
    }

    fn apps(&self, tenant: &str) -> Result<Vec<AppRecord>> {
        self.inner.apps(tenant)
    }

    fn all_apps(&self) -> Result<Vec<AppRecord>> {
        self.inner.all_apps()
    }

    fn delete_app(&self, tenant: &str, name: &str) -> Result<Revision> {
        self.write()?;
        self.inner.delete_app(tenant, name)
    }

    fn set_routes(
        &self,
        tenant: &str,
        name: &str,
        routes: Vec<String>,
        allowance: &Allowance,
    ) -> Result<Revision> {
        self.write()?;
        self.inner.set_routes(tenant, name, routes, allowance)
    }

    fn set_outbound(&self, tenant: &str, name: &str, hosts: Vec<String>) -> Result<Revision> {
        self.write()?;
        self.inner.set_outbound(tenant, name, hosts)
    }

    fn set_env(&self, tenant: &str, name: &str, env: BTreeMap<String, String>) -> Result<Revision> {
        self.write()?;
        self.inner.set_env(tenant, name, env)
    }

    fn update_env(
        &self,
        tenant: &str,
        name: &str,
        change: &mut Change<'_, StoredEnv>,
    ) -> Result<std::result::Result<Revision, String>> {
        self.write()?;
        self.inner.update_env(tenant, name, change)
    }

    fn put_module(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        self.write()?;
        self.inner.put_module(digest, bytes)
    }

    fn module(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        self.inner.module(digest)
    }

    fn deploy_module(
        &self,
        tenant: &str,
        app: &str,
        digest: &str,
        bytes: &[u8],
        now: u64,
        allowance: &Allowance,
    ) -> Result<(DeploymentRecord, Revision)> {
        self.write()?;
        self.inner
            .deploy_module(tenant, app, digest, bytes, now, allowance)
    }

    fn deploy(
        &self,
        tenant: &str,
        app: &str,
        digest: &str,
        size: u64,
        now: u64,
        allowance: &Allowance,
    ) -> Result<(DeploymentRecord, Revision)> {
        self.write()?;
        self.inner.deploy(tenant, app, digest, size, now, allowance)
    }

    fn deployments(&self, tenant: &str, app: &str) -> Result<Vec<DeploymentRecord>> {
        self.inner.deployments(tenant, app)
    }

    fn rollback(&self, tenant: &str, app: &str, version: u64) -> Result<Revision> {
        self.write()?;
        self.inner.rollback(tenant, app, version)
    }

    fn put_certificate(&self, record: CertRecord) -> Result<Revision> {
        self.write()?;
        self.inner.put_certificate(record)
    }

    fn certificates(&self) -> Result<Vec<CertRecord>> {
        self.inner.certificates()
    }

    fn delete_certificate(&self, tenant: &str, hostname: &str) -> Result<Revision> {
        self.write()?;
        self.inner.delete_certificate(tenant, hostname)
    }

    fn purge_cache(&self, tenant: &str, purge: outpost_proto::CachePurge) -> Result<Revision> {
        self.write()?;
        self.inner.purge_cache(tenant, purge)
    }

    fn recent_purges(&self) -> Result<outpost_proto::RecentPurges> {
        self.inner.recent_purges()
    }
}
