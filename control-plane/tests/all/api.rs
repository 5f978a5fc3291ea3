//! The REST API driven through its axum router (no sockets), over a real
//! sled store in a temp dir and a real wasmtime validator.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use outpost_control_plane::api::{self, ApiState, Policy};
use outpost_control_plane::store::{SledStore, Store};
use outpost_runtime::Metrics;
use outpost_runtime::seal::Sealer;
use outpost_runtime::{PoolConfig, Runtime};
use outpost_test_fixtures as fixtures;
use serde_json::{Value, json};
use tower::ServiceExt;

pub(crate) const ADMIN: &str = "admin-secret";
pub(crate) const NODE: &str = "node-secret";
const MAX_MODULE: u64 = 1024 * 1024;

/// One validator per test binary: engines are not free to build. Shaped
/// like the control plane's (`PoolConfig::for_validation`), with slots for
/// every test running at once.
fn validator() -> Arc<Runtime> {
    static V: OnceLock<Arc<Runtime>> = OnceLock::new();
    V.get_or_init(|| {
        let pool = PoolConfig {
            max_instances: 32,
            ..PoolConfig::for_validation()
        };
        Arc::new(Runtime::new(&pool, Metrics::new()).unwrap())
    })
    .clone()
}

pub(crate) struct Api {
    _dir: tempfile::TempDir,
    router: Router,
    pub store: Arc<dyn Store>,
}

pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub raw: String,
}

impl Api {
    pub(crate) fn new() -> Api {
        Self::with_policy(Policy::default())
    }

    pub(crate) fn with_policy(policy: Policy) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let state = ApiState::new(
            store.clone(),
            ADMIN,
            Some(NODE),
            validator(),
            MAX_MODULE,
            Sealer::from_hex(&"42".repeat(32)).unwrap(),
        )
        .with_policy(policy);
        Api {
            _dir: dir,
            router: api::router(state),
            store,
        }
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body,
        ctype: &str,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.header("content-type", ctype).body(body).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, body, raw }
    }

    pub(crate) async fn json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Reply {
        self.call(
            method,
            path,
            token,
            Body::from(body.to_string()),
            "application/json",
        )
        .await
    }

    /// A request without a body (`POST …/disable`, `DELETE …`).
    pub(crate) async fn send(&self, method: &str, path: &str, token: Option<&str>) -> Reply {
        self.call(method, path, token, Body::empty(), "application/json")
            .await
    }

    /// Puts a fresh self-signed certificate for `host` as `token`.
    pub(crate) async fn put_certificate(&self, token: &str, host: &str) -> Reply {
        let (_, chain, key) = outpost_runtime::cert::Certificate::self_signed(&[host]).unwrap();
        self.json(
            "PUT",
            &format!("/v1/certificates/{host}"),
            Some(token),
            json!({"cert_chain_pem": chain, "private_key_pem": key}),
        )
        .await
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call("GET", path, token, Body::empty(), "application/json")
            .await
    }

    pub(crate) async fn deploy(&self, app: &str, token: &str, wasm: Vec<u8>) -> Reply {
        self.call(
            "POST",
            &format!("/v1/apps/{app}/deployments"),
            Some(token),
            Body::from(wasm),
            "application/wasm",
        )
        .await
    }

    /// Creates a tenant; returns its token.
    pub(crate) async fn tenant(&self, name: &str) -> String {
        let r = self
            .json(
                "POST",
                "/v1/tenants",
                Some(ADMIN),
                json!({"name": name, "domains": crate::support::TEST_DOMAINS}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
        assert_eq!(r.body["name"], name);
        r.body["token"].as_str().unwrap().to_string()
    }

    pub(crate) async fn app(&self, token: &str, name: &str, routes: &[&str]) -> Reply {
        self.json(
            "POST",
            "/v1/apps",
            Some(token),
            json!({"name": name, "routes": routes}),
        )
        .await
    }
}

pub(crate) fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.raw);
    assert_eq!(r.body["error"]["code"], code, "{}", r.raw);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[tokio::test]
