//! The embedded [`Store`]: sled 0.34, one tree per record kind, JSON values,
//! multi-tree transactions, and a flush before every write returns.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Db, Transactional, Tree};

use super::{
    Allowance, AppRecord, CertRecord, Change, DeploymentRecord, NodeIdentityRecord, Result,
    Revision, Store, StoreError, StoredEnv, TenantRecord, TokenRecord, Usage,
};

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<StoreError>>;

/// sled-backed storage in one directory.
pub struct SledStore {
    db: Db,
    tenants: Tree,
    /// Token sha256 -> [`TokenRecord`].
    tokens: Tree,
    /// `tenant/name` -> token sha256.
    token_names: Tree,
    /// Tenant -> [`Usage`].
    usage: Tree,
    /// Module digest -> how many deployment records use it.
    module_refs: Tree,
    apps: Tree,
    routes: Tree,
    /// Host -> the tenant owning it and how many of its routes are on it.
    hosts: Tree,
    deployments: Tree,
    modules: Tree,
    certificates: Tree,
    /// Node name -> [`NodeIdentityRecord`].
    node_identities: Tree,
    meta: Tree,
}

const REVISION: &[u8] = b"revision";
/// Set once the host index covers every route.
const HOSTS_INDEXED: &[u8] = b"hosts_indexed";
/// Set once tokens have names, usage is counted and modules have
/// reference counts.
const USAGE_INDEXED: &[u8] = b"usage_indexed";

/// How long [`SledStore::open`] waits for a lock a store just closed in
/// this process may still hold: sled's flusher thread lets go of the file
/// lock a moment after the last handle is dropped.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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

/// The host of a normalized route (`host` or `host/prefix`).
fn host_of(route: &str) -> &str {
    route.split('/').next().unwrap_or(route)
}

fn encode_owner(tenant: &str, routes: u64) -> Vec<u8> {
    format!("{tenant}\n{routes}").into_bytes()
}

