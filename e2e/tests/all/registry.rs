//! Nodes pull module bytes from an OCI registry (Debian's
//! `docker-registry` on a loopback port) before asking the control plane,
//! check them against their digest whoever sent them, and fall back to
//! the control plane when the registry lacks a module, serves altered
//! bytes, or is down.

use outpost_oci::{Registry, RegistryConfig, digest_of};
use outpost_test_fixtures as fixtures;
use outpost_test_fixtures::registry::Registry as TestRegistry;

use crate::support::{ControlPlane, EdgeNode};

const HOST: &str = "web.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_pull_modules_from_the_registry_and_fall_back_to_the_control_plane() {
    let mut registry = TestRegistry::start();
    let config = RegistryConfig {
        url: registry.url("outpost/modules"),
        ..RegistryConfig::default()
    };
    let oci = Registry::new(&config).unwrap();
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let token = cp.acme_with_web_app().await;

    // In the registry: served from there, the control plane not asked.
    let v1 = fixtures::hello("v1 from the registry\n");
    oci.push(&digest_of(&v1), &v1).await.unwrap();
    cp.deploy(&token, v1).await;
    let node = EdgeNode::start_with(cp.addr, cache.path(), "edge-1", |c| {
        c.sync.as_mut().unwrap().registry = Some(config.clone());
    })
    .await;
    node.until_serves(HOST, "v1 from the registry\n").await;
    assert_eq!(node.module_fetches("registry", "ok"), 1.0);
    assert_eq!(node.module_fetches("control_plane", "ok"), 0.0);

    // Not in the registry: the control plane has it.
    cp.deploy(&token, fixtures::hello("v2 only on the control plane\n"))
        .await;
    node.until_serves(HOST, "v2 only on the control plane\n")
        .await;
    assert_eq!(node.module_fetches("registry", "miss"), 1.0);
    assert_eq!(node.module_fetches("control_plane", "ok"), 1.0);

    // Altered on the registry's disk: refused, the control plane's served.
    let v3 = fixtures::hello("v3, altered in the registry\n");
    let digest = digest_of(&v3);
    oci.push(&digest, &v3).await.unwrap();
    let hex = digest.trim_start_matches("sha256:");
    let blob = registry
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut evil = v3.clone();
    let last = evil.len() - 1;
    evil[last] ^= 0xff;
    std::fs::write(&blob, &evil).unwrap();
    cp.deploy(&token, v3).await;
    node.until_serves(HOST, "v3, altered in the registry\n")
        .await;
    assert_eq!(node.module_fetches("registry", "error"), 1.0);
    assert_eq!(node.module_fetches("control_plane", "ok"), 2.0);

    // The registry down: the control plane again.
    let v4 = fixtures::hello("v4 while the registry is down\n");
    oci.push(&digest_of(&v4), &v4).await.unwrap();
    registry.stop();
    cp.deploy(&token, v4).await;
    node.until_serves(HOST, "v4 while the registry is down\n")
        .await;
    assert_eq!(node.module_fetches("registry", "error"), 2.0);
    assert_eq!(node.module_fetches("control_plane", "ok"), 3.0);
    assert_eq!(node.module_fetches("registry", "ok"), 1.0);
}