async fn tokens_gate_every_endpoint() {
    let api = Api::new();
    let acme = api.tenant("acme").await;
    assert_error(
        &api.get("/v1/tenants", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &api.get("/v1/tenants", Some("nope")).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &api.get("/v1/tenants", Some(&acme)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &api.get("/v1/apps", Some(ADMIN)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &api.get("/v1/apps", Some(NODE)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &api.get("/v1/apps", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &api.get("/v1/modules/sha256:x", Some(&acme)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_eq!(
        api.get("/v1/apps", Some(&acme)).await.status,
        StatusCode::OK
    );
    assert_error(
        &api.get("/v1/nothing", Some(&acme)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn tenants_are_created_once_and_listed_without_tokens() {
    let api = Api::new();
    let token = api.tenant("acme").await;
    assert!(token.starts_with("opt_"));
    let dup = api
        .json("POST", "/v1/tenants", Some(ADMIN), json!({"name": "acme"}))
        .await;
    assert_error(&dup, StatusCode::CONFLICT, "exists");
    for bad in ["", "Acme", "-x", "a/b", &"x".repeat(64)] {
        let r = api
            .json("POST", "/v1/tenants", Some(ADMIN), json!({"name": bad}))
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_name");
    }
    let r = api
        .json("POST", "/v1/tenants", Some(ADMIN), json!({"nom": "x"}))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_json");
    let list = api.get("/v1/tenants", Some(ADMIN)).await;
    assert_eq!(
        list.body,
        json!([{
            "name": "acme",
            "limits": {},
            "apps": 0,
            "domains": crate::support::TEST_DOMAINS,
            "quotas": {},
            "usage": {"hosts": 0, "certificates": 0, "stored_bytes": 0},
        }])
    );
    assert!(!list.raw.contains(&token));

    let r = api
        .json(
            "PUT",
            "/v1/tenants/acme/limits",
            Some(ADMIN),
            json!({"fuel": 1000, "memory_mib": 64}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["limits"], json!({"fuel": 1000, "memory_mib": 64}));
    let r = api
        .json(
            "PUT",
            "/v1/tenants/acme/limits",
            Some(ADMIN),
            json!({"timeout_ms": 0}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_limits");
    let r = api
        .json("PUT", "/v1/tenants/ghost/limits", Some(ADMIN), json!({}))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn one_tenant_can_neither_see_nor_touch_anothers_apps() {
    let api = Api::new();
    let a = api.tenant("a").await;
    let b = api.tenant("b").await;
    assert_eq!(
        api.app(&a, "web", &["a.example.com"]).await.status,
        StatusCode::CREATED
    );
    assert_error(
        &api.get("/v1/apps/web", Some(&b)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(api.get("/v1/apps", Some(&b)).await.body, json!([]));
    let del = api
        .call("DELETE", "/v1/apps/web", Some(&b), Body::empty(), "")
        .await;
    assert_error(&del, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &api.deploy("web", &b, fixtures::hello("x")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let env = api
        .json("PUT", "/v1/apps/web/env", Some(&b), json!({"K": "v"}))
        .await;
    assert_error(&env, StatusCode::NOT_FOUND, "not_found");
    // The same app name is B's own business; A's host is not.
    let clash = api.app(&b, "web", &["A.Example.com"]).await;
    assert_error(&clash, StatusCode::CONFLICT, "host_taken");
    assert!(
        !clash.raw.contains("a/web"),
        "the owner leaked: {}",
        clash.raw
    );
    assert_eq!(
        api.app(&b, "web", &["b.example.com"]).await.status,
        StatusCode::CREATED
    );
    // A's app is untouched.
    let shown = api.get("/v1/apps/web", Some(&a)).await;
    assert_eq!(shown.body["routes"], json!(["a.example.com"]));
}

#[tokio::test]
async fn deploy_list_and_roll_back() {
    let api = Api::new();
    let t = api.tenant("acme").await;
    let created = api
        .app(&t, "web", &["web.example.com", "api.example.com/v2/"])
        .await;
    assert_eq!(
        created.body["routes"],
        json!(["web.example.com", "api.example.com/v2"])
    );
    assert_eq!(created.body["active_version"], Value::Null);

    let v1 = api.deploy("web", &t, fixtures::hello("v1")).await;
    assert_eq!(v1.status, StatusCode::CREATED, "{}", v1.raw);
    assert_eq!(v1.body["version"], 1);
    let digest = v1.body["digest"].as_str().unwrap().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let v2 = api.deploy("web", &t, fixtures::hello("v2")).await;
    assert_eq!(v2.body["version"], 2);
    assert_eq!(
        api.get("/v1/apps/web", Some(&t)).await.body["active_version"],
        2
    );

    let back = api
        .json(
            "POST",
            "/v1/apps/web/rollback",
            Some(&t),
            json!({"version": 1}),
        )
        .await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.raw);
    assert_eq!(back.body["active_version"], 1);
    let nope = api
        .json(
            "POST",
            "/v1/apps/web/rollback",
            Some(&t),
            json!({"version": 9}),
        )
        .await;
    assert_error(&nope, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        api.get("/v1/apps/web", Some(&t)).await.body["active_version"],
        1
    );

    let list = api.get("/v1/apps/web/deployments", Some(&t)).await;
    let versions: Vec<_> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].clone())
        .collect();
    assert_eq!(versions, [json!(1), json!(2)]);

    // Nodes fetch the module by digest with the node token.
    let module = api.get(&format!("/v1/modules/{digest}"), Some(NODE)).await;
    assert_eq!(module.status, StatusCode::OK);
    assert_error(
        &api.get("/v1/modules/sha256:none", Some(NODE)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn bad_uploads_are_refused_with_a_reason_and_change_nothing() {
    let api = Api::new();
    let t = api.tenant("acme").await;
    api.app(&t, "web", &["web.example.com"]).await;
    let revision = api.store.revision().unwrap();
    for (wasm, code, needle) in [
        (b"not wasm at all".to_vec(), "bad_wasm", "magic header"),
        (fixtures::core_module(), "bad_wasm", "component"),
        (fixtures::no_handler(), "bad_wasm", "incoming-handler"),
        (fixtures::unknown_import(), "bad_wasm", "outpost:missing"),
        (Vec::new(), "bad_wasm", "empty"),
        // These would fail on every node, leaving the app unavailable
        // everywhere: refused here instead. Two memories is more than the
        // pool gives a module, which the validator's pool (shaped like
        // the nodes') says when linking; the others compile and link, and
        // fail when instantiated once, as nodes do before serving.
        (
            fixtures::two_memories(),
            "bad_wasm",
            "defined memories count of 2 exceeds the per-instance limit of 1",
        ),
        // Past the per-component maxima nodes' pools hold every component
        // to, so one tenant cannot take the pool from the others.
        (
            fixtures::many_memories(24, 1),
            "bad_wasm",
            "24 Wasm linear memories, which exceeds the configured maximum of 16",
        ),
        (
            fixtures::many_core_instances(100),
            "bad_wasm",
            "101 core module instances, which exceeds the configured maximum of 64",
        ),
        (fixtures::start_trap(), "invalid_module", "unreachable"),
        (
            fixtures::far_data_segment(0xFFFF_0000),
            "invalid_module",
            "out of bounds",
        ),
    ] {
        let r = api.deploy("web", &t, wasm).await;
        assert_error(&r, StatusCode::BAD_REQUEST, code);
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    let big = api
        .deploy("web", &t, vec![0; MAX_MODULE as usize + 1])
        .await;
    assert_error(&big, StatusCode::PAYLOAD_TOO_LARGE, "module_too_large");
    let wrong_type = api
        .call(
            "POST",
            "/v1/apps/web/deployments",
            Some(&t),
            Body::from(fixtures::hello("x")),
            "text/plain",
        )
        .await;
    assert_error(
        &wrong_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "bad_content_type",
    );
    let app = api.get("/v1/apps/web", Some(&t)).await;
    assert_eq!(app.body["versions"], 0);
    assert_eq!(app.body["active_version"], Value::Null);
    assert_eq!(
        api.store.revision().unwrap(),
        revision,
        "a refused upload bumped the revision"
    );
}

#[tokio::test]
async fn env_values_are_stored_but_never_echoed() {
    let api = Api::new();
    let t = api.tenant("acme").await;
    api.app(&t, "web", &["web.example.com"]).await;
    let r = api
        .json(
            "PUT",
            "/v1/apps/web/env",
            Some(&t),
            json!({"API_KEY": "s3cr3t-value", "MODE": "prod"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["env_keys"], json!(["API_KEY", "MODE"]));
    assert!(!r.raw.contains("s3cr3t-value"));
    assert!(
        !api.get("/v1/apps/web", Some(&t))
            .await
            .raw
            .contains("s3cr3t-value")
    );
    // Sealed at rest, bound to its app and name; it opens with the key.
    let stored = api.store.app("acme", "web").unwrap().unwrap();
    assert!(stored.env_sealed);
    assert!(
        !stored.env["API_KEY"].contains("s3cr3t"),
        "{:?}",
        stored.env
    );
    let sealer = Sealer::from_hex(&"42".repeat(32)).unwrap();
    let clear = outpost_control_plane::env::open(&sealer, &stored).unwrap();
    assert_eq!(clear["API_KEY"], "s3cr3t-value");
    assert_eq!(clear["MODE"], "prod");
    let bad = api
        .json("PUT", "/v1/apps/web/env", Some(&t), json!({"A=B": "x"}))
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "bad_env");
}

#[tokio::test]
async fn env_compares_by_name_only_and_never_across_tenants() {
    let api = Api::new();
    let t = api.tenant("acme").await;
    api.app(&t, "web", &["web.example.com"]).await;
    let r = api
        .json(
            "PUT",
            "/v1/apps/web/env",
            Some(&t),
            json!({"API_KEY": "s3cr3t-value", "MODE": "prod", "OLD": "1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let revision = api.store.revision().unwrap();
    let r = api
        .json(
            "POST",
            "/v1/apps/web/env/compare",
            Some(&t),
            json!({"MODE": "prod", "API_KEY": "guess", "NEW": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(
        r.body,
        json!({"same": ["MODE"], "changed": ["API_KEY"], "missing": ["NEW"], "others": ["OLD"]})
    );
    assert!(
        !r.raw.contains("s3cr3t") && !r.raw.contains("prod"),
        "{}",
        r.raw
    );
    assert_eq!(
        api.store.revision().unwrap(),
        revision,
        "comparing changed something"
    );

    // Another tenant learns nothing about acme's app, not even that it exists.
    let rival = api.tenant("rival").await;
    let r = api
        .json(
            "POST",
            "/v1/apps/web/env/compare",
            Some(&rival),
            json!({"API_KEY": "s3cr3t-value"}),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = api
        .json("POST", "/v1/apps/web/env/compare", None, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_manifest_schema_describes_outpost_toml() {
    let api = Api::new();
    let r = api.get("/v1/manifest.schema.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let schema = &r.body;
    assert!(
        schema["$schema"]
            .as_str()
            .unwrap()
            .contains("json-schema.org")
    );
    assert_eq!(
        schema["required"],
        json!(["manifest_version", "app"]),
        "{schema}"
    );
    assert_eq!(schema["additionalProperties"], json!(false));
    let app = &schema["$defs"]["ManifestApp"];
    assert_eq!(app["additionalProperties"], json!(false));
    assert_eq!(
        app["properties"]["name"]["pattern"],
        "^[a-z0-9][a-z0-9-]{0,62}$"
    );
    for key in [
        "routes",
        "component",
        "env",
        "secrets",
        "allow_outbound",
        "limits",
    ] {
        assert!(app["properties"][key].is_object(), "no {key} in {app}");
    }
}

#[tokio::test]
async fn routes_are_validated_normalized_and_movable() {
    let api = Api::new();
    let t = api.tenant("acme").await;
    for bad in [
        vec!["bad host"],
        vec!["a.example.com:80"],
        vec!["a.example.com", "A.example.com"],
    ] {
        let r = api.app(&t, "web", &bad).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_route");
    }
    api.app(&t, "web", &["one.example.com"]).await;
    let r = api
        .json(
            "PUT",
            "/v1/apps/web/routes",
            Some(&t),
            json!({"routes": ["Two.Example.com/x/"]}),
        )
        .await;
    assert_eq!(r.body["routes"], json!(["two.example.com/x"]));
    // The released route is free again.
    assert_eq!(
        api.app(&t, "other", &["one.example.com"]).await.status,
        StatusCode::CREATED
    );
    let del = api
        .call("DELETE", "/v1/apps/web", Some(&t), Body::empty(), "")
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_error(
        &api.get("/v1/apps/web", Some(&t)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

/// Reads the next NDJSON event from a watch stream (bounded wait).
async fn next_event(body: &mut Body) -> Value {
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("an event within 10 s")
        .expect("the stream is open")
        .unwrap();
    let data = frame.into_data().unwrap();
    assert!(data.ends_with(b"\n"), "events are newline-terminated");
    serde_json::from_slice(&data).unwrap()
}

/// Reads a snapshot sent in parts (`snapshot_begin`, `snapshot_part`s,
/// `snapshot_end`) and returns it whole: `{revision, apps, certificates}`.
async fn next_snapshot(body: &mut Body) -> Value {
    let begin = next_event(body).await;
    assert_eq!(begin["type"], "snapshot_begin", "{begin}");
    let (mut apps, mut certificates) = (serde_json::Map::new(), serde_json::Map::new());
    loop {
        let event = next_event(body).await;
        match event["type"].as_str() {
            Some("snapshot_part") => {
                for (into, field) in [(&mut apps, "apps"), (&mut certificates, "certificates")] {
                    if let Some(items) = event[field].as_object() {
                        into.extend(items.clone());
                    }
                }
            }
            Some("snapshot_end") => {
                assert_eq!(event["revision"], begin["revision"]);
                return json!({
                    "revision": begin["revision"],
                    "apps": apps,
                    "certificates": certificates,
                });
            }
            _ => panic!("{event} inside a snapshot"),
        }
    }
}

#[tokio::test]
async fn nodes_watch_a_snapshot_then_a_delta_per_newer_state() {
    let api = Api::new();
    let t = api.tenant("acme").await;
    api.app(&t, "web", &["web.example.com"]).await;
    api.app(&t, "idle", &["idle.example.com"]).await;
    let v1 = api.deploy("web", &t, fixtures::hello("v1")).await;
    api.json(
        "PUT",
        "/v1/tenants/acme/limits",
        Some(ADMIN),
        json!({"fuel": 5000}),
    )
    .await;

    let req = Request::get("/v1/nodes/watch?revision=0")
        .header("authorization", format!("Bearer {NODE}"))
        .body(Body::empty())
        .unwrap();
    let resp = api.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut body = resp.into_body();

    let first = next_snapshot(&mut body).await;
    let apps = &first["apps"];
    // Only apps with an active version are served.
    assert_eq!(apps.as_object().unwrap().len(), 1, "{first}");
    let web = &apps["acme/web"];
    assert_eq!(web["digest"], v1.body["digest"]);
    assert_eq!(web["routes"], json!(["web.example.com"]));
    assert_eq!(web["limits"], json!({"fuel": 5000}));
    let r1 = first["revision"].as_u64().unwrap();

    // Later changes come as deltas from the revision the node has: only
    // what changed, so a node with many apps reloads nothing else.
    let v2 = api.deploy("web", &t, fixtures::hello("v2")).await;
    let second = next_event(&mut body).await;
    assert_eq!(second["type"], "delta", "{second}");
    let delta = &second["delta"];
    assert_eq!(delta["base"].as_u64(), Some(r1));
    let r2 = delta["revision"].as_u64().unwrap();
    assert!(r2 > r1);
    assert_eq!(delta["upsert"]["acme/web"]["digest"], v2.body["digest"]);
    assert_eq!(delta["upsert"].as_object().unwrap().len(), 1, "{delta}");
    assert_eq!(delta["remove"], json!([]));

    // A change nodes don't serve (an app with no version yet) still moves
    // the revision.
    api.app(&t, "later", &["later.example.com"]).await;
    let third = next_event(&mut body).await;
    assert_eq!(third["delta"]["base"].as_u64(), Some(r2));
    assert_eq!(third["delta"]["upsert"], json!({}));
    assert_eq!(third["delta"]["remove"], json!([]));
    let r3 = third["delta"]["revision"].as_u64().unwrap();

    let del = api
        .call("DELETE", "/v1/apps/web", Some(&t), Body::empty(), "")
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let fourth = next_event(&mut body).await;
    assert_eq!(fourth["delta"]["base"].as_u64(), Some(r3));
    assert_eq!(fourth["delta"]["remove"], json!(["acme/web"]));

    // A node already at the current revision gets a heartbeat, not a snapshot.
    let current = api.store.revision().unwrap();
    let req = Request::get(format!("/v1/nodes/watch?revision={current}"))
        .header("authorization", format!("Bearer {NODE}"))
        .body(Body::empty())
        .unwrap();
    let mut body = api.router.clone().oneshot(req).await.unwrap().into_body();
    let hello = next_event(&mut body).await;
    assert_eq!(hello, json!({"type": "heartbeat", "revision": current}));

    // Only the node token may watch.
    let r = api.get("/v1/nodes/watch", Some(&t)).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn metrics_show_revision_deploys_and_nodes() {
    let api = Api::new();
    let t = api.tenant("acme").await;
    api.app(&t, "web", &["web.example.com"]).await;
    api.deploy("web", &t, fixtures::hello("x")).await;
    let report = api
        .json(
            "PUT",
            "/v1/nodes/edge-1/status",
            Some(NODE),
            json!({"applied_revision": 1}),
        )
        .await;
    assert_eq!(report.status, StatusCode::NO_CONTENT, "{}", report.raw);
    let nodes = api.get("/v1/nodes", Some(ADMIN)).await;
    assert_eq!(nodes.body[0]["id"], "edge-1");
    assert_eq!(nodes.body[0]["applied_revision"], 1);
    let text = api.get("/metrics", None).await.raw;
    for line in [
        "outpost_cp_revision 2",
        r#"outpost_cp_deployments_total{tenant="acme"} 1"#,
        r#"outpost_cp_node_lag_revisions{node="edge-1"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    let bad = api
        .json(
            "PUT",
            "/v1/nodes/Bad_Id/status",
            Some(NODE),
            json!({"applied_revision": 1}),
        )
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "bad_name");
}

/// Every operation the router serves, as (method, path template).
const OPERATIONS: &[(&str, &str)] = &[
    ("post", "/v1/tenants"),
    ("get", "/v1/tenants"),
    ("put", "/v1/tenants/{tenant}/limits"),
    ("put", "/v1/tenants/{tenant}/domains"),
    ("put", "/v1/tenants/{tenant}/quotas"),
    ("post", "/v1/tenants/{tenant}/disable"),
    ("post", "/v1/tenants/{tenant}/enable"),
    ("delete", "/v1/tenants/{tenant}"),
    ("post", "/v1/tenants/{tenant}/tokens"),
    ("post", "/v1/tokens"),
    ("get", "/v1/tokens"),
    ("get", "/v1/whoami"),
    ("delete", "/v1/tokens/{name}"),
    ("post", "/v1/apps"),
    ("get", "/v1/apps"),
    ("get", "/v1/apps/{app}"),
    ("delete", "/v1/apps/{app}"),
    ("put", "/v1/apps/{app}/routes"),
    ("put", "/v1/apps/{app}/outbound"),
    ("put", "/v1/apps/{app}/env"),
    ("patch", "/v1/apps/{app}/env"),
    ("post", "/v1/apps/{app}/env/compare"),
    ("post", "/v1/apps/{app}/deployments"),
    ("get", "/v1/apps/{app}/deployments"),
    ("post", "/v1/apps/{app}/rollback"),
    ("post", "/v1/cache/purge"),
    ("get", "/v1/modules/{digest}"),
    ("put", "/v1/certificates/{hostname}"),
    ("get", "/v1/certificates"),
    ("delete", "/v1/certificates/{hostname}"),
    ("put", "/v1/nodes/{node}/status"),
    ("post", "/v1/nodes/{node}/logs"),
    ("get", "/v1/apps/{app}/logs"),
    ("get", "/v1/nodes"),
    ("get", "/v1/rollout"),
    ("get", "/v1/nodes/watch"),
    ("post", "/v1/nodes/identities"),
    ("get", "/v1/nodes/identities"),
    ("delete", "/v1/nodes/identities/{name}"),
];

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let api = Api::new();
    let doc = api.get("/v1/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = OPERATIONS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);
    // And the router really serves each one: no fallback 404, no 405.
    for (method, path) in OPERATIONS {
        let concrete = path
            .replace("{tenant}", "acme")
            .replace("{app}", "web")
            .replace("{digest}", "sha256:00")
            .replace("{node}", "edge-1")
            .replace("{hostname}", "web.example.com")
            .replace("{name}", "ci");
        let r = api
            .call(
                &method.to_uppercase(),
                &concrete,
                None,
                Body::empty(),
                "application/json",
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {}",
            r.raw
        );
    }
    for schema in ["ErrorBody", "App", "Deployment", "WatchEvent", "Snapshot"] {
        assert!(
            doc.body["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_to_one_app_never_lose_a_version() {
    let api = Arc::new(Api::new());
    let t = api.tenant("acme").await;
    api.app(&t, "web", &["web.example.com"]).await;
    // One tenant may have two uploads validated at once; the others are
    // told 429 and retry, as a client should.
    let uploads: Vec<_> = (0..8)
        .map(|i| {
            let (api, t) = (api.clone(), t.clone());
            tokio::spawn(async move {
                loop {
                    let r = api
                        .deploy("web", &t, fixtures::hello(&format!("v{i}")))
                        .await;
                    if r.status != StatusCode::TOO_MANY_REQUESTS {
                        return r;
                    }
                    assert_eq!(r.body["error"]["code"], "uploads_busy", "{}", r.raw);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    let mut versions = Vec::new();
    for u in uploads {
        let r = u.await.unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
        versions.push(r.body["version"].as_u64().unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    let listed = api.get("/v1/apps/web/deployments", Some(&t)).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 8);
    assert_eq!(api.get("/v1/apps/web", Some(&t)).await.body["versions"], 8);
}

/// A tenant uploads a certificate for its own route; every bad upload is
/// refused with its reason and changes nothing; keys are sealed at rest,
/// never shown, and reach nodes through the watch stream.
#[tokio::test]
async fn certificates_are_checked_sealed_listed_and_streamed() {
    use fixtures::tls::TestCa;
    let api = Api::new();
    let acme = api.tenant("acme").await;
    let beta = api.tenant("beta").await;
    api.app(&acme, "web", &["web.example.com", "api.example.com/v2"])
        .await;
    api.app(&beta, "shop", &["shop.example.com"]).await;
    let ca = TestCa::new();
    let good = ca.issue(&["web.example.com"]);
    let upload = |chain: &str, key: &str| json!({"cert_chain_pem": chain, "private_key_pem": key});

    let before = api.store.revision().unwrap();
    let other_key = ca.issue(&["web.example.com"]).key_pem;
    let expired = ca.issue_expired(&["web.example.com"]);
    let elsewhere = ca.issue(&["elsewhere.example.com"]);
    for (host, body, code, needle) in [
        (
            "web.example.com",
            upload(&expired.chain_pem, &expired.key_pem),
            "bad_certificate",
            "expired",
        ),
        (
            "web.example.com",
            upload(&good.chain_pem, &other_key),
            "bad_certificate",
            "does not match",
        ),
        (
            "web.example.com",
            upload(&elsewhere.chain_pem, &elsewhere.key_pem),
            "bad_certificate",
            "does not cover web.example.com",
        ),
        (
            "web.example.com",
            upload("garbage", &good.key_pem),
            "bad_certificate",
            "CERTIFICATE",
        ),
        (
            "web.example.com",
            upload(&good.chain_pem, "garbage"),
            "bad_certificate",
            "private key",
        ),
        (
            "shop.example.com",
            upload(&good.chain_pem, &good.key_pem),
            "not_your_route",
            "shop.example.com",
        ),
        (
            "nowhere.example.com",
            upload(&good.chain_pem, &good.key_pem),
            "not_your_route",
            "nowhere",
        ),
        (
            "web.example.com:443",
            upload(&good.chain_pem, &good.key_pem),
            "bad_hostname",
            "port",
        ),
        (
            "web.example.com",
            json!({"cert_chain_pem": "x"}),
            "bad_json",
            "private_key_pem",
        ),
    ] {
        let r = api
            .json(
                "PUT",
                &format!("/v1/certificates/{host}"),
                Some(&acme),
                body,
            )
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, code);
        assert!(r.raw.contains(needle), "{host}: {} lacks {needle:?}", r.raw);
    }
    assert_eq!(
        api.store.revision().unwrap(),
        before,
        "refused uploads changed state"
    );
    assert!(api.store.certificates().unwrap().is_empty());

    let r = api
        .json(
            "PUT",
            "/v1/certificates/Web.Example.com",
            Some(&acme),
            upload(&good.chain_pem, &good.key_pem),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["hostname"], "web.example.com");
    assert_eq!(r.body["names"], json!(["web.example.com"]));
    assert!(r.body["not_after"].as_i64().unwrap() > r.body["not_before"].as_i64().unwrap());
    // A wildcard for a parent of one of its routes.
    let wild = ca.issue(&["*.example.com"]);
    let r = api
        .json(
            "PUT",
            "/v1/certificates/*.example.com",
            Some(&acme),
            upload(&wild.chain_pem, &wild.key_pem),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);

    // Listed for its tenant only, never with the key.
    let mine = api.get("/v1/certificates", Some(&acme)).await;
    let hosts: Vec<_> = mine
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["hostname"].clone())
        .collect();
    assert_eq!(hosts, [json!("*.example.com"), json!("web.example.com")]);
    assert!(!mine.raw.contains("PRIVATE KEY"), "{}", mine.raw);
    assert_eq!(
        api.get("/v1/certificates", Some(&beta)).await.body,
        json!([])
    );
    let r = api
        .call(
            "DELETE",
            "/v1/certificates/web.example.com",
            Some(&beta),
            Body::empty(),
            "",
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &api.get("/v1/certificates", Some(ADMIN)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &api.get("/v1/certificates", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // Sealed at rest.
    for record in api.store.certificates().unwrap() {
        assert!(!record.private_key_sealed.contains("PRIVATE KEY"));
        assert!(!format!("{record:?}").contains("PRIVATE KEY"));
    }

    // Nodes get the keys in the snapshot, and a delta when one goes.
    let req = Request::get("/v1/nodes/watch?revision=0")
        .header("authorization", format!("Bearer {NODE}"))
        .body(Body::empty())
        .unwrap();
    let mut body = api.router.clone().oneshot(req).await.unwrap().into_body();
    let first = next_snapshot(&mut body).await;
    let certs = &first["certificates"];
    assert_eq!(certs["web.example.com"]["tenant"], "acme");
    assert_eq!(
        certs["web.example.com"]["private_key_pem"],
        good.key_pem.as_str()
    );
    assert_eq!(certs.as_object().unwrap().len(), 2);
    let r = api
        .call(
            "DELETE",
            "/v1/certificates/web.example.com",
            Some(&acme),
            Body::empty(),
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let next = next_event(&mut body).await;
    assert_eq!(
        next["delta"]["removed_certificates"],
        json!(["web.example.com"])
    );
    // A certificate whose tenant no longer routes its host is not served.
    let r = api
        .call("DELETE", "/v1/apps/web", Some(&acme), Body::empty(), "")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let next = next_event(&mut body).await;
    assert_eq!(
        next["delta"]["removed_certificates"],
        json!(["*.example.com"])
    );
}

#[tokio::test]
async fn env_patches_merge_and_rollout_counts_live_nodes() {
    let api = Api::new();
    let t = api.tenant("acme").await;
    api.app(&t, "web", &["web.example.com"]).await;
    let r = api
        .json(
            "PUT",
            "/v1/apps/web/env",
            Some(&t),
            json!({"A": "1", "B": "2"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api
        .json(
            "PATCH",
            "/v1/apps/web/env",
            Some(&t),
            json!({"B": null, "C": "3"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["env_keys"], json!(["A", "C"]));
    // A patch that would break the rules changes nothing.
    let before = api.store.revision().unwrap();
    let r = api
        .json(
            "PATCH",
            "/v1/apps/web/env",
            Some(&t),
            json!({"BAD=NAME": "x"}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_env");
    let r = api
        .json(
            "PATCH",
            "/v1/apps/web/env",
            Some(&t),
            json!({"BIG": "x".repeat(70_000)}),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "quota_exceeded");
    assert_eq!(api.store.revision().unwrap(), before);
    let r = api
        .json("PATCH", "/v1/apps/nope/env", Some(&t), json!({"A": "1"}))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    // Rollout: no nodes yet; then one at the current revision, one behind.
    let current = api.store.revision().unwrap();
    let r = api.get("/v1/rollout", Some(&t)).await;
    assert_eq!(
        r.body,
        json!({"revision": current, "nodes": 0, "applied": 0})
    );
    for (node, rev) in [("edge-1", current), ("edge-2", current - 1)] {
        let r = api
            .json(
                "PUT",
                &format!("/v1/nodes/{node}/status"),
                Some(NODE),
                json!({"applied_revision": rev}),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }
    let r = api.get("/v1/rollout", Some(ADMIN)).await;
    assert_eq!(
        r.body,
        json!({"revision": current, "nodes": 2, "applied": 1, "lagging": ["edge-2"]})
    );
    let r = api
        .get(&format!("/v1/rollout?revision={}", current - 1), Some(&t))
        .await;
    assert_eq!(r.body["applied"], 2);
    assert_error(
        &api.get("/v1/rollout", Some(NODE)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}

#[tokio::test]
async fn guest_logs_reach_only_their_own_tenant() {
    let api = Api::new();
    let acme = api.tenant("acme").await;
    let beta = api.tenant("beta").await;
    api.app(&acme, "web", &["web.example.com"]).await;
    api.app(&beta, "web", &["web.beta.example"]).await;
    let line = |tenant: &str, text: &str| json!({"tenant": tenant, "app": "web", "request_id": 1, "stream": "stdout", "text": text, "time_ms": 1});
    let r = api
        .json(
            "POST",
            "/v1/nodes/edge-1/logs",
            Some(NODE),
            json!([line("acme", "for acme"), line("beta", "for beta")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    let r = api.get("/v1/apps/web/logs", Some(&acme)).await;
    assert_eq!(r.status, StatusCode::OK);
    let lines: Vec<Value> = r
        .raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", r.raw);
    assert_eq!(lines[0]["text"], "for acme");
    assert_eq!(lines[0]["node"], "edge-1");
    assert!(
        !api.get("/v1/apps/web/logs", Some(&beta))
            .await
            .raw
            .contains("for acme")
    );
    // Only nodes post lines; tenants read only existing apps of their own.
    let r = api
        .json(
            "POST",
            "/v1/nodes/edge-1/logs",
            Some(&acme),
            json!([line("beta", "forged")]),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_error(
        &api.get("/v1/apps/nope/logs", Some(&acme)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let r = api
        .json(
            "POST",
            "/v1/nodes/edge-1/logs",
            Some(NODE),
            json!({"not": "a list"}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_json");
}

/// Hosts no tenant may claim: IP literals in any spelling, single-label
/// names, `localhost` names (outside `outpost dev`). 400, nothing stored.
#[tokio::test]
async fn ip_literals_single_labels_and_localhost_cannot_be_routed() {
    let api = Api::new();
    let t = api.tenant("acme").await;
    let revision = api.store.revision().unwrap();
    for host in [
        "127.0.0.1",
        "169.254.169.254/latest",
        "10.0.0.1",
        "127.1",
        "0x7f.1",
        "2130706433",
        "intranet",
        "localhost",
        "app.localhost",
    ] {
        let r = api.app(&t, "web", &[host]).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "host_not_allowed");
    }
    // IPv6 literals do not even parse as a route host.
    let r = api.app(&t, "web", &["[::1]"]).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_route");
    assert_eq!(api.store.revision().unwrap(), revision);
    let r = api.app(&t, "web", &["shop.example.com"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
}

/// An allow-list entry names a public service: IP literals in any spelling,
/// `localhost` and single-label names (cloud metadata, intranet hosts) are
/// 400 `bad_outbound` with the reason, on creation and on change, and
/// nothing is stored.
#[tokio::test]
async fn outbound_entries_must_be_dns_names_not_addresses_or_local_names() {
    let api = Api::new();
    let t = api.tenant("acme").await;
    let r = api.app(&t, "web", &["shop.example.com"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let revision = api.store.revision().unwrap();
    for (entry, why) in [
        ("127.0.0.1", "IP addresses cannot be allowed"),
        ("127.0.0.1:9100", "IP addresses cannot be allowed"),
        ("2130706433", "IP addresses cannot be allowed"),
        ("0x7f.1", "IP addresses cannot be allowed"),
        ("127.1:80", "IP addresses cannot be allowed"),
        ("[::1]", "IP addresses cannot be allowed"),
        ("[::1]:9100", "IP addresses cannot be allowed"),
        ("::ffff:127.0.0.1", "IP addresses cannot be allowed"),
        ("169.254.169.254", "IP addresses cannot be allowed"),
        ("localhost", "localhost names cannot be allowed"),
        ("localhost:7070", "localhost names cannot be allowed"),
        ("metrics.localhost", "localhost names cannot be allowed"),
        ("metadata", "single-label names cannot be allowed"),
        ("intranet:8080", "single-label names cannot be allowed"),
    ] {
        for r in [
            api.json(
                "PUT",
                "/v1/apps/web/outbound",
                Some(&t),
                json!({"hosts": ["api.example.com", entry]}),
            )
            .await,
            api.json(
                "POST",
                "/v1/apps",
                Some(&t),
                json!({"name": "other", "routes": ["other.example.com"], "allow_outbound": [entry]}),
            )
            .await,
        ] {
            assert_error(&r, StatusCode::BAD_REQUEST, "bad_outbound");
            let msg = r.body["error"]["message"].as_str().unwrap();
            assert!(msg.contains(why), "{entry}: {msg}");
        }
    }
    assert_eq!(
        api.store.revision().unwrap(),
        revision,
        "something was stored"
    );
    let r = api.get("/v1/apps/web", Some(&t)).await;
    assert!(
        r.body["allow_outbound"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{}",
        r.raw
    );

    // Names are fine, with a port or without (80 and 443 on the node).
    let r = api
        .json(
            "PUT",
            "/v1/apps/web/outbound",
            Some(&t),
            json!({"hosts": ["API.example.com", "db.internal.example:5984", "api.example.com."]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(
        r.body["allow_outbound"],
        json!(["api.example.com", "db.internal.example:5984"])
    );
}

/// A tenant over a quota gets 403 `quota_exceeded` naming it, nothing is
/// stored, and another tenant is not held to the first one's count.
#[tokio::test]
async fn a_tenant_over_a_quota_is_refused_naming_it() {
    let api = Api::with_policy(Policy {
        quotas: outpost_control_plane::quotas::Quotas {
            apps: 2,
            routes_per_app: 2,
            certificates: 1,
            ..Default::default()
        },
        ..Policy::default()
    });
    let acme = api.tenant("acme").await;
    let beta = api.tenant("beta").await;
    let quota = |r: &Reply, name: &str| {
        assert_error(r, StatusCode::FORBIDDEN, "quota_exceeded");
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("quota {name}:")), "{msg}");
    };
    // Routes per app, on creation and on change.
    let r = api
        .app(
            &acme,
            "many",
            &["a.acme.example", "b.acme.example", "c.acme.example"],
        )
        .await;
    quota(&r, "routes_per_app");
    api.app(&acme, "one", &["one.acme.example"]).await;
    let r = api
        .json(
            "PUT",
            "/v1/apps/one/routes",
            Some(&acme),
            json!({"routes": ["one.acme.example", "x.acme.example", "y.acme.example"]}),
        )
        .await;
    quota(&r, "routes_per_app");
    // Apps per tenant.
    api.app(&acme, "two", &["two.acme.example"]).await;
    let revision = api.store.revision().unwrap();
    let r = api.app(&acme, "three", &["three.acme.example"]).await;
    quota(&r, "apps");
    assert_eq!(
        api.store.revision().unwrap(),
        revision,
        "a refused create changed the store"
    );
    assert!(api.store.app("acme", "three").unwrap().is_none());
    let r = api.app(&beta, "three", &["three.beta.example"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    // Certificates per tenant: a second host is refused, replacing the
    // first is not.
    for (host, want) in [
        ("one.acme.example", StatusCode::OK),
        ("one.acme.example", StatusCode::OK),
        ("two.acme.example", StatusCode::FORBIDDEN),
    ] {
        let r = api.put_certificate(&acme, host).await;
        assert_eq!(r.status, want, "{host}: {}", r.raw);
    }
}

/// What a node reports of the apps it could not load is bounded: a long
/// reason is cut short, and a report listing more entries than apps can
/// exist is refused whole.
#[tokio::test]
async fn node_reports_of_unavailable_apps_are_bounded() {
    let api = Api::new();
    let long = "r".repeat(5_000);
    let report = json!({"applied_revision": 1, "unavailable": {"acme/web": long}});
    let r = api
        .json("PUT", "/v1/nodes/edge-1/status", Some(NODE), report)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    let nodes = api.get("/v1/nodes", Some(ADMIN)).await;
    let kept = nodes.body[0]["unavailable"]["acme/web"].as_str().unwrap();
    assert!(
        kept.len() <= 1024 + '…'.len_utf8() && kept.ends_with('…'),
        "{} bytes",
        kept.len()
    );

    let flood: serde_json::Map<String, Value> = (0..100_001)
        .map(|i| (format!("t/a{i}"), Value::String(String::new())))
        .collect();
    let report = json!({"applied_revision": 2, "unavailable": flood});
    let r = api
        .json("PUT", "/v1/nodes/edge-1/status", Some(NODE), report)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "too_many_entries");
    let nodes = api.get("/v1/nodes", Some(ADMIN)).await;
    assert_eq!(
        nodes.body[0]["applied_revision"], 1,
        "the refused report was recorded"
    );
}

/// `GET /v1/whoami`: a tenant sees itself and the limits its apps get
/// (its overrides over the defaults), and nothing of another tenant; the
/// admin is the admin; a node token and no token are refused.
#[tokio::test]
async fn whoami_names_the_caller_and_a_tenant_sees_only_its_own_limits() {
    let api = Api::new();
    let t = api.tenant("acme").await;
    let rival = api.tenant("rival").await;
    let r = api
        .json(
            "PUT",
            "/v1/tenants/rival/limits",
            Some(ADMIN),
            json!({"memory_mib": 512, "fuel": 7}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);

    let me = api.get("/v1/whoami", Some(&t)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.raw);
    assert_eq!(me.body["kind"], "tenant");
    assert_eq!(me.body["tenant"]["name"], "acme");
    assert_eq!(
        me.body["limits"],
        json!({"fuel": 1_000_000_000u64, "memory_mib": 128, "timeout_ms": 30_000, "max_concurrency": 64})
    );
    assert!(
        !me.raw.contains("rival") && !me.raw.contains("512"),
        "{}",
        me.raw
    );

    let them = api.get("/v1/whoami", Some(&rival)).await;
    assert_eq!(them.body["tenant"]["name"], "rival");
    assert_eq!(them.body["limits"]["memory_mib"], 512);
    assert_eq!(them.body["limits"]["fuel"], 7);
    assert_eq!(them.body["limits"]["timeout_ms"], 30_000);

    let admin = api.get("/v1/whoami", Some(ADMIN)).await;
    assert_eq!(admin.body, json!({"kind": "admin"}));
    assert_error(
        &api.get("/v1/whoami", Some(NODE)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_eq!(
        api.get("/v1/whoami", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// `POST /v1/cache/purge`: a tenant's purge is a revision of its own
/// partition, listed for nodes in the snapshot; bad purges and the wrong
/// kind of token are refused and record nothing, and the body cannot
/// name another tenant.
#[tokio::test]
async fn a_purge_is_a_revision_of_the_callers_own_partition() {
    let api = Api::new();
    let t = api.tenant("acme").await;
    let before = api.store.revision().unwrap();
    let r = api
        .json(
            "POST",
            "/v1/cache/purge?wait_ms=0",
            Some(&t),
            json!({"by": "surrogate_key", "key": "news"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["revision"], before + 1);
    assert_eq!(
        r.body["purge"],
        json!({"by": "surrogate_key", "key": "news"})
    );
    assert_eq!(r.body["rollout"]["nodes"], 0);
    let recent = api.store.recent_purges().unwrap();
    assert_eq!(recent.list.len(), 1);
    assert_eq!(recent.list[0].tenant, "acme");

    let revision = api.store.revision().unwrap();
    for (token, body, status, code) in [
        (
            Some(t.as_str()),
            json!({"by": "url", "url": "/relative"}),
            StatusCode::BAD_REQUEST,
            "bad_purge",
        ),
        (
            Some(t.as_str()),
            json!({"by": "surrogate_key", "key": "a b"}),
            StatusCode::BAD_REQUEST,
            "bad_purge",
        ),
        // The tenant is the token's; a body naming one is not a purge.
        (
            Some(t.as_str()),
            json!({"by": "all", "tenant": "rival"}),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            Some(t.as_str()),
            json!({"by": "everything"}),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            Some(ADMIN),
            json!({"by": "all"}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            Some(NODE),
            json!({"by": "all"}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ] {
        let r = api
            .json("POST", "/v1/cache/purge", token, body.clone())
            .await;
        assert_error(&r, status, code);
        assert_eq!(
            api.store.revision().unwrap(),
            revision,
            "{body} changed something"
        );
    }
    let r = api
        .json("POST", "/v1/cache/purge", None, json!({"by": "all"}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.store.recent_purges().unwrap().list.len(), 1);
}
