use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;

fn open() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    (dir, store)
}

fn tenant(name: &str) -> TenantRecord {
    TenantRecord {
        name: name.into(),
        token_sha256: format!("hash-of-{name}"),
        limits: Limits::default(),
        created_at: 1,
    }
}

fn app(tenant: &str, name: &str, routes: &[&str]) -> AppRecord {
    AppRecord {
        tenant: tenant.into(),
        name: name.into(),
        routes: routes.iter().map(|r| r.to_string()).collect(),
        env: BTreeMap::new(),
        active_version: None,
        versions: 0,
        created_at: 1,
        allow_outbound: Vec::new(),
    }
}

#[test]
fn tenants_are_unique_and_found_by_token_hash() {
    let (_dir, s) = open();
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
    assert_eq!(s.tenants().unwrap().len(), 1);
}

#[test]
fn a_route_has_one_owner_and_a_refused_write_changes_nothing() {
    let (_dir, s) = open();
    s.create_app(app("a", "web", &["a.example.com", "shared.example.com"]))
        .unwrap();
    let before = s.revision().unwrap();
    // Another tenant: the host is taken, and whose it is goes unsaid.
    let err = s
        .create_app(app("b", "web", &["b.example.com", "shared.example.com"]))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::HostTaken { host } if host == "shared.example.com"),
        "{err}"
    );
    // Another app of the same tenant: the route is taken, the host is not.
    let err = s
        .create_app(app("a", "api", &["shared.example.com"]))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::RouteTaken { route, owner } if route == "shared.example.com" && owner == "a/web"),
        "{err}"
    );
    assert!(s.app("b", "web").unwrap().is_none());
    assert!(s.app("a", "api").unwrap().is_none());
    assert_eq!(s.revision().unwrap(), before);
    // b.example.com was not half-claimed: another tenant can take it.
    s.create_app(app("c", "web", &["b.example.com"])).unwrap();
}

/// Once a tenant routes any path on a host, every path on it is its own:
/// another tenant can claim neither a longer prefix nor the bare host,
/// while the owner adds paths freely; the host is free again once the
/// owner's last route on it goes.
#[test]
fn a_host_belongs_to_the_tenant_that_routes_it() {
    let (_dir, s) = open();
    s.create_app(app("acme", "shop", &["shop.example.com/cart"]))
        .unwrap();
    for route in [
        "shop.example.com",
        "shop.example.com/login",
        "shop.example.com/cart/x",
    ] {
        let err = s.create_app(app("evil", "grab", &[route])).unwrap_err();
        assert!(
            matches!(&err, StoreError::HostTaken { .. }),
            "{route}: {err}"
        );
    }
    s.create_app(app("evil", "mine", &["evil.example.com"]))
        .unwrap();
    let err = s
        .set_routes("evil", "mine", vec!["shop.example.com/login".into()])
        .unwrap_err();
    assert!(matches!(&err, StoreError::HostTaken { .. }), "{err}");
    assert_eq!(
        s.app("evil", "mine").unwrap().unwrap().routes,
        ["evil.example.com"]
    );
    // The owner takes more of its host, in another app too.
    s.create_app(app("acme", "login", &["shop.example.com/login"]))
        .unwrap();
    s.set_routes("acme", "shop", vec!["shop.example.com".into()])
        .unwrap();
    // Still acme's while any of its routes is on it.
    s.delete_app("acme", "shop").unwrap();
    assert!(
        s.create_app(app("evil", "grab", &["shop.example.com"]))
            .is_err()
    );
    s.delete_app("acme", "login").unwrap();
    s.create_app(app("evil", "grab", &["shop.example.com"]))
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
        s.routes.insert("shop.example.com", "acme/shop").unwrap();
        s.routes
            .insert("shop.example.com/login", "evil/grab")
            .unwrap();
        s.routes.insert("other.example.com", "evil/grab").unwrap();
        // As an older version left it: no index yet.
        s.hosts.clear().unwrap();
        s.meta.remove(HOSTS_INDEXED).unwrap();
        s.flush().unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.routes.len(), 3, "a legacy route was dropped");
    let owner = |host: &str| decode_owner(&s.hosts.get(host).unwrap().unwrap());
    assert_eq!(owner("shop.example.com"), ("acme".to_string(), 1));
    assert_eq!(owner("other.example.com"), ("evil".to_string(), 1));
    s.create_app(app("x", "y", &["z.example.com"])).unwrap();
    s.create_app(app("evil", "more", &["other.example.com/more"]))
        .unwrap();
    let err = s
        .create_app(app("evil", "again", &["shop.example.com/again"]))
        .unwrap_err();
    assert!(matches!(&err, StoreError::HostTaken { .. }), "{err}");
}

#[test]
fn routes_move_and_are_released_on_delete() {
    let (_dir, s) = open();
    s.create_app(app("a", "web", &["one.example.com"])).unwrap();
    s.set_routes("a", "web", vec!["two.example.com".into()])
        .unwrap();
    s.create_app(app("b", "x", &["one.example.com"])).unwrap();
    assert!(matches!(
        s.set_routes("b", "x", vec!["two.example.com".into()]),
        Err(StoreError::HostTaken { .. })
    ));
    s.delete_app("a", "web").unwrap();
    s.set_routes("b", "x", vec!["two.example.com".into()])
        .unwrap();
    assert!(matches!(
        s.delete_app("a", "web"),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn deploys_number_versions_and_rollback_picks_an_existing_one() {
    let (_dir, s) = open();
    s.create_app(app("a", "web", &["a.example.com"])).unwrap();
    assert!(matches!(
        s.deploy("a", "web", "sha256:missing", 1, 1),
        Err(StoreError::NotFound(_))
    ));
    s.put_module("sha256:m1", b"one").unwrap();
    s.put_module("sha256:m2", b"two").unwrap();
    let (d1, r1) = s.deploy("a", "web", "sha256:m1", 3, 10).unwrap();
    let (d2, r2) = s.deploy("a", "web", "sha256:m2", 3, 11).unwrap();
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
    assert_eq!(listed, ["sha256:m1", "sha256:m2"]);
    assert_eq!(s.module("sha256:m2").unwrap().unwrap(), b"two");
}

#[test]
fn acknowledged_writes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path()).unwrap();
        s.create_tenant(tenant("acme")).unwrap();
        s.create_app(app("acme", "web", &["a.example.com"]))
            .unwrap();
        s.put_module("sha256:m", b"wasm").unwrap();
        s.deploy("acme", "web", "sha256:m", 4, 1).unwrap();
    }
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(s.revision().unwrap(), 2);
    assert_eq!(
        s.app("acme", "web").unwrap().unwrap().active_version,
        Some(1)
    );
    assert_eq!(s.deployments("acme", "web").unwrap().len(), 1);
}

#[test]
fn concurrent_deploys_never_lose_a_version() {
    let (_dir, s) = open();
    let s = Arc::new(s);
    s.create_app(app("a", "web", &["a.example.com"])).unwrap();
    s.put_module("sha256:m", b"x").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    s.deploy("a", "web", "sha256:m", 1, 1).unwrap();
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

#[test]
fn apps_are_listed_per_tenant_only() {
    let (_dir, s) = open();
    s.create_app(app("a", "one", &["1.example.com"])).unwrap();
    s.create_app(app("a", "two", &["2.example.com"])).unwrap();
    s.create_app(app("ab", "three", &["3.example.com"]))
        .unwrap();
    let names: Vec<_> = s.apps("a").unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(s.all_apps().unwrap().len(), 3);
}
