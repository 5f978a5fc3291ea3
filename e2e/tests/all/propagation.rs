//! Load scenarios (the full-size ones are not part of the normal test run;
//! `loadtests/propagation.sh` runs them in release and records the numbers
//! in `loadtests/README.md`; a ten-app storm runs with every test run):
//!
//! - deploy-to-served propagation over 100 deploys to two nodes, through
//!   one control plane on sled and through two on etcd;
//! - a deploy storm: 100 new apps deployed while traffic flows to a steady
//!   app on both nodes, counting every failed request.
//!
//! Bounded: 100 deploys, 100 apps, a 30 s cap per wait; loopback only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::{ControlPlane, EdgeNode};
use outpost_oci::RegistryConfig;
use outpost_test_fixtures as fixtures;
use outpost_test_fixtures::etcd::Etcd;
use outpost_test_fixtures::registry::Registry;
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn setup() -> (
    tempfile::TempDir,
    [tempfile::TempDir; 2],
    ControlPlane,
    String,
    [EdgeNode; 2],
) {
    let data = tempfile::tempdir().unwrap();
    let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let token = cp.acme_with_web_app().await;
    let nodes = [
        EdgeNode::start(cp.addr, caches[0].path(), "edge-1").await,
        EdgeNode::start(cp.addr, caches[1].path(), "edge-2").await,
    ];
    (data, caches, cp, token, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load scenario: run by loadtests/propagation.sh"]
async fn deploy_to_served_propagation() {
    let (_data, _caches, cp, token, nodes) = setup().await;
    propagation(&cp, &token, &nodes, "one control plane on sled").await;
    let [a, b] = nodes;
    a.stop();
    b.stop();
    cp.stop().await;
}

/// The same deploys through two control planes on a 3-member etcd, with
/// module bytes in a registry: the first node follows the control plane
/// deployed through, the second the other one, which learns of each
/// deploy from etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load scenario: run by loadtests/propagation.sh"]
async fn deploy_to_served_propagation_through_etcd() {
    let etcd = Etcd::cluster(3);
    let registry = Registry::start();
    let registry_config = RegistryConfig {
        url: registry.url("outpost/modules"),
        ..RegistryConfig::default()
    };
    let planes = crate::ha::TwoPlanes::start(&etcd, &registry_config).await;
    let (cps, token, nodes) = (planes.cps, planes.token, planes.nodes);
    let label = "2 control planes on a 3-member etcd, modules in a registry";
    propagation(&cps[0], &token, &nodes, label).await;
    for node in nodes {
        node.stop();
    }
    for cp in cps {
        cp.stop().await;
    }
}

/// 100 deploys through `cp`, each timed until every node serves it.
async fn propagation(cp: &ControlPlane, token: &str, nodes: &[EdgeNode], label: &str) {
    let mut took = Vec::new();
    for i in 0..100 {
        let body = format!("v{i}\n");
        let started = std::time::Instant::now();
        cp.deploy(token, fixtures::hello(&body)).await;
        for node in nodes {
            node.until_serves("web.example.com", &body).await;
        }
        took.push(started.elapsed());
    }
    took.sort();
    println!(
        "propagation over {} deploys to {} nodes, {label} (upload + validate + store + push + fetch + compile + swap): p50 {:?}, p99 {:?}, max {:?}",
        took.len(),
        nodes.len(),
        percentile(&took, 0.50),
        percentile(&took, 0.99),
        took[took.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load scenario: run by loadtests/propagation.sh"]
async fn deploy_storm_under_traffic() {
    deploy_storm(100).await;
}

/// The same storm, small enough for every test run: no request fails
/// while ten apps are created and deployed beside a steady one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_deploy_storm_fails_no_request() {
    deploy_storm(10).await;
}

/// `apps` new apps created and deployed while traffic flows to a steady
/// app on both nodes; every request must succeed.
async fn deploy_storm(apps: usize) {
    let (_data, _caches, cp, token, nodes) = setup().await;
    cp.deploy(&token, fixtures::hello("steady\n")).await;
    for node in &nodes {
        node.until_serves("web.example.com", "steady\n").await;
    }
    let nodes = Arc::new(nodes);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic: Vec<_> = (0..4)
        .map(|i| {
            let (nodes, stop, ok, failed) =
                (nodes.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let got = nodes[i % 2].get("web.example.com").await;
                    if got == (200, "steady\n".to_string()) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("traffic saw {got:?}");
                    }
                }
            })
        })
        .collect();

    let started = std::time::Instant::now();
    for i in 0..apps {
        let name = format!("app{i}");
        let (status, body) = cp
            .json(
                "POST",
                "/v1/apps",
                &token,
                json!({"name": name, "routes": [format!("{name}.example.com")]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        cp.deploy_to(&name, &token, fixtures::hello(&format!("{name}\n")))
            .await;
    }
    let last = format!("app{}", apps - 1);
    for node in nodes.iter() {
        node.until_serves(&format!("{last}.example.com"), &format!("{last}\n"))
            .await;
    }
    let storm = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.await.unwrap();
    }
    for i in 0..apps {
        for node in nodes.iter() {
            let name = format!("app{i}");
            assert_eq!(
                node.get(&format!("{name}.example.com")).await,
                (200, format!("{name}\n"))
            );
        }
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "deploy storm: {apps} apps created and deployed in {storm:?}, all served by both nodes; traffic meanwhile: {ok} ok, {failed} failed"
    );
    assert_eq!(failed, 0, "traffic saw errors during the storm");
    assert!(ok > 0, "no traffic flowed during the storm");
    let nodes = Arc::try_unwrap(nodes).ok().unwrap();
    let [a, b] = nodes;
    a.stop();
    b.stop();
    cp.stop().await;
}
