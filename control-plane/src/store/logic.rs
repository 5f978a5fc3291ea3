//! What each write does inside its transaction, written once against
//! [`Tx`] so sled and etcd run the very same checks: route and host
//! ownership, quotas, token names, version pruning and module reference
//! counts.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::blobs::ModuleBlobs;
use super::kv::{Tree, Tx, TxError, TxResult, abort};
use super::{
    Allowance, AppRecord, DeploymentRecord, Result, Revision, StoreError, TokenRecord, Usage,
};

pub(super) const REVISION: &[u8] = b"revision";
/// Set once the host index covers every route.
pub(super) const HOSTS_INDEXED: &[u8] = b"hosts_indexed";
/// Set once tokens have names, usage is counted and modules have
/// reference counts.
pub(super) const USAGE_INDEXED: &[u8] = b"usage_indexed";

/// How long a module marked for collection blocks a deploy of the same
/// digest (see [`Trees::hold_module`]). Past it the collector is presumed
/// dead and the deploy puts the blob back itself.
pub(super) const COLLECTING_STALE_SECS: u64 = 60;

/// The trees one run of a transaction sees, and what it leaves to do
/// once it commits.
pub(super) struct Trees<'a> {
    pub(super) tx: &'a dyn Tx,
    /// Where module bytes live when not in [`Tree::Modules`].
    pub(super) blobs: Option<&'a dyn ModuleBlobs>,
    /// Digests this run marked for collection: their blobs are deleted
    /// after the commit (external blobs only).
    pub(super) collected: RefCell<Vec<(String, Vec<u8>)>>,
}