fn decode_owner(bytes: &[u8]) -> (String, u64) {
    let text = String::from_utf8_lossy(bytes);
    match text.rsplit_once('\n') {
        Some((tenant, n)) => (tenant.to_string(), n.parse().unwrap_or(0)),
        None => (text.into_owned(), 0),
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore> {
        let db = open_db(dir)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", dir.display())))?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        SledStore {
            tenants: tree("tenants")?,
            tokens: tree("tokens")?,
            token_names: tree("token_names")?,
            usage: tree("usage")?,
            module_refs: tree("module_refs")?,
            apps: tree("apps")?,
            routes: tree("routes")?,
            hosts: tree("hosts")?,
            deployments: tree("deployments")?,
            modules: tree("modules")?,
            certificates: tree("certificates")?,
            node_identities: tree("node_identities")?,
            meta: tree("meta")?,
            db,
        }
        .with_hosts_indexed()?
        .with_usage_indexed()
    }

    /// Brings a store written before tokens had names, usage was counted
    /// and modules had reference counts up to date, once: every existing
    /// token becomes its tenant's `default`, usage and references are
    /// counted from the records, and modules no deployment uses (left by
    /// deleted apps) are collected.
    fn with_usage_indexed(self) -> Result<SledStore> {
        if self.meta.get(USAGE_INDEXED).map_err(backend)?.is_some() {
            return Ok(self);
        }
        for entry in self.tokens.iter() {
            let (hash, value) = entry.map_err(backend)?;
            if serde_json::from_slice::<TokenRecord>(&value).is_ok() {
                continue;
            }
            let tenant = String::from_utf8_lossy(&value).into_owned();
            let created_at = self.tenant(&tenant)?.map_or(0, |t| t.created_at);
            let record = TokenRecord {
                tenant: tenant.clone(),
                name: "default".into(),
                token_sha256: String::from_utf8_lossy(&hash).into_owned(),
                created_at,
            };
            self.token_names
                .insert(token_name_key(&tenant, "default"), hash.as_ref())
                .map_err(backend)?;
            self.tokens.insert(hash, encode(&record)).map_err(backend)?;
        }
        let mut usage: BTreeMap<String, Usage> = BTreeMap::new();
        let mut refs: BTreeMap<String, u64> = BTreeMap::new();
        for app in scan::<AppRecord>(&self.apps, b"")? {
            usage.entry(app.tenant.clone()).or_default().apps += 1;
            let mut app = app;
            let deployments: Vec<DeploymentRecord> = scan(
                &self.deployments,
                deployment_prefix(&app.tenant, &app.name).as_bytes(),
            )?;
            for d in &deployments {
                usage.entry(app.tenant.clone()).or_default().stored_bytes += d.size;
                *refs.entry(d.digest.clone()).or_default() += 1;
            }
            if app.kept.is_empty() && !deployments.is_empty() {
                app.kept = deployments.iter().map(|d| d.version).collect();
                self.apps
                    .insert(app_key(&app.tenant, &app.name).as_bytes(), encode(&app))
                    .map_err(backend)?;
            }
        }
        for entry in self.hosts.iter() {
            let (_, owner) = entry.map_err(backend)?;
            usage.entry(decode_owner(&owner).0).or_default().hosts += 1;
        }
        for (tenant, u) in &usage {
            self.usage
                .insert(tenant.as_bytes(), encode(u))
                .map_err(backend)?;
        }
        for (digest, n) in &refs {
            self.module_refs
                .insert(digest.as_bytes(), &n.to_be_bytes())
                .map_err(backend)?;
        }
        let mut collected = 0u64;
        for key in self.modules.iter().keys() {
            let key = key.map_err(backend)?;
            if !refs.contains_key(String::from_utf8_lossy(&key).as_ref()) {
                self.modules.remove(&key).map_err(backend)?;
                collected += 1;
            }
        }
        if collected > 0 {
            tracing::info!(collected, "removed modules no deployment uses");
        }
        self.meta.insert(USAGE_INDEXED, b"1").map_err(backend)?;
        self.flush()?;
        Ok(self)
    }

    /// Builds the host index of a store written before hosts had owners,
    /// once. Two tenants on one host there is a conflict the operator must
    /// settle: both keep their routes (nothing is dropped), the host goes
    /// to the tenant first in key order, and every start reports it.
    fn with_hosts_indexed(self) -> Result<SledStore> {
        let mut owners: BTreeMap<String, (String, u64)> = BTreeMap::new();
        let mut conflicts: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for entry in self.routes.iter() {
            let (route, owner) = entry.map_err(backend)?;
            let route = String::from_utf8_lossy(&route).into_owned();
            let owner = String::from_utf8_lossy(&owner).into_owned();
            let tenant = owner.split_once('/').map_or(owner.as_str(), |(t, _)| t);
            let host = host_of(&route).to_string();
            match owners.get_mut(&host) {
                Some((t, n)) if t == tenant => *n += 1,
                Some((t, _)) => {
                    let both = conflicts.entry(host).or_default();
                    both.insert(t.clone());
                    both.insert(tenant.to_string());
                }
                None => {
                    owners.insert(host, (tenant.to_string(), 1));
                }
            }
        }
        for (host, tenants) in &conflicts {
            tracing::error!(
                %host,
                tenants = ?tenants,
                "several tenants route this host (written before hosts had one owner): \
                 all keep their routes; only the first may add more; move the others' routes"
            );
        }
        if self.meta.get(HOSTS_INDEXED).map_err(backend)?.is_none() {
            for (host, (tenant, n)) in owners {
                self.hosts
                    .insert(host.as_bytes(), encode_owner(&tenant, n))
                    .map_err(backend)?;
            }
            self.meta.insert(HOSTS_INDEXED, b"1").map_err(backend)?;
            self.flush()?;
        }
        Ok(self)
    }

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    /// Runs a transaction over every tree, then flushes.
    fn write<T>(&self, f: impl Fn(&Trees<'_>) -> TxResult<T>) -> Result<T> {
        let out = (
            &self.apps,
            &self.routes,
            &self.hosts,
            &self.deployments,
            &self.meta,
            &self.tenants,
            &self.certificates,
            &self.modules,
            &self.usage,
            &self.module_refs,
            &self.tokens,
            &self.token_names,
            &self.node_identities,
        )
            .transaction(
                |(
                    apps,
                    routes,
                    hosts,
                    deployments,
                    meta,
                    tenants,
                    certificates,
                    modules,
                    usage,
                    module_refs,
                    tokens,
                    token_names,
                    node_identities,
                )| {
                    f(&Trees {
                        apps,
                        routes,
                        hosts,
                        deployments,
                        meta,
                        tenants,
                        certificates,
                        modules,
                        usage,
                        module_refs,
                        tokens,
                        token_names,
                        node_identities,
                    })
                },
            )
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => backend(e),
            })?;
        self.flush()?;
        Ok(out)
    }
}

