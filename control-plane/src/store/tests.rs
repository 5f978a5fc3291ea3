//! The store's behaviour, run against both backends: sled and a real etcd
//! (one per test, under its own key prefix). What only sled has (reopening
//! a directory, legacy records) is tested on sled alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use outpost_test_fixtures::etcd::Etcd;

use super::kv::{Kv, Tree};
use super::logic::{HOSTS_INDEXED, USAGE_INDEXED, decode_owner, encode};
use super::*;

/// No quota at all: the store's own logic under test.
pub(super) const U: &Allowance = &Allowance::UNLIMITED;

/// The tenants [`open`] creates.
const TENANTS: [&str; 6] = ["a", "b", "c", "ab", "evil", "x"];

/// A fresh sled store with the [`TENANTS`].
fn open() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    with_tenants(&store);
    (dir, store)
}

/// A fresh etcd store with the [`TENANTS`], on its own etcd, with its
/// module blobs in a directory.
pub(super) fn open_etcd() -> (Etcd, tempfile::TempDir, EtcdStore) {
    let etcd = Etcd::start();
    let blobs = tempfile::tempdir().unwrap();
    let store = connect(&etcd, "/outpost", &blobs);
    with_tenants(&store);
    (etcd, blobs, store)
}

/// Another client of `etcd`, as another control plane is.
pub(super) fn connect(etcd: &Etcd, prefix: &str, blobs: &tempfile::TempDir) -> EtcdStore {
    let options = EtcdOptions {
        prefix: prefix.into(),
        ..EtcdOptions::default()
    };
    let blobs = Arc::new(DirBlobs::open(blobs.path()).unwrap());
    EtcdStore::connect(&etcd.endpoints(), options, blobs).unwrap()
}

pub(super) fn with_tenants<K: Kv>(store: &KvStore<K>) {
    for name in TENANTS {
        store.create_tenant(tenant(name)).unwrap();
    }
}

/// The digest of `bytes`, as the API computes it (etcd's blob store
/// checks blobs against it).
pub(super) fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Runs each named test on a fresh sled store and on a fresh etcd store.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sled {
            $(#[test]
            fn $name() {
                let (_dir, s) = super::open();
                super::$name(s);
            })*
        }
        mod on_etcd {
            $(#[test]
            fn $name() {
                let (_etcd, _blobs, s) = super::open_etcd();
                super::$name(s);
            })*
        }
    };
}

mod copy;
mod etcd;

on_both_backends!(
    tenants_are_unique_and_found_by_token_hash,
    a_route_has_one_owner_and_a_refused_write_changes_nothing,
    a_host_belongs_to_the_tenant_that_routes_it,
    routes_move_and_are_released_on_delete,
    deploys_number_versions_and_rollback_picks_an_existing_one,
    concurrent_deploys_never_lose_a_version,
    apps_are_listed_per_tenant_only,
    quotas_are_checked_in_the_transaction_and_a_refusal_changes_nothing,
    old_versions_are_pruned_and_unused_modules_collected,
    tokens_are_named_listed_and_revoked,
    deleting_a_tenant_removes_everything_it_holds,
    env_stored_in_clear_is_sealed_at_start_up_and_a_wrong_key_is_refused,
    cache_purges_are_revisions_of_their_tenant,
);

pub(super) fn tenant(name: &str) -> TenantRecord {
    TenantRecord {
        name: name.into(),
        token_sha256: format!("hash-of-{name}"),
        limits: outpost_proto::Limits::default(),
        created_at: 1,
        domains: Vec::new(),
        disabled: false,
        quotas: Default::default(),
    }
}

pub(super) fn app(tenant: &str, name: &str, routes: &[&str]) -> AppRecord {
    AppRecord {
        tenant: tenant.into(),
        name: name.into(),
        routes: routes.iter().map(|r| r.to_string()).collect(),
        env: BTreeMap::new(),
        env_sealed: true,
        active_version: None,
        versions: 0,
        kept: Vec::new(),
        created_at: 1,
        allow_outbound: Vec::new(),
    }
}

fn tenants_are_unique_and_found_by_token_hash<K: Kv>(s: KvStore<K>) {
    s.create_tenant(tenant("acme")).unwrap();
    assert!(matches!(
        s.create_tenant(tenant("acme")),
        Err(StoreError::Exists(_))
    ));
    assert_eq!(
        s.tenant_by_token("hash-of-acme").unwrap().unwrap().name,
        "acme"
    );
    assert!(s.tenant_by_token("hash-of-nobody").unwrap().is_none());
    assert_eq!(s.tenants().unwrap().len(), TENANTS.len() + 1);
}