impl<'a> Trees<'a> {
    pub(super) fn new(tx: &'a dyn Tx, blobs: Option<&'a dyn ModuleBlobs>) -> Trees<'a> {
        Trees {
            tx,
            blobs,
            collected: RefCell::new(Vec::new()),
        }
    }

    pub(super) fn get(&self, tree: Tree, key: impl AsRef<[u8]>) -> TxResult<Option<Vec<u8>>> {
        self.tx.get(tree, key.as_ref())
    }

    pub(super) fn insert(
        &self,
        tree: Tree,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> TxResult<()> {
        self.tx.insert(tree, key.as_ref(), value.as_ref())
    }

    pub(super) fn remove(&self, tree: Tree, key: impl AsRef<[u8]>) -> TxResult<Option<Vec<u8>>> {
        self.tx.remove(tree, key.as_ref())
    }

    pub(super) fn bump(&self) -> TxResult<Revision> {
        let current = self
            .get(Tree::Meta, REVISION)?
            .map(|v| read_u64(&v))
            .unwrap_or(0);
        let next = current + 1;
        self.insert(Tree::Meta, REVISION, next.to_be_bytes())?;
        Ok(next)
    }

    pub(super) fn tenant(&self, name: &str) -> TxResult<super::TenantRecord> {
        match self.get(Tree::Tenants, name)? {
            Some(v) => decode(&v).map_err(TxError::Abort),
            None => abort(StoreError::NotFound(format!("tenant {name:?}"))),
        }
    }

    /// Stores a token under its hash and its name; the name must be free.
    pub(super) fn add_token(&self, token: &TokenRecord) -> TxResult<()> {
        let name_key = token_name_key(&token.tenant, &token.name);
        if self.get(Tree::TokenNames, &name_key)?.is_some() {
            return abort(StoreError::Exists(format!("token {:?}", token.name)));
        }
        self.insert(Tree::TokenNames, name_key, &token.token_sha256)?;
        self.insert(Tree::Tokens, &token.token_sha256, encode(token))?;
        Ok(())
    }

    pub(super) fn usage(&self, tenant: &str) -> TxResult<Usage> {
        match self.get(Tree::Usage, tenant)? {
            Some(v) => decode(&v).map_err(TxError::Abort),
            None => Ok(Usage::default()),
        }
    }

    pub(super) fn put_usage(&self, tenant: &str, usage: &Usage) -> TxResult<()> {
        self.insert(Tree::Usage, tenant, encode(usage))
    }

    pub(super) fn app(&self, tenant: &str, name: &str) -> TxResult<AppRecord> {
        match self.get(Tree::Apps, app_key(tenant, name))? {
            Some(v) => decode(&v).map_err(TxError::Abort),
            None => abort(StoreError::NotFound(format!("app {name:?}"))),
        }
    }

    pub(super) fn put_app(&self, app: &AppRecord) -> TxResult<()> {
        self.insert(Tree::Apps, app_key(&app.tenant, &app.name), encode(app))
    }

    /// Claims `routes` for `owner` (`tenant/app`), refusing any whose host
    /// another tenant routes, or that another app of the tenant serves,
    /// or that takes the tenant past its hosts quota. Host and route are
    /// checked and claimed in this one transaction, so two control planes
    /// or requests racing for one host cannot both win.
    pub(super) fn claim_routes(
        &self,
        routes: &[String],
        owner: &str,
        allowance: &Allowance,
    ) -> TxResult<()> {
        let tenant = owner.split_once('/').map_or(owner, |(t, _)| t);
        let mut usage = self.usage(tenant)?;
        for route in routes {
            let host = host_of(route);
            let held = self.get(Tree::Hosts, host)?.map(|v| decode_owner(&v));
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
            if let Some(current) = self.get(Tree::Routes, route)?
                && current != owner.as_bytes()
            {
                return abort(StoreError::RouteTaken {
                    route: route.clone(),
                    owner: String::from_utf8_lossy(&current).into_owned(),
                });
            }
            self.insert(Tree::Hosts, host, encode_owner(tenant, count))?;
            self.insert(Tree::Routes, route, owner)?;
        }
        if usage.hosts > allowance.hosts {
            return abort(StoreError::QuotaExceeded {
                quota: "hosts",
                limit: allowance.hosts,
            });
        }
        self.put_usage(tenant, &usage)
    }

    /// Makes sure the module a new version will use is stored, before the
    /// version is recorded. In-database modules: `bytes` are inserted in
    /// this transaction, or (no bytes) the module must already be there.
    ///
    /// External blobs: a digest some version uses has its blob. One no
    /// version uses may be in the middle of being collected by another
    /// writer, whose delete follows its commit; so the blob is put (or,
    /// with no bytes, looked for) here, after this transaction has read
    /// the reference count, and a digest marked as being collected makes
    /// this transaction wait and run again. The collector's mark and this
    /// write's new count are on the same key, so one of the two commits
    /// fails and reruns: a version never ends up without its blob.
    pub(super) fn hold_module(&self, digest: &str, bytes: Option<&[u8]>) -> TxResult<()> {
        let Some(blobs) = self.blobs else {
            if let Some(bytes) = bytes
                && self.get(Tree::Modules, digest)?.is_none()
            {
                self.insert(Tree::Modules, digest, bytes)?;
            }
            return Ok(());
        };
        if let Some(v) = self.get(Tree::ModuleRefs, digest)? {
            if read_u64(&v) > 0 {
                return Ok(());
            }
            let since = collecting_since(&v);
            if super::now().saturating_sub(since) < COLLECTING_STALE_SECS {
                return Err(TxError::Conflict);
            }
        }
        match bytes {
            Some(bytes) => blobs.put(digest, bytes).map_err(TxError::Backend),
            None => match blobs.get(digest).map_err(TxError::Backend)? {
                Some(_) => Ok(()),
                None => abort(StoreError::NotFound(format!("module {digest}"))),
            },
        }
    }

    /// Records version `versions + 1` of `app` for `digest` and makes it
    /// active, pruning the oldest inactive versions past the allowance.
    pub(super) fn new_deployment(
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
        self.insert(
            Tree::Deployments,
            deployment_key(tenant, app, deployment.version),
            encode(&deployment),
        )?;
        // Counted before pruning: an old version of the same module going
        // must not take the module with it.
        let refs = self
            .get(Tree::ModuleRefs, digest)?
            .map_or(0, |v| read_u64(&v));
        self.insert(Tree::ModuleRefs, digest, (refs + 1).to_be_bytes())?;
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
    pub(super) fn drop_deployment(
        &self,
        tenant: &str,
        app: &str,
        version: u64,
        usage: &mut Usage,
    ) -> TxResult<()> {
        let Some(v) = self.remove(Tree::Deployments, deployment_key(tenant, app, version))? else {
            return Ok(());
        };
        let d: DeploymentRecord = decode(&v).map_err(TxError::Abort)?;
        usage.stored_bytes = usage.stored_bytes.saturating_sub(d.size);
        let refs = self
            .get(Tree::ModuleRefs, &d.digest)?
            .map_or(0, |v| read_u64(&v));
        if refs > 1 {
            return self.insert(Tree::ModuleRefs, &d.digest, (refs - 1).to_be_bytes());
        }
        if self.blobs.is_some() {
            // The blob cannot go in this transaction: the count stays as
            // a mark until the writer deletes it after the commit.
            let mark = collecting_mark(super::now());
            self.insert(Tree::ModuleRefs, &d.digest, &mark)?;
            self.collected.borrow_mut().push((d.digest, mark));
        } else {
            self.remove(Tree::ModuleRefs, &d.digest)?;
            self.remove(Tree::Modules, &d.digest)?;
        }
        Ok(())
    }

    /// Deletes an app with its routes and versions.
    pub(super) fn remove_app(&self, tenant: &str, name: &str) -> TxResult<()> {
        let app = self.app(tenant, name)?;
        self.release_routes(&app.routes, &app_key(tenant, name))?;
        let mut usage = self.usage(tenant)?;
        for v in kept_versions(&app) {
            self.drop_deployment(tenant, name, v, &mut usage)?;
        }
        usage.apps = usage.apps.saturating_sub(1);
        self.put_usage(tenant, &usage)?;
        self.remove(Tree::Apps, app_key(tenant, name))?;
        Ok(())
    }

    /// Releases `routes` of `owner` (`tenant/app`); a host is free again
    /// once none of the tenant's routes is on it.
    pub(super) fn release_routes(&self, routes: &[String], owner: &str) -> TxResult<()> {
        let tenant = owner.split_once('/').map_or(owner, |(t, _)| t);
        let mut usage = self.usage(tenant)?;
        for route in routes {
            self.remove(Tree::Routes, route)?;
            let host = host_of(route);
            // A legacy co-tenant's route (see `with_hosts_indexed`) was
            // never counted: only the owner's releases count down.
            if let Some((holder, n)) = self.get(Tree::Hosts, host)?.map(|v| decode_owner(&v))
                && holder == tenant
            {
                if n <= 1 {
                    self.remove(Tree::Hosts, host)?;
                    usage.hosts = usage.hosts.saturating_sub(1);
                } else {
                    self.insert(Tree::Hosts, host, encode_owner(tenant, n - 1))?;
                }
            }
        }
        self.put_usage(tenant, &usage)
    }
}

/// A module reference count of zero that says since when the module is
/// being collected (Unix seconds); [`read_u64`] reads it as 0.
pub(super) fn collecting_mark(now: u64) -> Vec<u8> {
    let mut mark = 0u64.to_be_bytes().to_vec();
    mark.extend_from_slice(&now.to_be_bytes());
    mark
}

fn collecting_since(value: &[u8]) -> u64 {
    value.get(8..).map_or(0, read_u64)
}

/// The versions an app still has: `kept`, or every one for a record
/// written before pruning.
pub(super) fn kept_versions(app: &AppRecord) -> Vec<u64> {
    if app.kept.is_empty() {
        (1..=app.versions).collect()
    } else {
        app.kept.clone()
    }
}

/// The host of a normalized route (`host` or `host/prefix`).
pub(super) fn host_of(route: &str) -> &str {
    route.split('/').next().unwrap_or(route)
}

pub(super) fn encode_owner(tenant: &str, routes: u64) -> Vec<u8> {
    format!("{tenant}\n{routes}").into_bytes()
}

pub(super) fn decode_owner(bytes: &[u8]) -> (String, u64) {
    let text = String::from_utf8_lossy(bytes);
    match text.rsplit_once('\n') {
        Some((tenant, n)) => (tenant.to_string(), n.parse().unwrap_or(0)),
        None => (text.into_owned(), 0),
    }
}

pub(super) fn token_name_key(tenant: &str, name: &str) -> Vec<u8> {
    format!("{tenant}/{name}").into_bytes()
}

pub(super) fn app_key(tenant: &str, name: &str) -> String {
    outpost_proto::app_key(tenant, name)
}

pub(super) fn deployment_prefix(tenant: &str, app: &str) -> String {
    format!("{tenant}/{app}/")
}

pub(super) fn deployment_key(tenant: &str, app: &str, version: u64) -> Vec<u8> {
    let mut key = deployment_prefix(tenant, app).into_bytes();
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Backend(format!("corrupt record: {e}")))
}

pub(super) fn read_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[8 - n..].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(buf)
}
