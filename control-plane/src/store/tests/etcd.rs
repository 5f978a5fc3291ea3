//! What only the etcd store must prove: several control planes (separate
//! clients of one etcd) writing at once keep every invariant, and a lost
//! etcd makes writes fail rather than hang.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::*;

/// Two control planes create an app on the same fresh route at the same
/// moment, 100 times: each time exactly one wins, the other is told the
/// route (same tenant) or the host (another tenant) is taken, and the
/// route index names the winner.
#[test]
fn two_control_planes_racing_on_a_new_route_one_wins_each_time() {
    let etcd = Etcd::start();
    let blobs = tempfile::tempdir().unwrap();
    let planes = [
        Arc::new(connect(&etcd, "/race", &blobs)),
        Arc::new(connect(&etcd, "/race", &blobs)),
    ];
    with_tenants(&*planes[0]);
    for round in 0..100 {
        let route = format!("r{round}.example.com");
        // Odd rounds race two tenants for a host, even ones two apps of
        // one tenant for a route.
        let tenants = if round % 2 == 1 {
            ["a", "b"]
        } else {
            ["a", "a"]
        };
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|i| {
                let store = planes[i].clone();
                let barrier = barrier.clone();
                let record = app(tenants[i], &format!("web{round}-{i}"), &[route.as_str()]);
                std::thread::spawn(move || {
                    barrier.wait();
                    store.create_app(record, U)
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let winners: Vec<usize> = (0..2).filter(|i| results[*i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let (winner, loser) = (winners[0], 1 - winners[0]);
        match &results[loser] {
            Err(StoreError::RouteTaken { .. }) if tenants[0] == tenants[1] => {}
            Err(StoreError::HostTaken { .. }) if tenants[0] != tenants[1] => {}
            other => panic!("round {round}: the loser got {other:?}"),
        }
        let owner = planes[loser]
            .kv
            .get(Tree::Routes, route.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(owner).unwrap(),
            format!("{}/web{round}-{winner}", tenants[winner]),
            "round {round}"
        );
        assert!(
            planes[winner]
                .app(tenants[loser], &format!("web{round}-{loser}"))
                .unwrap()
                .is_none()
        );
    }
    // One app per round, and each tenant's counts are exact.
    let rev = planes[1].revision().unwrap();
    assert_eq!(rev, 100);
    let apps = planes[0].usage("a").unwrap().apps + planes[0].usage("b").unwrap().apps;
    assert_eq!(apps, 100);
    let hosts = planes[0].usage("a").unwrap().hosts + planes[0].usage("b").unwrap().hosts;
    assert_eq!(hosts, 100);
}

/// Two control planes with four writers each deploy one app 25 times per
/// writer: every version from 1 to 200 exists once, each deploy moved the
/// revision by exactly one, and the tenant's stored bytes count them all.
#[test]
fn concurrent_deploys_through_two_stores_are_gap_free() {
    let etcd = Etcd::start();
    let blobs = tempfile::tempdir().unwrap();
    let planes = [
        Arc::new(connect(&etcd, "/deploys", &blobs)),
        Arc::new(connect(&etcd, "/deploys", &blobs)),
    ];
    with_tenants(&*planes[0]);
    planes[0]
        .create_app(app("a", "web", &["a.example.com"]), U)
        .unwrap();
    let before = planes[0].revision().unwrap();
    let wasm = b"(module)".to_vec();
    let module = digest(&wasm);
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let store = planes[i % 2].clone();
            let (wasm, module) = (wasm.clone(), module.clone());
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| {
                        store
                            .deploy_module("a", "web", &module, &wasm, 1, U)
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut deployed: Vec<(u64, Revision)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .map(|(d, r)| (d.version, r))
        .collect();
    deployed.sort();
    let versions: Vec<u64> = deployed.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=200).collect::<Vec<_>>());
    // Version n was made by the n-th mutation after the app's creation.
    for (v, r) in &deployed {
        assert_eq!(*r, before + v, "version {v}");
    }
    let listed: Vec<u64> = planes[1]
        .deployments("a", "web")
        .unwrap()
        .iter()
        .map(|d| d.version)
        .collect();
    assert_eq!(listed, (1..=200).collect::<Vec<_>>());
    assert_eq!(planes[1].revision().unwrap(), before + 200);
    assert_eq!(
        planes[1].usage("a").unwrap(),
        Usage {
            apps: 1,
            hosts: 1,
            stored_bytes: 200 * wasm.len() as u64
        }
    );
    assert_eq!(planes[1].module(&module).unwrap().unwrap(), wasm);
}

/// With etcd hung, a write fails within the request timeout instead of
/// hanging the API's blocking thread, and works again once etcd is back;
/// with etcd gone, it fails at once.
#[test]
fn a_write_fails_promptly_when_etcd_is_down() {
    let mut etcd = Etcd::start();
    let blobs = tempfile::tempdir().unwrap();
    let options = EtcdOptions {
        prefix: "/down".into(),
        request_timeout: Duration::from_secs(2),
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect(
        &etcd.endpoints(),
        options,
        Arc::new(DirBlobs::open(blobs.path()).unwrap()),
    )
    .unwrap();
    with_tenants(&store);

    etcd.freeze();
    let started = Instant::now();
    let err = store
        .create_app(app("a", "web", &["a.example.com"]), U)
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    // The 2 s request timeout, and one more for the wait around it.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    etcd.thaw();
    store
        .create_app(app("a", "web", &["a.example.com"]), U)
        .unwrap();

    etcd.kill();
    let started = Instant::now();
    let err = store
        .create_app(app("a", "api", &["api.example.com"]), U)
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(store.revision().is_err());
}

/// The blob of a module no version uses any more is deleted once the
/// write that dropped the last use commits, and its mark cleared; a later
/// deploy of the same bytes stores it again.
#[test]
fn unused_blobs_are_collected_after_the_commit() {
    let (_etcd, blobs, s) = open_etcd();
    s.create_app(app("a", "web", &["a.example.com"]), U)
        .unwrap();
    let module = digest(b"wasm");
    s.deploy_module("a", "web", &module, b"wasm", 1, U).unwrap();
    let file = blobs.path().join(&module["sha256:".len()..]);
    assert!(file.exists());
    s.delete_app("a", "web").unwrap();
    assert!(!file.exists(), "the blob outlived its last version");
    assert!(
        s.kv.get(Tree::ModuleRefs, module.as_bytes())
            .unwrap()
            .is_none()
    );
    s.create_app(app("a", "web", &["a.example.com"]), U)
        .unwrap();
    s.deploy_module("a", "web", &module, b"wasm", 2, U).unwrap();
    assert_eq!(s.module(&module).unwrap().unwrap(), b"wasm");
}

/// Over TLS, the store checks etcd's certificate against the CA it is
/// given: with it, writes go through; without it, nothing is trusted.
#[test]
fn etcd_over_tls_is_checked_against_the_given_ca() {
    let ca = outpost_test_fixtures::tls::TestCa::new();
    let issued = ca.issue(&["127.0.0.1"]);
    let etcd = Etcd::start_tls(&issued.chain_pem, &issued.key_pem);
    let blobs = tempfile::tempdir().unwrap();
    let connect = |ca_pem: Option<Vec<u8>>| {
        let options = EtcdOptions {
            prefix: "/tls".into(),
            request_timeout: Duration::from_secs(2),
            tls: Some(EtcdTls {
                ca_pem,
                client_identity_pem: None,
            }),
            ..EtcdOptions::default()
        };
        let blobs = Arc::new(DirBlobs::open(blobs.path()).unwrap());
        EtcdStore::connect(&etcd.endpoints(), options, blobs)
    };
    let store = connect(Some(ca.root_pem().into_bytes())).unwrap();
    with_tenants(&store);
    store
        .create_app(app("a", "web", &["a.example.com"]), U)
        .unwrap();
    assert_eq!(store.revision().unwrap(), 1);

    let stranger = outpost_test_fixtures::tls::TestCa::new();
    let refused = connect(Some(stranger.root_pem().into_bytes()));
    assert!(
        matches!(refused, Err(StoreError::Backend(_))),
        "a store trusting another CA connected"
    );
}

/// A control plane is told when another one moves the revision (an etcd
/// watch), rather than finding out at its next poll; a write to anything
/// else does not wake it.
#[test]
fn another_control_planes_write_wakes_the_revision_watch() {
    let etcd = Etcd::start();
    let blobs = tempfile::tempdir().unwrap();
    let (watcher, writer) = (
        connect(&etcd, "/watch", &blobs),
        connect(&etcd, "/watch", &blobs),
    );
    with_tenants(&writer);
    let moved = watcher
        .revision_changes()
        .expect("an etcd store pushes revision changes");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Bounds only so a broken watch fails instead of hanging.
    let woken = |wait: Duration| {
        runtime.block_on(async { tokio::time::timeout(wait, moved.notified()).await.is_ok() })
    };
    // The watch wakes once when it opens (a change may have come first).
    assert!(woken(Duration::from_secs(10)), "the watch never opened");
    writer
        .create_token(TokenRecord {
            tenant: "a".into(),
            name: "ci".into(),
            token_sha256: "hash-of-ci".into(),
            created_at: 1,
        })
        .unwrap();
    assert!(
        !woken(Duration::from_millis(500)),
        "a write that leaves the revision alone woke the watch"
    );
    for round in 0..3 {
        writer
            .create_app(
                app(
                    "a",
                    &format!("web{round}"),
                    &[&format!("w{round}.example.com")],
                ),
                U,
            )
            .unwrap();
        assert!(
            woken(Duration::from_secs(10)),
            "round {round}: the revision moved and nobody was told"
        );
    }
}

/// Deleting a tenant or an app that holds more than etcd takes in one
/// transaction (128 operations by default, what the fixture runs) works:
/// the deletion goes in steps, and leaves nothing behind.
#[test]
fn deleting_more_than_one_etcd_transaction_holds_leaves_nothing() {
    let (_etcd, _blobs, s) = open_etcd();
    for i in 0..70 {
        s.create_app(
            app("a", &format!("app{i}"), &[&format!("a{i}.example.com")]),
            U,
        )
        .unwrap();
    }
    s.create_app(app("b", "many", &["b.example.com"]), U)
        .unwrap();
    for v in 0..150u32 {
        let body = format!("version {v}");
        s.deploy_module("b", "many", &digest(body.as_bytes()), body.as_bytes(), 1, U)
            .unwrap();
    }
    for i in 0..40 {
        s.create_token(TokenRecord {
            tenant: "a".into(),
            name: format!("t{i}"),
            token_sha256: format!("hash-of-t{i}"),
            created_at: 1,
        })
        .unwrap();
    }
    s.delete_app("b", "many").unwrap();
    assert!(s.app("b", "many").unwrap().is_none());
    assert!(s.deployments("b", "many").unwrap().is_empty());
    assert!(s.module(&digest(b"version 7")).unwrap().is_none());
    assert_eq!(s.usage("b").unwrap().stored_bytes, 0);

    s.delete_tenant("a").unwrap();
    assert!(s.tenant("a").unwrap().is_none());
    assert!(s.apps("a").unwrap().is_empty());
    assert!(s.tokens("a").unwrap().is_empty());
    assert!(s.tenant_by_token("hash-of-t3").unwrap().is_none());
    assert_eq!(s.usage("a").unwrap(), Usage::default());
    // Its hosts are free again.
    s.create_app(app("b", "taken-over", &["a5.example.com"]), U)
        .unwrap();
}