fn a_route_has_one_owner_and_a_refused_write_changes_nothing<K: Kv>(s: KvStore<K>) {
    s.create_app(app("a", "web", &["a.example.com", "shared.example.com"]), U)
        .unwrap();
    let before = s.revision().unwrap();
    // Another tenant: the host is taken, and whose it is goes unsaid.
    let err = s
        .create_app(app("b", "web", &["b.example.com", "shared.example.com"]), U)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::HostTaken { host } if host == "shared.example.com"),
        "{err}"
    );
    // Another app of the same tenant: the route is taken, the host is not.
    let err = s
        .create_app(app("a", "api", &["shared.example.com"]), U)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::RouteTaken { route, owner } if route == "shared.example.com" && owner == "a/web"),
        "{err}"
    );
    assert!(s.app("b", "web").unwrap().is_none());
    assert!(s.app("a", "api").unwrap().is_none());
    assert_eq!(s.revision().unwrap(), before);
    // b.example.com was not half-claimed: another tenant can take it.
    s.create_app(app("c", "web", &["b.example.com"]), U)
        .unwrap();
}

/// Once a tenant routes any path on a host, every path on it is its own:
/// another tenant can claim neither a longer prefix nor the bare host,
/// while the owner adds paths freely; the host is free again once the
/// owner's last route on it goes.
fn a_host_belongs_to_the_tenant_that_routes_it<K: Kv>(s: KvStore<K>) {
    s.create_tenant(tenant("acme")).unwrap();
    s.create_app(app("acme", "shop", &["shop.example.com/cart"]), U)
        .unwrap();
    for route in [
        "shop.example.com",
        "shop.example.com/login",
        "shop.example.com/cart/x",
    ] {
        let err = s.create_app(app("evil", "grab", &[route]), U).unwrap_err();
        assert!(
            matches!(&err, StoreError::HostTaken { .. }),
            "{route}: {err}"
        );
    }
    s.create_app(app("evil", "mine", &["evil.example.com"]), U)
        .unwrap();
    let err = s
        .set_routes("evil", "mine", vec!["shop.example.com/login".into()], U)
        .unwrap_err();
    assert!(matches!(&err, StoreError::HostTaken { .. }), "{err}");
    assert_eq!(
        s.app("evil", "mine").unwrap().unwrap().routes,
        ["evil.example.com"]
    );
    // The owner takes more of its host, in another app too.
    s.create_app(app("acme", "login", &["shop.example.com/login"]), U)
        .unwrap();
    s.set_routes("acme", "shop", vec!["shop.example.com".into()], U)
        .unwrap();
    // Still acme's while any of its routes is on it.
    s.delete_app("acme", "shop").unwrap();
    assert!(
        s.create_app(app("evil", "grab", &["shop.example.com"]), U)
            .is_err()
    );
    s.delete_app("acme", "login").unwrap();
    s.create_app(app("evil", "grab", &["shop.example.com"]), U)
        .unwrap();
}

/// A store written before hosts had owners gets its index at start-up;
/// two tenants on one host keep their routes, the first in key order owns
/// it from then on, and the other can add nothing there.
#[test]
fn legacy_routes_are_indexed_by_host_and_conflicts_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        with_tenants(&s);
        s.kv.tree(Tree::Routes)
            .insert("shop.example.com", "acme/shop")
            .unwrap();
        s.kv.tree(Tree::Routes)
            .insert("shop.example.com/login", "evil/grab")
            .unwrap();
        s.kv.tree(Tree::Routes)
            .insert("other.example.com", "evil/grab")
            .unwrap();
        // As an older version left it: no index yet.
        s.kv.tree(Tree::Hosts).clear().unwrap();
        s.kv.tree(Tree::Meta).remove(HOSTS_INDEXED).unwrap();
        s.kv.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        s.kv.tree(Tree::Routes).len(),
        3,
        "a legacy route was dropped"
    );
    let owner = |host: &str| decode_owner(&s.kv.tree(Tree::Hosts).get(host).unwrap().unwrap());
    assert_eq!(owner("shop.example.com"), ("acme".to_string(), 1));
    assert_eq!(owner("other.example.com"), ("evil".to_string(), 1));
    s.create_app(app("x", "y", &["z.example.com"]), U).unwrap();
    s.create_app(app("evil", "more", &["other.example.com/more"]), U)
        .unwrap();
    let err = s
        .create_app(app("evil", "again", &["shop.example.com/again"]), U)
        .unwrap_err();
    assert!(matches!(&err, StoreError::HostTaken { .. }), "{err}");
}

