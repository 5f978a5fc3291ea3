//! The edge node's on-disk cache under corruption: a truncated, emptied or
//! altered module, and a truncated or altered snapshot (sealed, or in the
//! clear form written before sealing), are detected and never served — the
//! node waits for the control plane and refetches — and a truncated
//! compiled entry is recompiled.
//!
//! This lives beside the control plane's tests because it needs the real
//! control plane and sync path (`support::ControlPlane`, `support::EdgeNode`)
//! to fill the cache and to refetch from; the edge-node crate cannot
//! depend on the control plane.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::support::{ControlPlane, EdgeNode, NODE};
use outpost_edge_node::Node;
use outpost_edge_node::metrics::Metrics;
use outpost_edge_node::sync::{self, Cache};
use outpost_runtime::{Limits, PoolConfig, Runtime};
use outpost_test_fixtures as fixtures;

const HOST: &str = "web.example.com";
const BODY: &str = "cached-v1\n";

/// The one file in `dir` with extension `ext`.
fn only_file(dir: &Path, ext: &str) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// `haystack` with the first `from` replaced by `to` (same length).
fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = haystack
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(from)));
    let mut out = haystack.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

/// The cache in `cache_dir`, opened with the key the test nodes use.
fn cache_of(cache_dir: &Path) -> Cache {
    Cache::open(cache_dir, sync::cache::sealer_from_token(NODE)).unwrap()
}

/// `json` sealed as a cached snapshot (the header of `good`), but with the
/// key of another node token.
fn sealed_with_another_key(good: &[u8], json: &[u8]) -> Vec<u8> {
    let header_len = good.iter().position(|b| *b == b'\n').unwrap() + 1;
    let other = sync::cache::sealer_from_token("another-node-token");
    let mut bytes = good[..header_len].to_vec();
    bytes.extend_from_slice(&other.seal_bytes("outpost node cache: snapshot.json", json));
    bytes
}

/// What a node restoring from `cache_dir` alone (no control plane) does:
/// `Some(revision)` if it serves the cache.
async fn restore(cache_dir: &Path) -> Option<u64> {
    let node = Node::new(&PoolConfig::default(), Metrics::new()).unwrap();
    let cache = cache_of(cache_dir);
    sync::restore(&node, &cache, &Limits::default())
        .await
        .unwrap()
        .map(|snapshot| snapshot.revision)
}

/// Fills a cache through the real sync path; returns the control plane's
/// data dir, its address (now stopped) and the cache.
async fn filled_cache() -> (tempfile::TempDir, SocketAddr, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let token = cp.acme_with_web_app().await;
    cp.deploy(&token, fixtures::hello(BODY)).await;
    let node = EdgeNode::start(cp.addr, cache.path(), "n1").await;
    node.until_serves(HOST, BODY).await;
    node.stop();
    let addr = cp.addr;
    cp.stop().await;
    (data, addr, cache)
}

