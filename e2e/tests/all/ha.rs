//! Several control planes over one etcd, module bytes in one registry
//! (real etcd and a real CNCF distribution registry, on loopback ports,
//! started by the tests' fixtures): nodes following either control plane
//! serve what was deployed through the other, modules come from the
//! registry, and two control planes racing for one new route never both
//! win.

use std::time::{Duration, Instant};

use outpost_control_plane::api::DEFAULT_MAX_MODULE_BYTES;
use outpost_control_plane::config::{EtcdConfig, ServerConfig};
use outpost_oci::RegistryConfig;
use outpost_test_fixtures as fixtures;
use outpost_test_fixtures::etcd::Etcd;
use outpost_test_fixtures::registry::Registry;
use serde_json::json;

use crate::support::{ADMIN, CERT_KEY, ControlPlane, EdgeNode, config};

const HOST: &str = "web.example.com";

/// A control plane named `name` on 127.0.0.1:0 over `etcd`, pushing
/// modules to `registry`.
pub(crate) async fn control_plane(
    etcd: &Etcd,
    registry: &RegistryConfig,
    name: &str,
) -> ControlPlane {
    control_plane_under(etcd, "/outpost-ha", registry, name).await
}

/// [`control_plane`] with its keys under `prefix`.
pub(crate) async fn control_plane_under(
    etcd: &Etcd,
    prefix: &str,
    registry: &RegistryConfig,
    name: &str,
) -> ControlPlane {
    let mut c = config(
        "127.0.0.1:0".parse().unwrap(),
        DEFAULT_MAX_MODULE_BYTES,
        ServerConfig {
            shutdown_grace: Duration::from_secs(1),
            ..ServerConfig::default()
        },
    );
    c.cert_key = Some(CERT_KEY.into());
    c.name = Some(name.into());
    c.etcd = Some(EtcdConfig {
        endpoints: etcd.endpoints(),
        prefix: prefix.into(),
        user: None,
        ca_file: None,
        registry: registry.clone(),
    });
    ControlPlane::start_from(c).await
}