fn routes_move_and_are_released_on_delete<K: Kv>(s: KvStore<K>) {
    s.create_app(app("a", "web", &["one.example.com"]), U)
        .unwrap();
    s.set_routes("a", "web", vec!["two.example.com".into()], U)
        .unwrap();
    s.create_app(app("b", "x", &["one.example.com"]), U)
        .unwrap();
    assert!(matches!(
        s.set_routes("b", "x", vec!["two.example.com".into()], U),
        Err(StoreError::HostTaken { .. })
    ));
    s.delete_app("a", "web").unwrap();
    s.set_routes("b", "x", vec!["two.example.com".into()], U)
        .unwrap();
    assert!(matches!(
        s.delete_app("a", "web"),
        Err(StoreError::NotFound(_))
    ));
}

fn deploys_number_versions_and_rollback_picks_an_existing_one<K: Kv>(s: KvStore<K>) {
    s.create_app(app("a", "web", &["a.example.com"]), U)
        .unwrap();
    assert!(matches!(
        s.deploy("a", "web", &digest(b"missing"), 1, 1, U),
        Err(StoreError::NotFound(_))
    ));
    s.put_module(&digest(b"one"), b"one").unwrap();
    s.put_module(&digest(b"two"), b"two").unwrap();
    let (d1, r1) = s.deploy("a", "web", &digest(b"one"), 3, 10, U).unwrap();
    let (d2, r2) = s.deploy("a", "web", &digest(b"two"), 3, 11, U).unwrap();
    assert_eq!((d1.version, d2.version), (1, 2));
    assert!(r2 > r1);
    assert_eq!(s.app("a", "web").unwrap().unwrap().active_version, Some(2));
    s.rollback("a", "web", 1).unwrap();
    assert_eq!(s.app("a", "web").unwrap().unwrap().active_version, Some(1));
    assert!(matches!(
        s.rollback("a", "web", 7),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.app("a", "web").unwrap().unwrap().active_version, Some(1));
    let listed: Vec<_> = s
        .deployments("a", "web")
        .unwrap()
        .iter()
        .map(|d| d.digest.clone())
        .collect();
    assert_eq!(listed, [digest(b"one"), digest(b"two")]);
    assert_eq!(s.module(&digest(b"two")).unwrap().unwrap(), b"two");
}

#[test]
fn acknowledged_writes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.create_tenant(tenant("acme")).unwrap();
        s.create_app(app("acme", "web", &["a.example.com"]), U)
            .unwrap();
        s.put_module("sha256:m", b"wasm").unwrap();
        s.deploy("acme", "web", "sha256:m", 4, 1, U).unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.revision().unwrap(), 2);
    assert_eq!(
        s.app("acme", "web").unwrap().unwrap().active_version,
        Some(1)
    );
    assert_eq!(s.deployments("acme", "web").unwrap().len(), 1);
}

fn concurrent_deploys_never_lose_a_version<K: Kv>(s: KvStore<K>) {
    let s = Arc::new(s);
    s.create_app(app("a", "web", &["a.example.com"]), U)
        .unwrap();
    s.put_module(&digest(b"x"), b"x").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    s.deploy("a", "web", &digest(b"x"), 1, 1, U).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let versions: Vec<u64> = s
        .deployments("a", "web")
        .unwrap()
        .iter()
        .map(|d| d.version)
        .collect();
    assert_eq!(versions, (1..=100).collect::<Vec<_>>());
    assert_eq!(s.app("a", "web").unwrap().unwrap().versions, 100);
}

fn apps_are_listed_per_tenant_only<K: Kv>(s: KvStore<K>) {
    s.create_app(app("a", "one", &["1.example.com"]), U)
        .unwrap();
    s.create_app(app("a", "two", &["2.example.com"]), U)
        .unwrap();
    s.create_app(app("ab", "three", &["3.example.com"]), U)
        .unwrap();
    let names: Vec<_> = s.apps("a").unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(s.all_apps().unwrap().len(), 3);
}

