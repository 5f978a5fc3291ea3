//! Start-up migrations: bringing a store written by an older version up
//! to what the logic expects, once. Only the embedded store has such
//! history; on etcd they find nothing to do and set their markers.

use std::collections::{BTreeMap, BTreeSet};

use super::copy::MIGRATING;
use super::kv::{Kv, Tree, Write};
use super::logic::{
    HOSTS_INDEXED, USAGE_INDEXED, app_key, decode_owner, deployment_prefix, encode, encode_owner,
    host_of, token_name_key,
};
use super::{AppRecord, DeploymentRecord, KvStore, Result, Store, StoreError, TokenRecord, Usage};

impl<K: Kv> KvStore<K> {
    /// Runs every migration the store still needs.
    pub(super) fn migrated(self) -> Result<Self> {
        // A copy by `control-plane migrate` that has not finished leaves
        // a store missing records: serving it would lose them.
        if let Some(source) = self.kv.get(Tree::Meta, MIGRATING)? {
            return Err(StoreError::Backend(format!(
                "this store is still being filled by `control-plane migrate` from {}: run it again to finish",
                String::from_utf8_lossy(&source)
            )));
        }
        self.with_hosts_indexed()?.with_usage_indexed()
    }

    /// Brings a store written before tokens had names, usage was counted
    /// and modules had reference counts up to date, once: every existing
    /// token becomes its tenant's `default`, usage and references are
    /// counted from the records, and modules no deployment uses (left by
    /// deleted apps) are collected.
    fn with_usage_indexed(self) -> Result<Self> {
        if self.kv.get(Tree::Meta, USAGE_INDEXED)?.is_some() {
            return Ok(self);
        }
        let mut writes = Vec::new();
        for (hash, value) in self.kv.scan(Tree::Tokens, b"")? {
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
            writes.push(Write::Put(
                Tree::TokenNames,
                token_name_key(&tenant, "default"),
                hash.clone(),
            ));
            writes.push(Write::Put(Tree::Tokens, hash, encode(&record)));
        }
        let mut usage: BTreeMap<String, Usage> = BTreeMap::new();
        let mut refs: BTreeMap<String, u64> = BTreeMap::new();
        for app in self.scan::<AppRecord>(Tree::Apps, b"")? {
            usage.entry(app.tenant.clone()).or_default().apps += 1;
            let mut app = app;
            let deployments: Vec<DeploymentRecord> = self.scan(
                Tree::Deployments,
                deployment_prefix(&app.tenant, &app.name).as_bytes(),
            )?;
            for d in &deployments {
                usage.entry(app.tenant.clone()).or_default().stored_bytes += d.size;
                *refs.entry(d.digest.clone()).or_default() += 1;
            }
            if app.kept.is_empty() && !deployments.is_empty() {
                app.kept = deployments.iter().map(|d| d.version).collect();
                writes.push(Write::Put(
                    Tree::Apps,
                    app_key(&app.tenant, &app.name).into_bytes(),
                    encode(&app),
                ));
            }
        }
        for (_, owner) in self.kv.scan(Tree::Hosts, b"")? {
            usage.entry(decode_owner(&owner).0).or_default().hosts += 1;
        }
        for (tenant, u) in &usage {
            writes.push(Write::Put(
                Tree::Usage,
                tenant.clone().into_bytes(),
                encode(u),
            ));
        }
        for (digest, n) in &refs {
            writes.push(Write::Put(
                Tree::ModuleRefs,
                digest.clone().into_bytes(),
                n.to_be_bytes().to_vec(),
            ));
        }
        let mut collected = 0u64;
        for (key, _) in self.kv.scan(Tree::Modules, b"")? {
            if !refs.contains_key(String::from_utf8_lossy(&key).as_ref()) {
                writes.push(Write::Delete(Tree::Modules, key));
                collected += 1;
            }
        }
        if collected > 0 {
            tracing::info!(collected, "removed modules no deployment uses");
        }
        writes.push(Write::Put(
            Tree::Meta,
            USAGE_INDEXED.to_vec(),
            b"1".to_vec(),
        ));
        self.kv.apply(&writes)?;
        Ok(self)
    }

    /// Builds the host index of a store written before hosts had owners,
    /// once. Two tenants on one host there is a conflict the operator must
    /// settle: both keep their routes (nothing is dropped), the host goes
    /// to the tenant first in key order, and every start reports it.
    fn with_hosts_indexed(self) -> Result<Self> {
        let mut owners: BTreeMap<String, (String, u64)> = BTreeMap::new();
        let mut conflicts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (route, owner) in self.kv.scan(Tree::Routes, b"")? {
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
        if self.kv.get(Tree::Meta, HOSTS_INDEXED)?.is_none() {
            let mut writes: Vec<Write> = owners
                .into_iter()
                .map(|(host, (tenant, n))| {
                    Write::Put(Tree::Hosts, host.into_bytes(), encode_owner(&tenant, n))
                })
                .collect();
            writes.push(Write::Put(
                Tree::Meta,
                HOSTS_INDEXED.to_vec(),
                b"1".to_vec(),
            ));
            self.kv.apply(&writes)?;
        }
        Ok(self)
    }
}
