//! `control-plane migrate`'s copy from sled into etcd: every record of
//! every tree arrives exactly as stored, module bytes go to the blobs, a
//! copy that stopped midway is refused by control planes and finished by
//! running it again, and a prefix holding a store is never written.

use super::*;
use crate::store::copy::MIGRATING;
use crate::store::kv::Write;

/// A client of `etcd` under `prefix`, not yet a store.
fn client(etcd: &Etcd, prefix: &str) -> EtcdKv {
    let options = EtcdOptions {
        prefix: prefix.into(),
        ..EtcdOptions::default()
    };
    EtcdKv::connect(&etcd.endpoints(), options).unwrap()
}

/// A tree's keys and values, in key order.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Every record of every tree but the module bytes.
fn records<K: Kv>(kv: &K) -> Vec<(Tree, Records)> {
    Tree::ALL
        .into_iter()
        .filter(|t| *t != Tree::Modules)
        .map(|t| (t, kv.scan(t, b"").unwrap()))
        .collect()
}

/// A sled store holding some of everything, with more apps than one
/// etcd transaction may write.
fn populated() -> (tempfile::TempDir, SledStore) {
    let (dir, s) = open();
    for i in 0..150 {
        s.create_app(
            app("b", &format!("app{i}"), &[&format!("b{i}.example.com")]),
            U,
        )
        .unwrap();
    }
    s.create_app(app("a", "web", &["a.example.com/v2"]), U)
        .unwrap();
    for body in [&b"one"[..], b"two", b"three"] {
        s.put_module(&digest(body), body).unwrap();
        s.deploy("a", "web", &digest(body), 2, 10, U).unwrap();
    }
    // Uploaded, never deployed: nothing uses it.
    s.put_module(&digest(b"orphan"), b"orphan").unwrap();
    s.set_env(
        "a",
        "web",
        BTreeMap::from([("K".into(), "sealed-elsewhere".into())]),
    )
    .unwrap();
    s.create_token(TokenRecord {
        tenant: "a".into(),
        name: "ci".into(),
        token_sha256: "hash-of-ci".into(),
        created_at: 2,
    })
    .unwrap();
    s.create_node_identity(NodeIdentityRecord {
        name: "edge-1".into(),
        token_sha256: "hash-of-edge-1".into(),
        created_at: 3,
    })
    .unwrap();
    s.put_certificate(CertRecord {
        hostname: "a.example.com".into(),
        tenant: "a".into(),
        cert_chain_pem: "chain".into(),
        private_key_sealed: "sealed".into(),
        names: vec!["a.example.com".into()],
        not_before: 0,
        not_after: 1,
        created_at: 4,
    })
    .unwrap();
    (dir, s)
}

#[test]
fn a_copy_moves_every_record_and_the_modules_in_use() {
    let (_dir, sled) = populated();
    let etcd = Etcd::start();
    let blob_dir = tempfile::tempdir().unwrap();
    let blobs = DirBlobs::open(blob_dir.path()).unwrap();
    let target = client(&etcd, "/moved");
    let copied = sled.copy_into(&target, &blobs, "test").unwrap();

    assert_eq!(records(&target), records(&sled.kv));
    assert_eq!(copied.revision, sled.revision().unwrap());
    assert_eq!(copied.records["apps"], 151);
    // The modules versions use move; one nothing uses stays behind.
    assert_eq!(copied.modules, 3);
    for body in [&b"one"[..], b"two", b"three"] {
        assert_eq!(blobs.get(&digest(body)).unwrap().as_deref(), Some(body));
    }
    assert_eq!(blobs.get(&digest(b"orphan")).unwrap(), None);

    // The copy opens as a store and goes on from the same revision.
    let store = EtcdStore::from_kv(target, Arc::new(blobs)).unwrap();
    assert_eq!(store.revision().unwrap(), copied.revision);
    assert_eq!(store.deployments("a", "web").unwrap().len(), 3);
    let (_, revision) = store.deploy("a", "web", &digest(b"two"), 2, 11, U).unwrap();
    assert_eq!(revision, copied.revision + 1);

    // Copying again into it is refused and changes nothing.
    let again = client(&etcd, "/moved");
    let before = records(&again);
    let err = sled
        .copy_into(&again, &store_blobs(&blob_dir), "test")
        .unwrap_err();
    assert!(matches!(err, StoreError::Exists(_)), "{err}");
    assert_eq!(records(&again), before);
}

fn store_blobs(dir: &tempfile::TempDir) -> DirBlobs {
    DirBlobs::open(dir.path()).unwrap()
}

#[test]
fn a_copy_that_stopped_midway_is_not_served_and_a_rerun_finishes_it() {
    let (_dir, sled) = populated();
    let etcd = Etcd::start();
    let blob_dir = tempfile::tempdir().unwrap();
    // What a copy interrupted after its first batch leaves.
    let partial = client(&etcd, "/partial");
    partial
        .apply(&[
            Write::Put(Tree::Meta, MIGRATING.to_vec(), b"/srv/outpost".to_vec()),
            Write::Put(Tree::Tenants, b"a".to_vec(), b"{}".to_vec()),
        ])
        .unwrap();
    let refused = EtcdStore::from_kv(partial, Arc::new(store_blobs(&blob_dir)));
    let err = refused.err().expect("a half-copied store is refused");
    assert!(err.to_string().contains("control-plane migrate"), "{err}");

    // Another installation may not finish it; the same one does.
    let partial = client(&etcd, "/partial");
    let other = sled
        .copy_into(&partial, &store_blobs(&blob_dir), "/srv/elsewhere")
        .unwrap_err();
    assert!(other.to_string().contains("/srv/outpost"), "{other}");
    sled.copy_into(&partial, &store_blobs(&blob_dir), "/srv/outpost")
        .unwrap();
    assert_eq!(partial.get(Tree::Meta, MIGRATING).unwrap(), None);
    assert_eq!(records(&partial), records(&sled.kv));
    EtcdStore::from_kv(partial, Arc::new(store_blobs(&blob_dir))).unwrap();
}

#[test]
fn a_prefix_with_records_but_no_revision_is_still_refused() {
    let (_dir, sled) = populated();
    let etcd = Etcd::start();
    let blob_dir = tempfile::tempdir().unwrap();
    let used = client(&etcd, "/used");
    used.apply(&[Write::Put(
        Tree::NodeIdentities,
        b"edge-9".to_vec(),
        b"{}".to_vec(),
    )])
    .unwrap();
    let err = sled
        .copy_into(&used, &store_blobs(&blob_dir), "test")
        .unwrap_err();
    assert!(err.to_string().contains("node_identities"), "{err}");
    assert_eq!(used.scan(Tree::Tenants, b"").unwrap(), Vec::new());
}
