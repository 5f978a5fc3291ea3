//! [`Store`] over any [`Kv`]: every write is one transaction of the
//! logic in [`super::logic`], reads go straight to the database.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::blobs::ModuleBlobs;
use super::kv::{Kv, Tree, TxError, TxResult, Write, abort};
use super::logic::{
    REVISION, Trees, app_key, collecting_mark, decode, decode_owner, deployment_key,
    deployment_prefix, encode, kept_versions, read_u64, token_name_key,
};
use super::{
    Allowance, AppRecord, CertRecord, Change, DeploymentRecord, NodeIdentityRecord, Result,
    Revision, Store, StoreError, StoredEnv, TenantRecord, TokenRecord, Usage,
};

/// Records one step of a long deletion removes, each read and written
/// (with its reference count, for a version): well inside etcd's 128
/// operations per transaction.
const RECORDS_PER_STEP: usize = 24;

/// Meta key: every purge made after this revision is still in
/// [`Tree::Purges`].
const PURGES_SINCE: &[u8] = b"purges_since";

/// Node statuses written per transaction: each is read and written, and
/// etcd allows 128 operations in one.
const NODE_STATUSES_PER_WRITE: usize = 32;

/// The store's logic over the database `K`; see [`super::SledStore`] and
/// [`super::EtcdStore`].
pub struct KvStore<K: Kv> {
    pub(super) kv: K,
    /// Where module bytes live: `None` in [`Tree::Modules`], in the same
    /// transactions as the rest; otherwise outside the database, with
    /// only their reference counts in it.
    pub(super) blobs: Option<Arc<dyn ModuleBlobs>>,
}

impl<K: Kv> KvStore<K> {
    /// The store over `kv`, migrated.
    pub(super) fn new(kv: K, blobs: Option<Arc<dyn ModuleBlobs>>) -> Result<Self> {
        KvStore { kv, blobs }.migrated()
    }

    /// Runs `f` as one transaction, then deletes the blobs of the modules
    /// it left without a user.
    pub(super) fn write<T>(&self, f: impl Fn(&Trees<'_>) -> TxResult<T>) -> Result<T> {
        let blobs = self.blobs.as_deref();
        let (out, collected) = self.kv.transact(|tx| {
            let trees = Trees::new(tx, blobs);
            let out = f(&trees)?;
            Ok((out, trees.collected.into_inner()))
        })?;
        if let Some(blobs) = blobs {
            for (digest, mark) in collected {
                self.collect(blobs, &digest, &mark);
            }
        }
        Ok(out)
    }

    /// Drops purges older than the most recent
    /// [`outpost_proto::RECENT_PURGES`], after recording the newest
    /// revision dropped.
    fn prune_purges(&self) -> Result<()> {
        let all = self.kv.scan(Tree::Purges, b"")?;
        if all.len() <= outpost_proto::RECENT_PURGES {
            return Ok(());
        }
        let dropped = &all[..all.len() - outpost_proto::RECENT_PURGES];
        let since = read_u64(&dropped[dropped.len() - 1].0);
        self.kv.transact(|tx| {
            let current = tx
                .get(Tree::Meta, PURGES_SINCE)?
                .map_or(0, |v| read_u64(&v));
            if since > current {
                tx.insert(Tree::Meta, PURGES_SINCE, &since.to_be_bytes())?;
            }
            Ok(())
        })?;
        for chunk in dropped.chunks(RECORDS_PER_STEP) {
            let writes: Vec<Write> = chunk
                .iter()
                .map(|(key, _)| Write::Delete(Tree::Purges, key.clone()))
                .collect();
            self.kv.apply(&writes)?;
        }
        Ok(())
    }

    /// Deletes the blob of a module the committed write marked for
    /// collection, then clears the mark unless a deploy took the module
    /// back meanwhile. A crash (or a failed delete) between the commit
    /// and here leaves an orphan blob and a stale mark, which the next
    /// deploy of that digest replaces; never a version without its blob.
    fn collect(&self, blobs: &dyn ModuleBlobs, digest: &str, mark: &[u8]) {
        if let Err(e) = blobs.delete(digest) {
            tracing::warn!(module.digest = digest, error = %e, "could not delete an unused module blob");
            return;
        }
        let cleared = self.kv.transact(|tx| {
            if tx.get(Tree::ModuleRefs, digest.as_bytes())?.as_deref() == Some(mark) {
                tx.remove(Tree::ModuleRefs, digest.as_bytes())?;
            }
            Ok(())
        });
        if let Err(e) = cleared {
            tracing::warn!(module.digest = digest, error = %e, "could not clear a collected module's mark");
        }
    }

    /// Deletes the blob of `digest` if no version uses it, through the
    /// same mark as [`KvStore::collect`], so that a deploy of it racing
    /// with the deletion waits for it and puts the blob back.
    fn collect_if_unused(&self, blobs: &dyn ModuleBlobs, digest: &str) {
        let mark = collecting_mark(super::now());
        let marked = self.kv.transact(|tx| {
            if tx.get(Tree::ModuleRefs, digest.as_bytes())?.is_some() {
                return Ok(false);
            }
            tx.insert(Tree::ModuleRefs, digest.as_bytes(), &mark)?;
            Ok(true)
        });
        match marked {
            Ok(true) => self.collect(blobs, digest, &mark),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(module.digest = digest, error = %e, "could not collect an unused module blob");
            }
        }
    }