fn quotas_are_checked_in_the_transaction_and_a_refusal_changes_nothing<K: Kv>(s: KvStore<K>) {
    let two = Allowance {
        apps: 2,
        hosts: 2,
        ..Allowance::UNLIMITED
    };
    s.create_app(app("a", "one", &["1.example.com", "1.example.com/x"]), &two)
        .unwrap();
    // The second route on a host the tenant holds is not another host.
    s.create_app(app("a", "two", &["2.example.com"]), &two)
        .unwrap();
    let before = s.revision().unwrap();
    let err = s
        .create_app(app("a", "three", &["3.example.com"]), &two)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::QuotaExceeded {
                quota: "apps",
                limit: 2
            }
        ),
        "{err}"
    );
    let err = s
        .set_routes(
            "a",
            "two",
            vec!["2.example.com".into(), "4.example.com".into()],
            &two,
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::QuotaExceeded { quota: "hosts", .. }),
        "{err}"
    );
    assert_eq!(s.revision().unwrap(), before);
    assert_eq!(
        s.usage("a").unwrap(),
        Usage {
            apps: 2,
            hosts: 2,
            stored_bytes: 0
        }
    );
    assert!(s.kv.get(Tree::Hosts, b"4.example.com").unwrap().is_none());
    // Moving a route frees its old host in the same change.
    s.set_routes("a", "two", vec!["4.example.com".into()], &two)
        .unwrap();
    assert_eq!(s.usage("a").unwrap().hosts, 2);
    s.delete_app("a", "one").unwrap();
    assert_eq!(
        s.usage("a").unwrap(),
        Usage {
            apps: 1,
            hosts: 1,
            stored_bytes: 0
        }
    );
}

fn old_versions_are_pruned_and_unused_modules_collected<K: Kv>(s: KvStore<K>) {
    let keep2 = Allowance {
        versions_per_app: 2,
        stored_bytes: 10,
        ..Allowance::UNLIMITED
    };
    s.create_app(app("a", "web", &["a.example.com"]), U)
        .unwrap();
    s.create_app(app("b", "web", &["b.example.com"]), U)
        .unwrap();
    s.deploy_module("a", "web", &digest(b"111"), b"111", 1, &keep2)
        .unwrap();
    s.deploy_module("b", "web", &digest(b"111"), b"111", 1, &keep2)
        .unwrap();
    s.deploy_module("a", "web", &digest(b"222"), b"222", 2, &keep2)
        .unwrap();
    // Rolled back to 1, then a third version: 2 is the oldest inactive.
    s.rollback("a", "web", 1).unwrap();
    s.deploy_module("a", "web", &digest(b"333"), b"333", 3, &keep2)
        .unwrap();
    s.deploy_module("a", "web", &digest(b"444"), b"444", 4, &keep2)
        .unwrap();
    let kept: Vec<u64> = s
        .deployments("a", "web")
        .unwrap()
        .iter()
        .map(|d| d.version)
        .collect();
    assert_eq!(kept, [3, 4]);
    assert_eq!(s.app("a", "web").unwrap().unwrap().kept, [3, 4]);
    assert_eq!(s.usage("a").unwrap().stored_bytes, 6);
    assert!(
        s.module(&digest(b"222")).unwrap().is_none(),
        "an unused module was kept"
    );
    assert!(
        s.module(&digest(b"111")).unwrap().is_some(),
        "b still uses it"
    );
    assert!(matches!(
        s.rollback("a", "web", 1),
        Err(StoreError::NotFound(_))
    ));
    // Past the stored bytes: refused whole, nothing pruned.
    let err = s
        .deploy_module("a", "web", &digest(&[0; 9]), &[0; 9], 5, &keep2)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::QuotaExceeded {
                quota: "stored_mib",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.deployments("a", "web").unwrap().len(), 2);
    assert!(s.module(&digest(&[0; 9])).unwrap().is_none());
    // Deleting the last user of a module collects it.
    s.delete_app("b", "web").unwrap();
    assert!(s.module(&digest(b"111")).unwrap().is_none());
    assert_eq!(s.usage("b").unwrap(), Usage::default());
}

