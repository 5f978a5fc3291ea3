//! One tenant's app that cannot load on a node never stalls the fleet:
//! the node leaves that app out (its routes answer 503 `app_unavailable`)
//! and applies every other change of the same revision, and of the next.

use serde_json::Value;

use crate::support::{ADMIN, ControlPlane, EdgeNode};
use outpost_test_fixtures as fixtures;

/// A module that fails only on the node (its pool is smaller than what the
/// control plane accepts: simulated here with a table cap of 100 elements
/// against a 1000-element table) leaves only its own app out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_fails_on_a_node_leaves_every_other_change_applied() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let acme = cp.tenant_with_web_app("acme").await;
    let beta = cp.tenant_with_web_app("beta").await;
    cp.deploy_to("web", &beta, fixtures::hello("beta v1\n"))
        .await;
    let node = EdgeNode::start_with(cp.addr, cache.path(), "small", |config| {
        config.pool.max_table_elements = 100;
    })
    .await;
    node.until_serves("beta.example.com", "beta v1\n").await;

    // acme's module passes the control plane, not this node's pool.
    cp.deploy_to("web", &acme, fixtures::huge_table(1000)).await;
    // In the same stream, beta deploys again: it must arrive.
    cp.deploy_to("web", &beta, fixtures::hello("beta v2\n"))
        .await;
    node.until_serves("beta.example.com", "beta v2\n").await;
    let (status, body) = node.get_with_error("acme.example.com").await;
    assert_eq!((status, body.as_str()), (503, "app_unavailable"));
    let text = node.metrics.render();
    assert!(
        text.lines()
            .any(|l| l == "outpost_runtime_apps_unavailable 1"),
        "{text}"
    );

    // The node says so, and the API tells acme (and the admin) why; beta
    // is told nothing of acme's app.
    let unavailable = |token: String| {
        let cp = &cp;
        async move {
            let (status, rollout) = cp.json("GET", "/v1/rollout", &token, Value::Null).await;
            assert_eq!(status, 200, "{rollout}");
            rollout["unavailable"].clone()
        }
    };
    let started = std::time::Instant::now();
    let seen = loop {
        let seen = unavailable(acme.clone()).await;
        if seen.is_array() || started.elapsed() > std::time::Duration::from_secs(30) {
            break seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(seen[0]["app"], "acme/web", "{seen}");
    assert_eq!(seen[0]["node"], "small", "{seen}");
    assert!(
        seen[0]["reason"].as_str().unwrap().contains("100"),
        "the reason names the pool's limit: {seen}"
    );
    assert_eq!(unavailable(ADMIN.to_string()).await, seen);
    assert_eq!(
        unavailable(beta.clone()).await,
        Value::Null,
        "beta sees acme's failure"
    );

    // `outpost deploy` of such a module stops waiting, says why and fails,
    // instead of timing out.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big-table.wasm");
    std::fs::write(&file, fixtures::huge_table(2000)).unwrap();
    let url = format!("http://{}", cp.addr);
    let file = file.to_str().unwrap().to_string();
    let args = [
        "outpost", "--json", "--url", &url, "--token", &acme, "deploy", "web", &file,
    ];
    let cli = <outpost_cli::args::Cli as clap::Parser>::try_parse_from(args).unwrap();
    let started = std::time::Instant::now();
    let err = outpost_cli::commands::run(cli)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not load on 1/1 node(s)") && err.contains("app_unavailable"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "it waited for the timeout"
    );

    // A node that restarts from its cache serves beta, and leaves acme out
    // again, instead of refusing to start.
    node.stop();
    let node = EdgeNode::start_with(cp.addr, cache.path(), "small", |config| {
        config.pool.max_table_elements = 100;
    })
    .await;
    assert_eq!(
        node.get("beta.example.com").await,
        (200, "beta v2\n".into())
    );

    // acme fixes its module: it serves again.
    cp.deploy_to("web", &acme, fixtures::hello("acme fixed\n"))
        .await;
    node.until_serves("acme.example.com", "acme fixed\n").await;
    let text = node.metrics.render();
    assert!(
        text.lines()
            .any(|l| l == "outpost_runtime_apps_unavailable 0"),
        "{text}"
    );
    let (status, _) = cp.json("GET", "/v1/apps/web", &acme, Value::Null).await;
    assert_eq!(status, 200);
    node.stop();
    cp.stop().await;
}
