//! Tenant boundaries seen from outside, over real HTTP with a real node:
//! grants, revoked tokens, a disabled tenant's hosts answering 403 on the
//! node while its neighbour serves, a deleted tenant leaving nothing
//! behind, and a fleet-sized snapshot (5 000 apps) syncing to a fresh node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_control_plane::api::DEFAULT_MAX_MODULE_BYTES;
use outpost_control_plane::store::{Allowance, AppRecord, SledStore, Store, TenantRecord};
use serde_json::json;

use crate::support::{ADMIN, ControlPlane, EdgeNode};
use outpost_test_fixtures as fixtures;

/// Waits (bounded) until `host` answers `status` with `code` on `node`.
async fn until_answers(node: &EdgeNode, host: &str, status: u16, code: &str) {
    let started = Instant::now();
    loop {
        let got = node.get_with_error(host).await;
        if got == (status, code.to_string()) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{host} still answers {got:?}, not {status} {code:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Over HTTP: a tenant granted nothing routes nothing (403
/// `domain_not_granted`), and a revoked token is 401 on its next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_need_a_grant_and_a_revoked_token_is_refused_at_once() {
    let data = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let (status, created) = cp
        .json("POST", "/v1/tenants", ADMIN, json!({"name": "bare"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let bare = created["token"].as_str().unwrap().to_string();
    let app = json!({"name": "web", "routes": ["web.example.com"]});
    let (status, body) = cp.json("POST", "/v1/apps", &bare, app.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("domain_not_granted")),
        "{body}"
    );
    let (status, body) = cp
        .json(
            "PUT",
            "/v1/tenants/bare/domains",
            ADMIN,
            json!({"domains": ["example.com"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cp.json("POST", "/v1/apps", &bare, app).await;
    assert_eq!(status, 201, "{body}");

    let (status, body) = cp
        .json("POST", "/v1/tokens", &bare, json!({"name": "laptop"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let laptop = body["token"].as_str().unwrap().to_string();
    let (status, _) = cp.json("GET", "/v1/apps", &laptop, json!(null)).await;
    assert_eq!(status, 200);
    let (status, _) = cp
        .call("DELETE", "/v1/tokens/laptop", &bare, "", Vec::new())
        .await;
    assert_eq!(status, 204);
    let (status, body) = cp.json("GET", "/v1/apps", &laptop, json!(null)).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = cp.json("GET", "/v1/apps", &bare, json!(null)).await;
    assert_eq!(status, 200);
    cp.stop().await;
}

/// The admin disables acme: on the node every acme host answers 403
/// `tenant_disabled` without running anything, while beta's keeps
/// serving; enabled, acme serves again. Deleted, acme's host is the node's
/// 404, and beta may claim it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_tenants_hosts_answer_403_on_the_node_and_its_neighbour_serves() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let acme = cp.tenant("acme").await;
    let beta = cp.tenant("beta").await;
    for (token, host) in [(&acme, "shop.acme.example"), (&beta, "web.beta.example")] {
        let app = json!({"name": "web", "routes": [host]});
        let (status, body) = cp.json("POST", "/v1/apps", token, app).await;
        assert_eq!(status, 201, "{body}");
        cp.deploy(token, fixtures::hello(&format!("{host}\n")))
            .await;
    }
    let node = EdgeNode::start(cp.addr, cache.path(), "edge-1").await;
    node.until_serves("shop.acme.example", "shop.acme.example\n")
        .await;
    node.until_serves("web.beta.example", "web.beta.example\n")
        .await;

    let (status, body) = cp
        .call("POST", "/v1/tenants/acme/disable", ADMIN, "", Vec::new())
        .await;
    assert_eq!(status, 200, "{body}");
    until_answers(&node, "shop.acme.example", 403, "tenant_disabled").await;
    node.until_serves("web.beta.example", "web.beta.example\n")
        .await;
    let counted = node.metric(r#"outpost_http_unrouted_requests_total{reason="tenant_disabled"}"#);
    assert!(counted >= 1.0, "tenant_disabled answers not counted");
    // Its token can look but not change.
    let (status, body) = cp
        .call(
            "POST",
            "/v1/apps/web/deployments",
            &acme,
            "application/wasm",
            fixtures::hello("sneak\n"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("tenant_disabled")),
        "{body}"
    );
    let (status, _) = cp.json("GET", "/v1/apps/web", &acme, json!(null)).await;
    assert_eq!(status, 200);

    let (status, _) = cp
        .call("POST", "/v1/tenants/acme/enable", ADMIN, "", Vec::new())
        .await;
    assert_eq!(status, 200);
    node.until_serves("shop.acme.example", "shop.acme.example\n")
        .await;

    let (status, _) = cp
        .call("DELETE", "/v1/tenants/acme", ADMIN, "", Vec::new())
        .await;
    assert_eq!(status, 204);
    until_answers(&node, "shop.acme.example", 404, "unknown_host").await;
    let (status, _) = cp.json("GET", "/v1/apps", &acme, json!(null)).await;
    assert_eq!(status, 401);
    let take = json!({"name": "shop", "routes": ["shop.acme.example"]});
    let (status, body) = cp.json("POST", "/v1/apps", &beta, take).await;
    assert_eq!(
        status, 201,
        "the deleted tenant's host stayed taken: {body}"
    );
    cp.deploy_to("shop", &beta, fixtures::hello("beta shop\n"))
        .await;
    node.until_serves("shop.acme.example", "beta shop\n").await;
    node.stop();
    cp.stop().await;
}

/// 5 000 apps of 50 tenants: the snapshot goes in bounded parts and a
/// fresh node serves them all. (Written to the store directly: uploading
/// 5 000 components through the API would measure the validator, not the
/// sync.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_5000_apps_syncs_to_a_fresh_node() {
    const TENANTS: usize = 50;
    const APPS: usize = 100;
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let store = SledStore::open(data.path()).unwrap();
    let wasm = fixtures::hello("one of many\n");
    let digest = outpost_runtime::disk::digest_of(&wasm);
    let built = Instant::now();
    for t in 0..TENANTS {
        let tenant = format!("t{t}");
        store
            .create_tenant(TenantRecord {
                name: tenant.clone(),
                token_sha256: format!("not-a-token-{t}"),
                limits: Default::default(),
                created_at: 0,
                domains: vec!["example.com".into()],
                disabled: false,
                quotas: Default::default(),
            })
            .unwrap();
        for a in 0..APPS {
            let name = format!("app{a}");
            let record = AppRecord {
                tenant: tenant.clone(),
                name: name.clone(),
                routes: vec![format!("{name}.{tenant}.example.com")],
                // Written straight to the store in clear, as records from
                // before env sealing were: the snapshot still serves them.
                env: [("APP".to_string(), format!("{tenant}/{name}"))].into(),
                env_sealed: false,
                active_version: None,
                versions: 0,
                kept: Vec::new(),
                allow_outbound: Vec::new(),
                created_at: 0,
            };
            store.create_app(record, &Allowance::UNLIMITED).unwrap();
            store
                .deploy_module(&tenant, &name, &digest, &wasm, 0, &Allowance::UNLIMITED)
                .unwrap();
        }
    }
    eprintln!("5000 apps stored in {:?}", built.elapsed());
    let store: Arc<dyn Store> = Arc::new(store);
    let revision = store.revision().unwrap();
    let cp = ControlPlane::start_with(
        store,
        "127.0.0.1:0".parse().unwrap(),
        DEFAULT_MAX_MODULE_BYTES,
    )
    .await;

    let (status, lines) = cp.watch_lines_until("snapshot_end").await;
    assert_eq!(status, 200);
    let longest = lines.iter().map(String::len).max().unwrap();
    assert!(
        longest <= outpost_proto::SNAPSHOT_PART_BYTES + 512 * 1024,
        "a {longest}-byte line"
    );

    let synced = Instant::now();
    let node = EdgeNode::start(cp.addr, cache.path(), "fresh").await;
    loop {
        let applied = node.metric("outpost_sync_applied_revision");
        if applied >= revision as f64 {
            break;
        }
        assert!(
            synced.elapsed() < Duration::from_secs(600),
            "the node applied revision {applied} of {revision} after {:?}",
            synced.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("5000 apps synced in {:?}", synced.elapsed());
    for (t, a) in [(0, 0), (17, 42), (TENANTS - 1, APPS - 1)] {
        let host = format!("app{a}.t{t}.example.com");
        node.until_serves(&host, "one of many\n").await;
    }
    node.stop();
    cp.stop().await;
}

/// One tenant uploads components that take the compiler a while, three at
/// once (one more than its share of the validation slots): its third is
/// 429 `uploads_busy`, and meanwhile another tenant's small deploy is
/// accepted (never 429) and goes live on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_deploy_goes_live_while_one_tenant_uploads_in_parallel() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cp = Arc::new(ControlPlane::start(data.path(), "127.0.0.1:0".parse().unwrap()).await);
    let busy = cp.tenant("acme").await;
    let quiet = cp.tenant("beta").await;
    for (token, host) in [(&busy, "big.acme.example"), (&quiet, "small.beta.example")] {
        let app = json!({"name": "web", "routes": [host]});
        let (status, body) = cp.json("POST", "/v1/apps", token, app).await;
        assert_eq!(status, 201, "{body}");
    }
    let node = EdgeNode::start(cp.addr, cache.path(), "edge-1").await;

    let heavy: Vec<Vec<u8>> = (0..3)
        .map(|i| fixtures::hello_slow_to_compile(&format!("big {i}\n"), 3000))
        .collect();
    let started = Instant::now();
    let uploads: Vec<_> = heavy
        .into_iter()
        .map(|wasm| {
            let (cp, token) = (cp.clone(), busy.clone());
            tokio::spawn(async move {
                cp.call(
                    "POST",
                    "/v1/apps/web/deployments",
                    &token,
                    "application/wasm",
                    wasm,
                )
                .await
            })
        })
        .collect();
    // The busy tenant's uploads are being compiled: the third is refused
    // as soon as the first two hold its slots.
    let (status, body) = cp
        .call(
            "POST",
            "/v1/apps/web/deployments",
            &quiet,
            "application/wasm",
            fixtures::hello("small\n"),
        )
        .await;
    assert_eq!(status, 201, "the quiet tenant's deploy was refused: {body}");
    node.until_serves("small.beta.example", "small\n").await;
    let live = started.elapsed();
    let mut statuses = Vec::new();
    for upload in uploads {
        let (status, body) = upload.await.unwrap();
        if status == 429 {
            assert_eq!(body["error"]["code"], "uploads_busy", "{body}");
        }
        statuses.push(status);
    }
    statuses.sort();
    eprintln!(
        "quiet tenant live after {live:?}; busy tenant's uploads {statuses:?} after {:?}",
        started.elapsed()
    );
    assert_eq!(
        statuses,
        [201, 201, 429],
        "the busy tenant's three uploads did not overlap"
    );
    node.stop();
    if let Ok(cp) = Arc::try_unwrap(cp) {
        cp.stop().await;
    }
}