    /// Drops an app's versions but the active one, [`RECORDS_PER_STEP`]
    /// per transaction, so that removing the app after fits in one.
    fn shed_versions(&self, tenant: &str, name: &str) -> Result<()> {
        loop {
            let done = self.write(|t| {
                let mut app = match t.app(tenant, name) {
                    Ok(app) => app,
                    // Gone already: nothing to shed.
                    Err(TxError::Abort(StoreError::NotFound(_))) => return Ok(true),
                    Err(e) => return Err(e),
                };
                let old: Vec<u64> = kept_versions(&app)
                    .into_iter()
                    .filter(|v| Some(*v) != app.active_version)
                    .take(RECORDS_PER_STEP)
                    .collect();
                if old.is_empty() {
                    return Ok(true);
                }
                let mut usage = t.usage(tenant)?;
                for v in &old {
                    t.drop_deployment(tenant, name, *v, &mut usage)?;
                }
                app.kept = kept_versions(&app)
                    .into_iter()
                    .filter(|v| !old.contains(v))
                    .collect();
                t.put_usage(tenant, &usage)?;
                t.put_app(&app)?;
                t.bump()?;
                Ok(false)
            })?;
            if done {
                return Ok(());
            }
        }
    }

    /// Decodes every record under `prefix` in `tree`.
    pub(super) fn scan<T: serde::de::DeserializeOwned>(
        &self,
        tree: Tree,
        prefix: &[u8],
    ) -> Result<Vec<T>> {
        self.kv
            .scan(tree, prefix)?
            .into_iter()
            .map(|(_, v)| decode(&v))
            .collect()
    }

    fn record<T: serde::de::DeserializeOwned>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>> {
        self.kv.get(tree, key)?.map(|v| decode(&v)).transpose()
    }
}

impl<K: Kv> Store for KvStore<K> {
    fn shared(&self) -> bool {
        self.kv.shared()
    }

    fn revision_changes(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.kv.changes(Tree::Meta, REVISION)
    }

    fn revision(&self) -> Result<Revision> {
        Ok(self
            .kv
            .get(Tree::Meta, REVISION)?
            .map(|v| read_u64(&v))
            .unwrap_or(0))
    }