/// The trees one transaction sees.
struct Trees<'a> {
    apps: &'a TransactionalTree,
    routes: &'a TransactionalTree,
    hosts: &'a TransactionalTree,
    deployments: &'a TransactionalTree,
    meta: &'a TransactionalTree,
    tenants: &'a TransactionalTree,
    certificates: &'a TransactionalTree,
    modules: &'a TransactionalTree,
    usage: &'a TransactionalTree,
    module_refs: &'a TransactionalTree,
    tokens: &'a TransactionalTree,
    token_names: &'a TransactionalTree,
    node_identities: &'a TransactionalTree,
}

impl Trees<'_> {
    fn bump(&self) -> TxResult<Revision> {
        let current = self.meta.get(REVISION)?.map(|v| read_u64(&v)).unwrap_or(0);
        let next = current + 1;
        self.meta.insert(REVISION, &next.to_be_bytes())?;
        Ok(next)
    }

    fn tenant(&self, name: &str) -> TxResult<TenantRecord> {
        match self.tenants.get(name.as_bytes())? {
            Some(v) => decode(&v).map_err(ConflictableTransactionError::Abort),
            None => abort(StoreError::NotFound(format!("tenant {name:?}"))),
        }
    }

    /// Stores a token under its hash and its name; the name must be free.
    fn add_token(&self, token: &TokenRecord) -> TxResult<()> {
        let name_key = token_name_key(&token.tenant, &token.name);
        if self.token_names.get(&name_key)?.is_some() {
            return abort(StoreError::Exists(format!("token {:?}", token.name)));
        }
        self.token_names
            .insert(name_key, token.token_sha256.as_bytes())?;
        self.tokens
            .insert(token.token_sha256.as_bytes(), encode(token))?;
        Ok(())
    }

    fn usage(&self, tenant: &str) -> TxResult<Usage> {
        match self.usage.get(tenant.as_bytes())? {
            Some(v) => decode(&v).map_err(ConflictableTransactionError::Abort),
            None => Ok(Usage::default()),
        }
    }

    fn put_usage(&self, tenant: &str, usage: &Usage) -> TxResult<()> {
        self.usage.insert(tenant.as_bytes(), encode(usage))?;
        Ok(())
    }

    fn app(&self, tenant: &str, name: &str) -> TxResult<AppRecord> {
        let key = app_key(tenant, name);
        match self.apps.get(key.as_bytes())? {
            Some(v) => decode(&v).map_err(ConflictableTransactionError::Abort),
            None => abort(StoreError::NotFound(format!("app {name:?}"))),
        }
    }

    fn put_app(&self, app: &AppRecord) -> TxResult<()> {
        let key = app_key(&app.tenant, &app.name);
        self.apps.insert(key.as_bytes(), encode(app))?;
        Ok(())
    }

    /// Claims `routes` for `owner` (`tenant/app`), refusing any whose host
    /// another tenant routes, or that another app of the tenant serves,
    /// or that takes the tenant past its hosts quota. Host and route are
    /// checked and claimed in this one transaction, so two control planes
    /// or requests racing for one host cannot both win.
    fn claim_routes(&self, routes: &[String], owner: &str, allowance: &Allowance) -> TxResult<()> {
        let tenant = owner.split_once('/').map_or(owner, |(t, _)| t);
        let mut usage = self.usage(tenant)?;
        for route in routes {
            let host = host_of(route);
            let held = self.hosts.get(host.as_bytes())?.map(|v| decode_owner(&v));
            let count = match held {
                Some((other, _)) if other != tenant => {
                    return abort(StoreError::HostTaken {
                        host: host.to_string(),
                    });
                }
                Some((_, n)) => n + 1,
                None => {
                    usage.hosts += 1;
                    1
                }
            };
            if let Some(current) = self.routes.get(route.as_bytes())?
                && current.as_ref() != owner.as_bytes()
            {
                return abort(StoreError::RouteTaken {
                    route: route.clone(),
                    owner: String::from_utf8_lossy(&current).into_owned(),
                });
            }
            self.hosts
                .insert(host.as_bytes(), encode_owner(tenant, count))?;
            self.routes.insert(route.as_bytes(), owner.as_bytes())?;
        }
        if usage.hosts > allowance.hosts {
            return abort(StoreError::QuotaExceeded {
                quota: "hosts",
                limit: allowance.hosts,
            });
        }
        self.put_usage(tenant, &usage)
    }

    /// Records version `versions + 1` of `app` for `digest` and makes it
    /// active, pruning the oldest inactive versions past the allowance.
    fn new_deployment(
        &self,
        tenant: &str,
        app: &str,
        digest: &str,
        size: u64,
        now: u64,
        allowance: &Allowance,
    ) -> TxResult<(DeploymentRecord, Revision)> {
        let mut record = self.app(tenant, app)?;
        let mut usage = self.usage(tenant)?;
        record.kept = kept_versions(&record);
        record.versions += 1;
        record.active_version = Some(record.versions);
        record.kept.push(record.versions);
        let deployment = DeploymentRecord {
            version: record.versions,
            digest: digest.to_string(),
            size,
            created_at: now,
        };
        self.deployments.insert(
            deployment_key(tenant, app, deployment.version),
            encode(&deployment),
        )?;
        // Counted before pruning: an old version of the same module going
        // must not take the module with it.
        let refs = self
            .module_refs
            .get(digest.as_bytes())?
            .map_or(0, |v| read_u64(&v));
        self.module_refs
            .insert(digest.as_bytes(), &(refs + 1).to_be_bytes())?;
        usage.stored_bytes += size;
        while record.kept.len() as u64 > allowance.versions_per_app.max(1) {
            let Some(at) = record
                .kept
                .iter()
                .position(|v| Some(*v) != record.active_version)
            else {
                break;
            };
            let old = record.kept.remove(at);
            self.drop_deployment(tenant, app, old, &mut usage)?;
        }
        if usage.stored_bytes > allowance.stored_bytes {
            return abort(StoreError::QuotaExceeded {
                quota: "stored_mib",
                limit: allowance.stored_bytes / (1024 * 1024),
            });
        }
        self.put_app(&record)?;
        self.put_usage(tenant, &usage)?;
        Ok((deployment, self.bump()?))
    }

    /// Removes one version of an app, counting its bytes off `usage` and
    /// collecting its module once no version of any app uses it.
    fn drop_deployment(
        &self,
        tenant: &str,
        app: &str,
        version: u64,
        usage: &mut Usage,
    ) -> TxResult<()> {
        let Some(v) = self
            .deployments
            .remove(deployment_key(tenant, app, version))?
        else {
            return Ok(());
        };
        let d: DeploymentRecord = decode(&v).map_err(ConflictableTransactionError::Abort)?;
        usage.stored_bytes = usage.stored_bytes.saturating_sub(d.size);
        let refs = self
            .module_refs
            .get(d.digest.as_bytes())?
            .map_or(0, |v| read_u64(&v));
        if refs <= 1 {
            self.module_refs.remove(d.digest.as_bytes())?;
            self.modules.remove(d.digest.as_bytes())?;
        } else {
            self.module_refs
                .insert(d.digest.as_bytes(), &(refs - 1).to_be_bytes())?;
        }
        Ok(())
    }

    /// Deletes an app with its routes and versions.
    fn remove_app(&self, tenant: &str, name: &str) -> TxResult<()> {
        let app = self.app(tenant, name)?;
        self.release_routes(&app.routes, &app_key(tenant, name))?;
        let mut usage = self.usage(tenant)?;
        for v in kept_versions(&app) {
            self.drop_deployment(tenant, name, v, &mut usage)?;
        }
        usage.apps = usage.apps.saturating_sub(1);
        self.put_usage(tenant, &usage)?;
        self.apps.remove(app_key(tenant, name).as_bytes())?;
        Ok(())
    }

    /// Releases `routes` of `owner` (`tenant/app`); a host is free again
    /// once none of the tenant's routes is on it.
    fn release_routes(&self, routes: &[String], owner: &str) -> TxResult<()> {
        let tenant = owner.split_once('/').map_or(owner, |(t, _)| t);
        let mut usage = self.usage(tenant)?;
        for route in routes {
            self.routes.remove(route.as_bytes())?;
            let host = host_of(route);
            // A legacy co-tenant's route (see `with_hosts_indexed`) was
            // never counted: only the owner's releases count down.
            if let Some((holder, n)) = self.hosts.get(host.as_bytes())?.map(|v| decode_owner(&v))
                && holder == tenant
            {
                if n <= 1 {
                    self.hosts.remove(host.as_bytes())?;
                    usage.hosts = usage.hosts.saturating_sub(1);
                } else {
                    self.hosts
                        .insert(host.as_bytes(), encode_owner(tenant, n - 1))?;
                }
            }
        }
        self.put_usage(tenant, &usage)
    }
}