fn tokens_are_named_listed_and_revoked<K: Kv>(s: KvStore<K>) {
    let token = |name: &str| TokenRecord {
        tenant: "a".into(),
        name: name.into(),
        token_sha256: format!("hash-of-a-{name}"),
        created_at: 2,
    };
    s.create_token(token("ci")).unwrap();
    assert!(matches!(
        s.create_token(token("ci")),
        Err(StoreError::Exists(_))
    ));
    let names: Vec<String> = s.tokens("a").unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["ci", "default"]);
    assert_eq!(
        s.tenant_by_token("hash-of-a-ci").unwrap().unwrap().name,
        "a"
    );
    s.revoke_token("a", "ci").unwrap();
    assert!(s.tenant_by_token("hash-of-a-ci").unwrap().is_none());
    assert!(s.tenant_by_token("hash-of-a").unwrap().is_some());
    // Another tenant's token is not found by name.
    assert!(matches!(s.revoke_token("b", "default").map(|_| ()), Ok(())));
    assert!(matches!(
        s.revoke_token("b", "default"),
        Err(StoreError::NotFound(_))
    ));
    assert!(s.tenant_by_token("hash-of-a").unwrap().is_some());
}

#[test]
fn node_identities_are_unique_revocable_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let identity = |name: &str| NodeIdentityRecord {
        name: name.into(),
        token_sha256: format!("hash-of-{name}"),
        created_at: 3,
    };
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.create_node_identity(identity("edge-2")).unwrap();
        s.create_node_identity(identity("edge-1")).unwrap();
        assert!(matches!(
            s.create_node_identity(NodeIdentityRecord {
                token_sha256: "another-hash".into(),
                ..identity("edge-1")
            }),
            Err(StoreError::Exists(_))
        ));
        // The refused duplicate did not replace the first.
        assert_eq!(s.node_identity("edge-1").unwrap(), Some(identity("edge-1")));
        s.create_node_identity(identity("gone")).unwrap();
        s.revoke_node_identity("gone").unwrap();
        assert!(matches!(
            s.revoke_node_identity("gone"),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.node_identity("gone").unwrap(), None);
        // Identities are not something nodes serve.
        assert_eq!(s.revision().unwrap(), 0);
    }
    let s = SledStore::open(dir.path()).unwrap();
    let names: Vec<String> = s
        .node_identities()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["edge-1", "edge-2"]);
    assert_eq!(s.node_identity("edge-2").unwrap(), Some(identity("edge-2")));
    assert_eq!(s.node_identity("gone").unwrap(), None);
}

fn deleting_a_tenant_removes_everything_it_holds<K: Kv>(s: KvStore<K>) {
    s.create_app(app("a", "web", &["shop.example.com"]), U)
        .unwrap();
    s.deploy_module("a", "web", &digest(b"111"), b"111", 1, U)
        .unwrap();
    s.create_app(app("b", "web", &["b.example.com"]), U)
        .unwrap();
    s.deploy_module("b", "web", &digest(b"222"), b"222", 1, U)
        .unwrap();
    s.delete_tenant("a").unwrap();
    assert!(s.tenant("a").unwrap().is_none());
    assert!(s.apps("a").unwrap().is_empty());
    assert!(s.tenant_by_token("hash-of-a").unwrap().is_none());
    assert!(s.module(&digest(b"111")).unwrap().is_none());
    assert!(s.module(&digest(b"222")).unwrap().is_some());
    assert_eq!(s.usage("a").unwrap(), Usage::default());
    // Its host is free for another tenant; nothing can be added for it.
    s.create_app(app("b", "shop", &["shop.example.com"]), U)
        .unwrap();
    assert!(matches!(
        s.create_app(app("a", "web", &["a.example.com"]), U),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(s.delete_tenant("a"), Err(StoreError::NotFound(_))));
}

#[test]
fn a_store_from_before_usage_counting_is_brought_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        with_tenants(&s);
        s.create_app(app("a", "web", &["a.example.com"]), U)
            .unwrap();
        s.deploy_module("a", "web", "sha256:one", b"111", 1, U)
            .unwrap();
        s.deploy_module("a", "web", "sha256:two", b"2222", 2, U)
            .unwrap();
        // As an older version left it: a bare tenant name under the
        // token, no counts, no kept list, and a deleted app's module.
        s.kv.tree(Tree::Tokens).insert("hash-of-a", "a").unwrap();
        s.kv.tree(Tree::TokenNames).clear().unwrap();
        s.kv.tree(Tree::Usage).clear().unwrap();
        s.kv.tree(Tree::ModuleRefs).clear().unwrap();
        s.kv.tree(Tree::Modules)
            .insert("sha256:orphan", b"x".to_vec())
            .unwrap();
        let mut record = s.app("a", "web").unwrap().unwrap();
        record.kept.clear();
        s.kv.tree(Tree::Apps)
            .insert("a/web", encode(&record))
            .unwrap();
        s.kv.tree(Tree::Meta).remove(USAGE_INDEXED).unwrap();
        s.kv.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.tenant_by_token("hash-of-a").unwrap().unwrap().name, "a");
    assert_eq!(s.tokens("a").unwrap()[0].name, "default");
    assert_eq!(
        s.usage("a").unwrap(),
        Usage {
            apps: 1,
            hosts: 1,
            stored_bytes: 7
        }
    );
    assert_eq!(s.app("a", "web").unwrap().unwrap().kept, [1, 2]);
    assert!(s.module("sha256:orphan").unwrap().is_none());
    // The counts are right: pruning to one version collects `one`.
    let keep1 = Allowance {
        versions_per_app: 1,
        ..Allowance::UNLIMITED
    };
    s.deploy_module("a", "web", "sha256:two", b"2222", 3, &keep1)
        .unwrap();
    assert!(s.module("sha256:one").unwrap().is_none());
    assert!(s.module("sha256:two").unwrap().is_some());
    assert_eq!(s.usage("a").unwrap().stored_bytes, 4);
}