    fn create_tenant(&self, record: TenantRecord) -> Result<()> {
        let token = TokenRecord {
            tenant: record.name.clone(),
            name: "default".into(),
            token_sha256: record.token_sha256.clone(),
            created_at: record.created_at,
        };
        self.write(|t| {
            if t.get(Tree::Tenants, &record.name)?.is_some() {
                return abort(StoreError::Exists(format!("tenant {:?}", record.name)));
            }
            t.insert(Tree::Tenants, &record.name, encode(&record))?;
            t.add_token(&token)
        })
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>> {
        self.scan(Tree::Tenants, b"")
    }

    fn tenant(&self, name: &str) -> Result<Option<TenantRecord>> {
        self.record(Tree::Tenants, name.as_bytes())
    }

    fn tenant_by_token(&self, token_sha256: &str) -> Result<Option<TenantRecord>> {
        match self.record::<TokenRecord>(Tree::Tokens, token_sha256.as_bytes())? {
            Some(token) => self.tenant(&token.tenant),
            None => Ok(None),
        }
    }

    fn update_tenant(
        &self,
        name: &str,
        change: &mut Change<'_, TenantRecord>,
    ) -> Result<std::result::Result<Revision, String>> {
        // As in `update_env`: each run of the transaction starts from the
        // stored record.
        let change = std::sync::Mutex::new(change);
        self.write(|t| {
            let mut record = t.tenant(name)?;
            if let Err(reason) = (change.lock().unwrap())(&mut record) {
                return Ok(Err(reason));
            }
            t.insert(Tree::Tenants, name, encode(&record))?;
            Ok(Ok(t.bump()?))
        })
    }

    fn delete_tenant(&self, name: &str) -> Result<Revision> {
        // In steps, each its own transaction, as one would outgrow what
        // etcd takes in a transaction (128 operations by default): the
        // tenant is disabled first, so its hosts answer 403 and nothing
        // more is added for it; then each app goes (old versions in
        // batches), then certificates and tokens in batches, then the
        // tenant. Interrupted, it leaves a disabled tenant holding less,
        // which deleting again finishes. Transactions cannot scan, so each
        // round lists first, and a round runs again until nothing is left.
        let mut revision = None;
        loop {
            let apps: Vec<AppRecord> = self.scan(Tree::Apps, format!("{name}/").as_bytes())?;
            let certs: Vec<String> = self
                .certificates()?
                .into_iter()
                .filter(|c| c.tenant == name)
                .map(|c| c.hostname)
                .collect();
            let tokens = self.tokens(name)?;
            let exists = self.tenant(name)?.is_some();
            if !exists && apps.is_empty() && certs.is_empty() && tokens.is_empty() {
                return revision.ok_or_else(|| StoreError::NotFound(format!("tenant {name:?}")));
            }
            if exists {
                self.write(|t| {
                    let Some(v) = t.get(Tree::Tenants, name)? else {
                        return t.bump();
                    };
                    let mut record: TenantRecord = decode(&v).map_err(TxError::Abort)?;
                    record.disabled = true;
                    t.insert(Tree::Tenants, name, encode(&record))?;
                    t.bump()
                })?;
            }
            for app in &apps {
                self.shed_versions(name, &app.name)?;
                self.write(|t| {
                    if t.get(Tree::Apps, app_key(name, &app.name))?.is_some() {
                        t.remove_app(name, &app.name)?;
                    }
                    t.bump()
                })?;
            }
            for hosts in certs.chunks(RECORDS_PER_STEP) {
                self.write(|t| {
                    for host in hosts {
                        t.remove(Tree::Certificates, host)?;
                    }
                    t.bump()
                })?;
            }
            for tokens in tokens.chunks(RECORDS_PER_STEP) {
                self.write(|t| {
                    for token in tokens {
                        t.remove(Tree::Tokens, &token.token_sha256)?;
                        t.remove(Tree::TokenNames, token_name_key(name, &token.name))?;
                    }
                    Ok(())
                })?;
            }
            revision = Some(self.write(|t| {
                t.remove(Tree::Usage, name)?;
                t.remove(Tree::Tenants, name)?;
                t.bump()
            })?);
        }
    }

    fn usage(&self, tenant: &str) -> Result<Usage> {
        Ok(self
            .record(Tree::Usage, tenant.as_bytes())?
            .unwrap_or_default())
    }

    fn create_token(&self, record: TokenRecord) -> Result<()> {
        self.write(|t| {
            t.tenant(&record.tenant)?;
            t.add_token(&record)
        })
    }

    fn tokens(&self, tenant: &str) -> Result<Vec<TokenRecord>> {
        let mut out = Vec::new();
        for (_, hash) in self
            .kv
            .scan(Tree::TokenNames, format!("{tenant}/").as_bytes())?
        {
            if let Some(token) = self.record(Tree::Tokens, &hash)? {
                out.push(token);
            }
        }
        Ok(out)
    }

    fn revoke_token(&self, tenant: &str, name: &str) -> Result<()> {
        self.write(|t| {
            let Some(hash) = t.remove(Tree::TokenNames, token_name_key(tenant, name))? else {
                return abort(StoreError::NotFound(format!("token {name:?}")));
            };
            t.remove(Tree::Tokens, hash)?;
            Ok(())
        })
    }

    fn create_node_identity(&self, record: NodeIdentityRecord) -> Result<()> {
        self.write(|t| {
            if t.get(Tree::NodeIdentities, &record.name)?.is_some() {
                return abort(StoreError::Exists(format!(
                    "node identity {:?}",
                    record.name
                )));
            }
            t.insert(Tree::NodeIdentities, &record.name, encode(&record))?;
            Ok(())
        })
    }

    fn node_identity(&self, name: &str) -> Result<Option<NodeIdentityRecord>> {
        self.record(Tree::NodeIdentities, name.as_bytes())
    }

    fn node_identities(&self) -> Result<Vec<NodeIdentityRecord>> {
        self.scan(Tree::NodeIdentities, b"")
    }

    fn revoke_node_identity(&self, name: &str) -> Result<()> {
        self.write(|t| {
            if t.remove(Tree::NodeIdentities, name)?.is_none() {
                return abort(StoreError::NotFound(format!("node identity {name:?}")));
            }
            Ok(())
        })
    }

    fn put_node_statuses(&self, statuses: &[outpost_proto::NodeStatus]) -> Result<()> {
        // In small transactions: etcd caps a transaction's operations.
        for chunk in statuses.chunks(NODE_STATUSES_PER_WRITE) {
            self.kv.transact(|tx| {
                for status in chunk {
                    let key = status.id.as_bytes();
                    let newer = tx.get(Tree::NodeStatus, key)?.is_some_and(|stored| {
                        decode::<outpost_proto::NodeStatus>(&stored)
                            .is_ok_and(|s| s.last_contact > status.last_contact)
                    });
                    if !newer {
                        tx.insert(Tree::NodeStatus, key, &encode(status))?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn node_statuses(&self) -> Result<Vec<outpost_proto::NodeStatus>> {
        self.scan(Tree::NodeStatus, b"")
    }

    fn forget_node_statuses(&self, ids: &[String]) -> Result<()> {
        for chunk in ids.chunks(NODE_STATUSES_PER_WRITE) {
            self.kv.transact(|tx| {
                for id in chunk {
                    tx.remove(Tree::NodeStatus, id.as_bytes())?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn create_app(&self, record: AppRecord, allowance: &Allowance) -> Result<Revision> {
        self.write(|t| {
            t.tenant(&record.tenant)?;
            let key = app_key(&record.tenant, &record.name);
            if t.get(Tree::Apps, &key)?.is_some() {
                return abort(StoreError::Exists(format!("app {:?}", record.name)));
            }
            let mut usage = t.usage(&record.tenant)?;
            if usage.apps >= allowance.apps {
                return abort(StoreError::QuotaExceeded {
                    quota: "apps",
                    limit: allowance.apps,
                });
            }
            usage.apps += 1;
            t.put_usage(&record.tenant, &usage)?;
            t.claim_routes(&record.routes, &key, allowance)?;
            t.put_app(&record)?;
            t.bump()
        })
    }

    fn app(&self, tenant: &str, name: &str) -> Result<Option<AppRecord>> {
        self.record(Tree::Apps, app_key(tenant, name).as_bytes())
    }

    fn apps(&self, tenant: &str) -> Result<Vec<AppRecord>> {
        self.scan(Tree::Apps, format!("{tenant}/").as_bytes())
    }

    fn all_apps(&self) -> Result<Vec<AppRecord>> {
        self.scan(Tree::Apps, b"")
    }

    fn delete_app(&self, tenant: &str, name: &str) -> Result<Revision> {
        self.shed_versions(tenant, name)?;
        self.write(|t| {
            t.remove_app(tenant, name)?;
            t.bump()
        })
    }

    fn set_routes(
        &self,
        tenant: &str,
        name: &str,
        routes: Vec<String>,
        allowance: &Allowance,
    ) -> Result<Revision> {
        self.write(|t| {
            let mut app = t.app(tenant, name)?;
            t.release_routes(&app.routes, &app_key(tenant, name))?;
            t.claim_routes(&routes, &app_key(tenant, name), allowance)?;
            app.routes = routes.clone();
            t.put_app(&app)?;
            t.bump()
        })
    }

    fn set_outbound(&self, tenant: &str, name: &str, hosts: Vec<String>) -> Result<Revision> {
        self.write(|t| {
            let mut app = t.app(tenant, name)?;
            app.allow_outbound = hosts.clone();
            t.put_app(&app)?;
            t.bump()
        })
    }

    fn set_env(&self, tenant: &str, name: &str, env: BTreeMap<String, String>) -> Result<Revision> {
        self.write(|t| {
            let mut app = t.app(tenant, name)?;
            app.env = env.clone();
            app.env_sealed = true;
            t.put_app(&app)?;
            t.bump()
        })
    }

    fn update_env(
        &self,
        tenant: &str,
        name: &str,
        change: &mut Change<'_, StoredEnv>,
    ) -> Result<std::result::Result<Revision, String>> {
        // The backend may run the closure again on conflict: each run
        // starts from the stored record, so `change` sees a fresh copy
        // every time.
        let change = std::sync::Mutex::new(change);
        self.write(|t| {
            let mut app = t.app(tenant, name)?;
            let mut env = StoredEnv {
                values: app.env.clone(),
                sealed: app.env_sealed,
            };
            if let Err(reason) = (change.lock().unwrap())(&mut env) {
                return Ok(Err(reason));
            }
            app.env = env.values;
            app.env_sealed = env.sealed;
            t.put_app(&app)?;
            Ok(Ok(t.bump()?))
        })
    }

    fn put_module(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        if let Some(blobs) = &self.blobs {
            return blobs.put(digest, bytes);
        }
        if self.kv.get(Tree::Modules, digest.as_bytes())?.is_some() {
            return Ok(());
        }
        self.kv
            .transact(|tx| tx.insert(Tree::Modules, digest.as_bytes(), bytes))
    }

    fn module(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        match &self.blobs {
            Some(blobs) => blobs.get(digest),
            None => self.kv.get(Tree::Modules, digest.as_bytes()),
        }
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
        if self.blobs.is_none() && self.kv.get(Tree::Modules, digest.as_bytes())?.is_none() {
            return Err(StoreError::NotFound(format!("module {digest}")));
        }
        self.write(|t| {
            t.hold_module(digest, None)?;
            t.new_deployment(tenant, app, digest, size, now, allowance)
        })
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
        // In the database, the blob goes in the same transaction as the
        // version: a failure (a full disk, say) leaves no orphan module
        // behind. Outside it, the blob is written first (and checked again
        // inside, see `hold_module`): a failure after it leaves an orphan
        // blob, never a version without its blob.
        let Some(blobs) = &self.blobs else {
            return self.write(|t| {
                t.hold_module(digest, Some(bytes))?;
                t.new_deployment(tenant, app, digest, bytes.len() as u64, now, allowance)
            });
        };
        blobs.put(digest, bytes)?;
        let out = self.write(|t| {
            t.hold_module(digest, Some(bytes))?;
            t.new_deployment(tenant, app, digest, bytes.len() as u64, now, allowance)
        });
        if out.is_err() {
            // A refused deploy stores nothing, the blob included, unless
            // some version (perhaps another control plane's, just now)
            // uses it.
            self.collect_if_unused(blobs.as_ref(), digest);
        }
        out
    }

    fn deployments(&self, tenant: &str, app: &str) -> Result<Vec<DeploymentRecord>> {
        self.scan(Tree::Deployments, deployment_prefix(tenant, app).as_bytes())
    }

    fn rollback(&self, tenant: &str, app: &str, version: u64) -> Result<Revision> {
        self.write(|t| {
            let mut record = t.app(tenant, app)?;
            if t.get(Tree::Deployments, deployment_key(tenant, app, version))?
                .is_none()
            {
                return abort(StoreError::NotFound(format!(
                    "version {version} of app {app:?}"
                )));
            }
            record.active_version = Some(version);
            t.put_app(&record)?;
            t.bump()
        })
    }

    fn put_certificate(&self, record: CertRecord) -> Result<Revision> {
        self.write(|t| {
            t.tenant(&record.tenant)?;
            let taken = || {
                abort(StoreError::HostTaken {
                    host: record.hostname.clone(),
                })
            };
            // Another tenant's certificate is never replaced, and an exact
            // name's only by the tenant owning that host, checked here in
            // the write's own transaction.
            if let Some(v) = t.get(Tree::Certificates, &record.hostname)? {
                let current: CertRecord = decode(&v).map_err(super::kv::TxError::Abort)?;
                if current.tenant != record.tenant {
                    return taken();
                }
            }
            if !record.hostname.starts_with("*.") {
                let owner = t.get(Tree::Hosts, &record.hostname)?;
                if owner.is_none_or(|v| decode_owner(&v).0 != record.tenant) {
                    return taken();
                }
            }
            t.insert(Tree::Certificates, &record.hostname, encode(&record))?;
            t.bump()
        })
    }

    fn certificates(&self) -> Result<Vec<CertRecord>> {
        self.scan(Tree::Certificates, b"")
    }

    fn purge_cache(&self, tenant: &str, purge: outpost_proto::CachePurge) -> Result<Revision> {
        let revision = self.write(|t| {
            t.tenant(tenant)?;
            let revision = t.bump()?;
            let record = outpost_proto::PurgeRecord {
                revision,
                tenant: tenant.to_string(),
                purge: purge.clone(),
            };
            t.insert(Tree::Purges, revision.to_be_bytes(), encode(&record))?;
            Ok(revision)
        })?;
        // Pruning is housekeeping: the purge stands either way, and the
        // next one prunes what this one could not.
        if let Err(e) = self.prune_purges() {
            tracing::warn!(error = %e, "could not drop old cache purges");
        }
        Ok(revision)
    }

    fn recent_purges(&self) -> Result<outpost_proto::RecentPurges> {
        // The list before `since`: pruning writes `since` before it
        // deletes, so a list read first never looks more complete than it
        // is.
        let list: Vec<outpost_proto::PurgeRecord> = self.scan(Tree::Purges, b"")?;
        let since = self
            .kv
            .get(Tree::Meta, PURGES_SINCE)?
            .map_or(0, |v| read_u64(&v));
        Ok(outpost_proto::RecentPurges {
            since,
            list: list.into_iter().filter(|p| p.revision > since).collect(),
        })
    }

    fn delete_certificate(&self, tenant: &str, hostname: &str) -> Result<Revision> {
        self.write(|t| {
            let not_found = || abort(StoreError::NotFound(format!("certificate for {hostname}")));
            let Some(v) = t.get(Tree::Certificates, hostname)? else {
                return not_found();
            };
            let record: CertRecord = decode(&v).map_err(super::kv::TxError::Abort)?;
            if record.tenant != tenant {
                return not_found();
            }
            t.remove(Tree::Certificates, hostname)?;
            t.bump()
        })
    }
}
