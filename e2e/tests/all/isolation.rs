//! One tenant's app that cannot load on a node never stalls the fleet:
//! the node leaves that app out (its routes answer 503 `app_unavailable`)
//! and applies every other change of the same revision, and of the next.

use serde_json::{Value, json};

use crate::support::{ADMIN, ControlPlane, EdgeNode};
use outpost_test_fixtures as fixtures;

/// Creates tenant `name` with app `web` on `{name}.example.com`; returns
/// its token.
async fn tenant(cp: &ControlPlane, name: &str) -> String {
    let (status, body) = cp
        .json("POST", "/v1/tenants", ADMIN, json!({"name": name}))
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let app = json!({"name": "web", "routes": [format!("{name}.example.com")]});
    let (status, body) = cp.json("POST", "/v1/apps", &token, app).await;
    assert_eq!(status, 201, "{body}");
    token
}

/// A module that fails only on the node (its pool is smaller than what the
/// control plane accepts: simulated here with a table cap of 100 elements
/// against a 1000-element table) leaves only its own app out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_fails_on_a_node_leaves_every_other_change_applied() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let acme = tenant(&cp, "acme").await;
    let beta = tenant(&cp, "beta").await;
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