/// The versions an app still has: `kept`, or every one for a record
/// written before pruning.
fn kept_versions(app: &AppRecord) -> Vec<u64> {
    if app.kept.is_empty() {
        (1..=app.versions).collect()
    } else {
        app.kept.clone()
    }
}

fn token_name_key(tenant: &str, name: &str) -> Vec<u8> {
    format!("{tenant}/{name}").into_bytes()
}

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// A database error as the API tells it: a full disk apart from the rest.
fn backend(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(ref io) => StoreError::io(io),
        other => StoreError::Backend(other.to_string()),
    }
}

fn app_key(tenant: &str, name: &str) -> String {
    outpost_proto::app_key(tenant, name)
}

fn deployment_prefix(tenant: &str, app: &str) -> String {
    format!("{tenant}/{app}/")
}

fn deployment_key(tenant: &str, app: &str, version: u64) -> Vec<u8> {
    let mut key = deployment_prefix(tenant, app).into_bytes();
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Backend(format!("corrupt record: {e}")))
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[8 - n..].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(buf)
}

fn scan<T: DeserializeOwned>(tree: &Tree, prefix: &[u8]) -> Result<Vec<T>> {
    tree.scan_prefix(prefix)
        .values()
        .map(|v| decode(&v.map_err(backend)?))
        .collect()
}

