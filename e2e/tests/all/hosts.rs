//! A host belongs to exactly one tenant: once acme routes any path on
//! `shop.example.com`, another tenant can claim no path there — not a
//! longer prefix, not the bare host — and cannot replace acme's
//! certificates; the victim keeps answering every path it routes, and the
//! rest of its host is answered by the node, never by the other tenant.

use serde_json::{Value, json};

use crate::support::{ControlPlane, EdgeNode};
use outpost_runtime::cert::Certificate;
use outpost_test_fixtures as fixtures;

fn assert_host_taken(status: u16, body: &Value) {
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("host_taken")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains("acme"), "the owner is named: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_can_take_no_path_of_a_routed_host_nor_its_certificates() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let acme = cp.tenant("acme").await;
    let evil = cp.tenant("evil").await;
    let shop = json!({"name": "shop", "routes": ["shop.example.com/cart"]});
    let (status, body) = cp.json("POST", "/v1/apps", &acme, shop).await;
    assert_eq!(status, 201, "{body}");
    cp.deploy_to("shop", &acme, fixtures::hello("acme\n")).await;

    // The hijacks: a longer prefix, another path, the bare host — on
    // creation and by moving an existing app's routes.
    for route in [
        "shop.example.com/login",
        "shop.example.com/cart/evil",
        "shop.example.com",
        "SHOP.example.com/x",
    ] {
        let grab = json!({"name": "grab", "routes": [route]});
        let (status, body) = cp.json("POST", "/v1/apps", &evil, grab).await;
        assert_host_taken(status, &body);
    }
    let mine = json!({"name": "mine", "routes": ["evil.example.com"]});
    let (status, body) = cp.json("POST", "/v1/apps", &evil, mine).await;
    assert_eq!(status, 201, "{body}");
    cp.deploy_to("mine", &evil, fixtures::hello("evil\n")).await;
    let routes = json!({"routes": ["evil.example.com", "shop.example.com/login"]});
    let (status, body) = cp.json("PUT", "/v1/apps/mine/routes", &evil, routes).await;
    assert_host_taken(status, &body);

    // On the node: acme's path is acme's, the rest of its host is the
    // node's own 404, never evil's worker.
    let node = EdgeNode::start(cp.addr, cache.path(), "edge-1").await;
    node.until_serves("evil.example.com", "evil\n").await;
    let started = std::time::Instant::now();
    while node
        .get_path_with_error("shop.example.com", "/cart")
        .await
        .0
        != 200
    {
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for path in ["/login", "/", "/cart/evil"] {
        let (status, code) = node.get_path_with_error("shop.example.com", path).await;
        if path.starts_with("/cart") {
            assert_eq!(status, 200, "{path}");
        } else {
            assert_eq!((status, code.as_str()), (404, "unknown_host"), "{path}");
        }
    }

    // Certificates follow the host: evil can neither put one for acme's
    // host, nor replace acme's wildcard though it routes a sibling name,
    // nor delete it.
    let upload = |names: &[&str]| {
        let (_, chain, key) = Certificate::self_signed(names).unwrap();
        json!({"cert_chain_pem": chain, "private_key_pem": key})
    };
    let (status, body) = cp
        .json(
            "PUT",
            "/v1/certificates/*.example.com",
            &acme,
            upload(&["*.example.com"]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cp
        .json(
            "PUT",
            "/v1/certificates/*.example.com",
            &evil,
            upload(&["*.example.com"]),
        )
        .await;
    assert_host_taken(status, &body);
    let (status, body) = cp
        .json(
            "PUT",
            "/v1/certificates/shop.example.com",
            &evil,
            upload(&["shop.example.com"]),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = cp
        .json(
            "DELETE",
            "/v1/certificates/*.example.com",
            &evil,
            Value::Null,
        )
        .await;
    assert_eq!(status, 404);
    let (status, listed) = cp.json("GET", "/v1/certificates", &acme, Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["hostname"], "*.example.com", "{listed}");

    node.stop();
    cp.stop().await;
}