/// Every kind of damage to a cached module or snapshot makes `restore`
/// refuse the cache; the intact cache is served.
#[tokio::test]
async fn corrupt_cached_modules_and_snapshots_are_refused() {
    let (_data, _addr, cache) = filled_cache().await;
    let module = only_file(&cache.path().join("modules"), "wasm");
    let snapshot = cache.path().join("snapshot.json");
    let good_module = std::fs::read(&module).unwrap();
    let good_snapshot = std::fs::read(&snapshot).unwrap();
    assert!(
        restore(cache.path()).await.is_some(),
        "the intact cache is served"
    );

    // An altered module that is still a valid component answering other
    // text: only the digest check keeps it from running.
    let altered = replace(&good_module, b"cached-v1", b"CACHED-v1");
    let runtime = Runtime::new(&PoolConfig::default(), outpost_runtime::Metrics::new()).unwrap();
    runtime.check("altered", &altered).unwrap();
    // The snapshot is sealed: the route is not even there to alter.
    assert!(
        !good_snapshot
            .windows(HOST.len())
            .any(|w| w == HOST.as_bytes()),
        "the cached snapshot is sealed"
    );
    // A snapshot in the clear form of nodes from before sealing is still
    // served (an upgraded node keeps its cache), and altered in a way that
    // still parses (another route), only its checksum catches it.
    let json = serde_json::to_vec(&cache_of(cache.path()).snapshot().unwrap()).unwrap();
    let clear = |json: &[u8], sum_of: &[u8]| {
        let mut bytes = b"outpost-snapshot1 ".to_vec();
        bytes.extend_from_slice(outpost_runtime::disk::digest_of(sum_of).as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(json);
        bytes
    };
    std::fs::write(&snapshot, clear(&json, &json)).unwrap();
    assert!(
        restore(cache.path()).await.is_some(),
        "a clear snapshot from before sealing is served"
    );
    let moved_json = replace(&json, HOST.as_bytes(), b"wex.example.com");
    serde_json::from_slice::<serde_json::Value>(&moved_json).unwrap();
    let moved = clear(&moved_json, &json);
    let mut flipped = good_snapshot.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;

    let damage: Vec<(&str, &Path, Vec<u8>)> = vec![
        (
            "module truncated",
            &module,
            good_module[..good_module.len() / 2].to_vec(),
        ),
        ("module empty (torn write)", &module, Vec::new()),
        ("module altered, still valid wasm", &module, altered),
        (
            "snapshot truncated",
            &snapshot,
            good_snapshot[..good_snapshot.len() / 2].to_vec(),
        ),
        ("snapshot empty (torn write)", &snapshot, Vec::new()),
        (
            "snapshot with a route altered, still valid JSON",
            &snapshot,
            moved,
        ),
        ("snapshot with one bit flipped", &snapshot, flipped),
        (
            "snapshot sealed with another key",
            &snapshot,
            sealed_with_another_key(&good_snapshot, &json),
        ),
    ];
    for (what, path, bytes) in damage {
        std::fs::write(&module, &good_module).unwrap();
        std::fs::write(&snapshot, &good_snapshot).unwrap();
        std::fs::write(path, &bytes).unwrap();
        assert_eq!(
            restore(cache.path()).await,
            None,
            "{what}: the cache was served"
        );
    }

    // Leftovers of an interrupted write (the temp files `write_atomically`
    // renames) are ignored: the whole files beside them are served.
    std::fs::write(&module, &good_module).unwrap();
    std::fs::write(&snapshot, &good_snapshot).unwrap();
    std::fs::write(snapshot.with_extension("tmp"), b"{\"revision\": 99, \"ap").unwrap();
    std::fs::write(module.with_extension("tmp"), &good_module[..10]).unwrap();
    assert!(restore(cache.path()).await.is_some());
}

/// A node whose cached module was altered never runs it: while the app's
/// compiled code (compiled from the module as it arrived) is intact, that
/// serves and the module is not even read; without it, the node serves
/// nothing while the control plane is down, then refetches the real module
/// and repairs the cache. A truncated compiled entry is thrown away and
/// recompiled.
#[tokio::test]
async fn a_corrupt_cache_is_refetched_and_a_torn_compiled_entry_recompiled() {
    let (data, addr, cache) = filled_cache().await;
    let module = only_file(&cache.path().join("modules"), "wasm");
    let good_module = std::fs::read(&module).unwrap();
    std::fs::write(&module, replace(&good_module, b"cached-v1", b"CACHED-v1")).unwrap();

    // Control plane down, compiled code intact: the code validated from
    // the real module serves, loaded at the first request.
    let node = EdgeNode::start(addr, cache.path(), "n1").await;
    assert_eq!(node.get(HOST).await, (200, BODY.to_string()));
    node.stop();

    // Without the compiled code the module must be read: the node starts,
    // but does not run the altered module (nothing routes there yet).
    let compiled = only_file(&cache.path().join("compiled"), "cwasm");
    std::fs::remove_file(&compiled).unwrap();
    let node = EdgeNode::start(addr, cache.path(), "n1").await;
    let (status, body) = node.get(HOST).await;
    assert_eq!(status, 404, "served {body:?} from a corrupt cache");

    // Control plane back on the same address: the node refetches.
    let cp = ControlPlane::start(data.path(), addr).await;
    node.until_serves(HOST, BODY).await;
    assert_eq!(
        std::fs::read(&module).unwrap(),
        good_module,
        "cache repaired"
    );
    node.stop();

    // Tear the compiled entry in half: the next start recompiles it.
    let compiled = only_file(&cache.path().join("compiled"), "cwasm");
    let entry = std::fs::read(&compiled).unwrap();
    std::fs::write(&compiled, &entry[..entry.len() / 2]).unwrap();
    let node = EdgeNode::start(cp.addr, cache.path(), "n1").await;
    // Served from the restored cache, before any sync.
    assert_eq!(node.get(HOST).await, (200, BODY.to_string()));
    let metrics = node.metrics.render();
    let invalid = "outpost_runtime_compile_cache_lookups_total{result=\"invalid\"} 1";
    assert!(metrics.lines().any(|l| l == invalid), "{metrics}");
    // A whole entry again (wasmtime's output is deterministic for one
    // engine, but only "longer than the torn half" is needed here).
    assert!(
        std::fs::read(&compiled).unwrap().len() > entry.len() / 2,
        "the recompiled entry replaced the torn one"
    );
    node.stop();
    cp.stop().await;
}