impl Store for SledStore {
    fn revision(&self) -> Result<Revision> {
        Ok(self
            .meta
            .get(REVISION)
            .map_err(backend)?
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
            if t.tenants.get(record.name.as_bytes())?.is_some() {
                return abort(StoreError::Exists(format!("tenant {:?}", record.name)));
            }
            t.tenants.insert(record.name.as_bytes(), encode(&record))?;
            t.add_token(&token)
        })
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>> {
        scan(&self.tenants, b"")
    }

    fn tenant(&self, name: &str) -> Result<Option<TenantRecord>> {
        self.tenants
            .get(name.as_bytes())
            .map_err(backend)?
            .map(|v| decode(&v))
            .transpose()
    }

    fn tenant_by_token(&self, token_sha256: &str) -> Result<Option<TenantRecord>> {
        match self.tokens.get(token_sha256.as_bytes()).map_err(backend)? {
            Some(v) => self.tenant(&decode::<TokenRecord>(&v)?.tenant),
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
            t.tenants.insert(name.as_bytes(), encode(&record))?;
            Ok(Ok(t.bump()?))
        })
    }

    fn delete_tenant(&self, name: &str) -> Result<Revision> {
        // sled transactions cannot scan, so what the tenant holds is
        // listed first. Apps or certificates added between the listing and
        // the transaction are caught by the second round: once the tenant
        // record is gone, nothing more can be added for it.
        let mut revision = None;
        loop {
            let apps: Vec<AppRecord> = scan(&self.apps, format!("{name}/").as_bytes())?;
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
            revision = Some(self.write(|t| {
                for app in &apps {
                    if t.apps.get(app_key(name, &app.name).as_bytes())?.is_some() {
                        t.remove_app(name, &app.name)?;
                    }
                }
                for host in &certs {
                    t.certificates.remove(host.as_bytes())?;
                }
                for token in &tokens {
                    t.tokens.remove(token.token_sha256.as_bytes())?;
                    t.token_names.remove(token_name_key(name, &token.name))?;
                }
                t.usage.remove(name.as_bytes())?;
                t.tenants.remove(name.as_bytes())?;
                t.bump()
            })?);
        }
    }

    fn usage(&self, tenant: &str) -> Result<Usage> {
        self.usage
            .get(tenant.as_bytes())
            .map_err(backend)?
            .map_or(Ok(Usage::default()), |v| decode(&v))
    }

    fn create_token(&self, record: TokenRecord) -> Result<()> {
        self.write(|t| {
            t.tenant(&record.tenant)?;
            t.add_token(&record)
        })
    }

    fn tokens(&self, tenant: &str) -> Result<Vec<TokenRecord>> {
        let mut out = Vec::new();
        for entry in self
            .token_names
            .scan_prefix(format!("{tenant}/").as_bytes())
        {
            let (_, hash) = entry.map_err(backend)?;
            if let Some(v) = self.tokens.get(&hash).map_err(backend)? {
                out.push(decode(&v)?);
            }
        }
        Ok(out)
    }

    fn revoke_token(&self, tenant: &str, name: &str) -> Result<()> {
        self.write(|t| {
            let Some(hash) = t.token_names.remove(token_name_key(tenant, name))? else {
                return abort(StoreError::NotFound(format!("token {name:?}")));
            };
            t.tokens.remove(hash)?;
            Ok(())
        })
    }

    fn create_node_identity(&self, record: NodeIdentityRecord) -> Result<()> {
        self.write(|t| {
            if t.node_identities.get(record.name.as_bytes())?.is_some() {
                return abort(StoreError::Exists(format!(
                    "node identity {:?}",
                    record.name
                )));
            }
            t.node_identities
                .insert(record.name.as_bytes(), encode(&record))?;
            Ok(())
        })
    }

    fn node_identity(&self, name: &str) -> Result<Option<NodeIdentityRecord>> {
        self.node_identities
            .get(name.as_bytes())
            .map_err(backend)?
            .map(|v| decode(&v))
            .transpose()
    }

    fn node_identities(&self) -> Result<Vec<NodeIdentityRecord>> {
        scan(&self.node_identities, b"")
    }

    fn revoke_node_identity(&self, name: &str) -> Result<()> {
        self.write(|t| {
            if t.node_identities.remove(name.as_bytes())?.is_none() {
                return abort(StoreError::NotFound(format!("node identity {name:?}")));
            }
            Ok(())
        })
    }

    fn create_app(&self, record: AppRecord, allowance: &Allowance) -> Result<Revision> {
        self.write(|t| {
            t.tenant(&record.tenant)?;
            let key = app_key(&record.tenant, &record.name);
            if t.apps.get(key.as_bytes())?.is_some() {
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
        self.apps
            .get(app_key(tenant, name).as_bytes())
            .map_err(backend)?
            .map(|v| decode(&v))
            .transpose()
    }

    fn apps(&self, tenant: &str) -> Result<Vec<AppRecord>> {
        scan(&self.apps, format!("{tenant}/").as_bytes())
    }

    fn all_apps(&self) -> Result<Vec<AppRecord>> {
        scan(&self.apps, b"")
    }

    fn delete_app(&self, tenant: &str, name: &str) -> Result<Revision> {
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
        // sled may run the closure again on conflict: each run starts from
        // the stored record, so `change` sees a fresh copy every time.
        let change = std::sync::Mutex::new(change);
        let out = self.write(|t| {
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
        })?;
        Ok(out)
    }

    fn put_module(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        if self
            .modules
            .contains_key(digest.as_bytes())
            .map_err(backend)?
        {
            return Ok(());
        }
        self.modules
            .insert(digest.as_bytes(), bytes)
            .map_err(backend)?;
        self.flush()
    }

    fn module(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .modules
            .get(digest.as_bytes())
            .map_err(backend)?
            .map(|v| v.to_vec()))
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
        if !self
            .modules
            .contains_key(digest.as_bytes())
            .map_err(backend)?
        {
            return Err(StoreError::NotFound(format!("module {digest}")));
        }
        self.write(|t| t.new_deployment(tenant, app, digest, size, now, allowance))
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
        // The blob goes in the same transaction as the version: a failure
        // (a full disk, say) leaves no orphan module behind.
        self.write(|t| {
            if t.modules.get(digest.as_bytes())?.is_none() {
                t.modules.insert(digest.as_bytes(), bytes)?;
            }
            t.new_deployment(tenant, app, digest, bytes.len() as u64, now, allowance)
        })
    }

    fn deployments(&self, tenant: &str, app: &str) -> Result<Vec<DeploymentRecord>> {
        scan(&self.deployments, deployment_prefix(tenant, app).as_bytes())
    }

    fn rollback(&self, tenant: &str, app: &str, version: u64) -> Result<Revision> {
        self.write(|t| {
            let mut record = t.app(tenant, app)?;
            if t.deployments
                .get(deployment_key(tenant, app, version))?
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
            if let Some(v) = t.certificates.get(record.hostname.as_bytes())? {
                let current: CertRecord =
                    decode(&v).map_err(ConflictableTransactionError::Abort)?;
                if current.tenant != record.tenant {
                    return taken();
                }
            }
            if !record.hostname.starts_with("*.") {
                let owner = t.hosts.get(record.hostname.as_bytes())?;
                if owner.is_none_or(|v| decode_owner(&v).0 != record.tenant) {
                    return taken();
                }
            }
            t.certificates
                .insert(record.hostname.as_bytes(), encode(&record))?;
            t.bump()
        })
    }

    fn certificates(&self) -> Result<Vec<CertRecord>> {
        scan(&self.certificates, b"")
    }

    fn delete_certificate(&self, tenant: &str, hostname: &str) -> Result<Revision> {
        self.write(|t| {
            let not_found = || abort(StoreError::NotFound(format!("certificate for {hostname}")));
            let Some(v) = t.certificates.get(hostname.as_bytes())? else {
                return not_found();
            };
            let record: CertRecord = decode(&v).map_err(ConflictableTransactionError::Abort)?;
            if record.tenant != tenant {
                return not_found();
            }
            t.certificates.remove(hostname.as_bytes())?;
            t.bump()
        })
    }
}

#[cfg(test)]
mod tests;