fn env_stored_in_clear_is_sealed_at_start_up_and_a_wrong_key_is_refused<K: Kv>(s: KvStore<K>) {
    use outpost_runtime::seal::Sealer;
    let mut legacy = app("a", "web", &["a.example.com"]);
    legacy.env = [("API_KEY".to_string(), "clear-value".to_string())].into();
    legacy.env_sealed = false;
    s.create_app(legacy, U).unwrap();
    let sealer = Sealer::from_hex(&"77".repeat(32)).unwrap();

    assert_eq!(crate::env::seal_stored(&s, &sealer).unwrap(), 1);
    let stored = s.app("a", "web").unwrap().unwrap();
    assert!(stored.env_sealed);
    assert!(!stored.env["API_KEY"].contains("clear-value"));
    assert_eq!(
        crate::env::open(&sealer, &stored).unwrap()["API_KEY"],
        "clear-value"
    );
    // Once sealed, nothing more to do; and another key is refused before
    // anything is served.
    assert_eq!(crate::env::seal_stored(&s, &sealer).unwrap(), 0);
    let other = Sealer::from_hex(&"78".repeat(32)).unwrap();
    let err = crate::env::seal_stored(&s, &other).unwrap_err();
    assert!(err.to_string().contains("does not open"), "{err}");
}

fn cache_purges_are_revisions_of_their_tenant<K: Kv>(s: KvStore<K>) {
    use outpost_proto::CachePurge;
    let before = s.revision().unwrap();
    let r1 = s
        .purge_cache(
            "a",
            CachePurge::Url {
                url: "https://o.example/x".into(),
            },
        )
        .unwrap();
    let r2 = s.purge_cache("b", CachePurge::All {}).unwrap();
    assert_eq!((r1, r2), (before + 1, before + 2));
    let recent = s.recent_purges().unwrap();
    assert_eq!(recent.since, 0);
    let listed: Vec<(u64, &str)> = recent
        .list
        .iter()
        .map(|p| (p.revision, p.tenant.as_str()))
        .collect();
    assert_eq!(listed, [(r1, "a"), (r2, "b")]);
    // No purge for a tenant that does not exist, and nothing recorded.
    assert!(matches!(
        s.purge_cache("nobody", CachePurge::All {}),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.revision().unwrap(), r2);
    assert_eq!(s.recent_purges().unwrap().list.len(), 2);
}

#[test]
fn only_the_most_recent_purges_are_kept_and_the_list_says_from_where() {
    use outpost_proto::{CachePurge, RECENT_PURGES};
    let (_dir, s) = open();
    let first = s.revision().unwrap() + 1;
    for _ in 0..RECENT_PURGES + 3 {
        s.purge_cache("a", CachePurge::All {}).unwrap();
    }
    let recent = s.recent_purges().unwrap();
    assert_eq!(recent.list.len(), RECENT_PURGES);
    assert_eq!(recent.since, first + 2);
    assert_eq!(recent.list[0].revision, first + 3);
    assert!(recent.after(first + 1).is_none());
}