/// Waits until `cp`'s `GET /v1/nodes` says each `(node, control plane)`
/// of `want`: within a few publishing rounds.
async fn until_fleet(cp: &ControlPlane, want: &[(&str, &str)]) {
    let started = Instant::now();
    loop {
        let (status, nodes) = cp.json("GET", "/v1/nodes", ADMIN, json!(null)).await;
        assert_eq!(status, 200, "{nodes}");
        let follows = |id: &str| {
            nodes.as_array().unwrap().iter().find_map(|n| {
                (n["id"] == id).then(|| n["control_plane"].as_str().unwrap_or("").to_string())
            })
        };
        if want
            .iter()
            .all(|(id, cp)| follows(id).as_deref() == Some(*cp))
        {
            return;
        }
        assert!(
            started.elapsed() < outpost_control_plane::fleet::INTERVAL * 3,
            "GET /v1/nodes never showed {want:?}: {nodes}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two control planes (`cp-0`, `cp-1`) over `etcd` and `registry`, the
/// tenant `acme` with its app `web` made through the first, and a node
/// following each (`edge-0`, `edge-1`), pulling from the registry.
pub(crate) struct TwoPlanes {
    pub cps: [ControlPlane; 2],
    pub token: String,
    pub nodes: Vec<EdgeNode>,
    _caches: [tempfile::TempDir; 2],
}

impl TwoPlanes {
    pub(crate) async fn start(etcd: &Etcd, registry: &RegistryConfig) -> TwoPlanes {
        let cps = [
            control_plane(etcd, registry, "cp-0").await,
            control_plane(etcd, registry, "cp-1").await,
        ];
        let token = cps[0].acme_with_web_app().await;
        let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut nodes = Vec::new();
        for (i, cp) in cps.iter().enumerate() {
            let registry = registry.clone();
            nodes.push(
                EdgeNode::start_with(cp.addr, caches[i].path(), &format!("edge-{i}"), |c| {
                    c.sync.as_mut().unwrap().registry = Some(registry);
                })
                .await,
            );
        }
        TwoPlanes {
            cps,
            token,
            nodes,
            _caches: caches,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_on_etcd_serve_one_fleet_and_race_fairly() {
    let etcd = Etcd::start();
    let registry = Registry::start();
    let registry_config = RegistryConfig {
        url: registry.url("outpost/modules"),
        ..RegistryConfig::default()
    };
    // The tenant and app are made through the first; the second sees them.
    let TwoPlanes {
        cps,
        token,
        nodes,
        _caches,
    } = TwoPlanes::start(&etcd, &registry_config).await;

    // A deploy through either control plane reaches the nodes of both.
    for (i, cp) in cps.iter().enumerate() {
        let body = format!("v{i} through control plane {i}\n");
        cp.deploy(&token, fixtures::hello(&body)).await;
        for node in &nodes {
            let took = node.until_serves(HOST, &body).await;
            println!("deploy through cp{i} served by a node in {took:?}");
        }
    }
    // Either control plane lists the whole fleet, and which one each
    // node follows.
    for cp in &cps {
        until_fleet(cp, &[("edge-0", "cp-0"), ("edge-1", "cp-1")]).await;
    }

    // Every module came from the registry, none from a control plane.
    for node in &nodes {
        assert_eq!(node.module_fetches("registry", "ok"), 2.0);
        assert_eq!(node.module_fetches("control_plane", "ok"), 0.0);
    }

    // 100 races for a fresh route, one request to each control plane at
    // once: exactly one wins each time, and the loser is told why.
    for round in 0..100 {
        let route = format!("race-{round}.example.com");
        let body = |app: String| json!({"name": app, "routes": [route.clone()]});
        let (a, b) = tokio::join!(
            cps[0].json("POST", "/v1/apps", &token, body(format!("a-{round}"))),
            cps[1].json("POST", "/v1/apps", &token, body(format!("b-{round}")))
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}: {a:?} {b:?}");
        let loser = if a.0 == 409 { &a.1 } else { &b.1 };
        assert_eq!(loser["error"]["code"], "route_taken", "{loser}");
    }
    let (status, apps) = cps[1].json("GET", "/v1/apps", &token, json!(null)).await;
    assert_eq!(status, 200);
    assert_eq!(apps.as_array().unwrap().len(), 101, "{apps}");

    // /healthz says when etcd stops answering, and when it is back: the
    // revision is read every 250 ms and a read gives up after 5 s.
    let cp = &cps[1];
    let health = || cp.call("GET", "/healthz", ADMIN, "text/plain", Vec::new());
    assert_eq!(health().await.0, 200);
    etcd.freeze();
    let frozen = Instant::now();
    while health().await.0 != 503 {
        assert!(
            frozen.elapsed() < Duration::from_secs(9),
            "healthz still 200 {:?} after etcd froze",
            frozen.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("healthz 503 {:?} after etcd froze", frozen.elapsed());
    etcd.thaw();
    let thawed = Instant::now();
    while health().await.0 != 200 {
        assert!(
            thawed.elapsed() < Duration::from_secs(9),
            "healthz still 503"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A node listing both control planes follows the first; when it goes
    // away the node moves to the second and keeps receiving changes.
    let urls = format!("http://{},http://{}", cps[0].addr, cps[1].addr);
    let cache = tempfile::tempdir().unwrap();
    let both = EdgeNode::start_with(cps[0].addr, cache.path(), "edge-both", |c| {
        c.sync.as_mut().unwrap().url = urls.clone();
    })
    .await;
    both.until_serves(HOST, "v1 through control plane 1\n")
        .await;
    let on = |node: &EdgeNode, cp: &ControlPlane| {
        let series = format!("outpost_sync_control_plane{{url=\"http://{}\"}} 1", cp.addr);
        node.metrics_text().lines().any(|l| l == series)
    };
    assert!(on(&both, &cps[0]));
    let [cp0, cp1] = cps;
    let stopped = Instant::now();
    cp0.stop().await;
    while !on(&both, &cp1) {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "the node still follows the stopped control plane"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let moved = stopped.elapsed();
    cp1.deploy(&token, fixtures::hello("after the failover\n"))
        .await;
    both.until_serves(HOST, "after the failover\n").await;
    until_fleet(&cp1, &[("edge-both", "cp-1")]).await;
    let (_, scrape) = cp1
        .call("GET", "/metrics", ADMIN, "text/plain", Vec::new())
        .await;
    let scrape = scrape.as_str().unwrap();
    assert!(
        scrape
            .contains(r#"outpost_cp_node_control_plane{control_plane="cp-1",node="edge-both"} 1"#),
        "{scrape}"
    );
    println!(
        "failover: the node followed the other control plane {moved:?} after the first stopped; it served a deploy through it {:?} after the stop",
        stopped.elapsed()
    );
}
