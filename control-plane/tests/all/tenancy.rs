//! What a tenant may hold and for how long: domain grants and the platform
//! zone, quotas and their per-tenant overrides, named tokens, and the
//! admin's disable / enable / delete. Each test plays the second tenant
//! (or a revoked client) against the first.

use axum::http::StatusCode;
use outpost_control_plane::api::Policy;
use outpost_control_plane::quotas::Quotas;
use outpost_test_fixtures as fixtures;
use serde_json::json;

use crate::api::{ADMIN, Api, Reply, assert_error};

/// A tenant created with exactly `domains` granted; returns its token.
async fn tenant_with(api: &Api, name: &str, domains: &[&str]) -> String {
    let r = api
        .json(
            "POST",
            "/v1/tenants",
            Some(ADMIN),
            json!({"name": name, "domains": domains}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    r.body["token"].as_str().unwrap().to_string()
}

/// `PUT /v1/tenants/{tenant}/domains` with `domains`, as `token`.
async fn grant(api: &Api, tenant: &str, token: Option<&str>, domains: &[&str]) -> Reply {
    let path = format!("/v1/tenants/{tenant}/domains");
    api.json("PUT", &path, token, json!({"domains": domains}))
        .await
}

fn zone_policy() -> Policy {
    Policy {
        apps_domain: Some("apps.example.net".into()),
        reserved: vec!["cp.example.com".into()],
        ..Policy::default()
    }
}

/// A tenant routes only under its grants and its own label of the zone:
/// anything else is 403 `domain_not_granted` (reserved names 400), and
/// nothing is stored. Grants are the admin's alone.
#[tokio::test]
async fn a_claim_outside_the_tenants_grants_is_refused() {
    let api = Api::with_policy(zone_policy());
    let acme = tenant_with(&api, "acme", &["acme.example"]).await;
    let evil = tenant_with(&api, "evil", &["evil.example"]).await;
    let revision = api.store.revision().unwrap();
    for (host, status, code) in [
        (
            "shop.acme.example",
            StatusCode::FORBIDDEN,
            "domain_not_granted",
        ),
        (
            "acme.example/login",
            StatusCode::FORBIDDEN,
            "domain_not_granted",
        ),
        (
            "web.acme.apps.example.net",
            StatusCode::FORBIDDEN,
            "domain_not_granted",
        ),
        (
            "apps.example.net",
            StatusCode::FORBIDDEN,
            "domain_not_granted",
        ),
        (
            "unclaimed.example",
            StatusCode::FORBIDDEN,
            "domain_not_granted",
        ),
        (
            "cp.example.com",
            StatusCode::BAD_REQUEST,
            "host_not_allowed",
        ),
    ] {
        let r = api.app(&evil, "grab", &[host]).await;
        assert_error(&r, status, code);
    }
    assert_eq!(
        api.store.revision().unwrap(),
        revision,
        "a refused claim was stored"
    );
    for host in [
        "shop.acme.example",
        "acme.example",
        "web.acme.apps.example.net",
    ] {
        let name = host.replace('.', "-");
        let r = api.app(&acme, &name, &[host]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{host}: {}", r.raw);
    }
    let r = api.app(&evil, "own", &["web.evil.apps.example.net"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    // Changing routes is held to the same rule.
    let r = api
        .json(
            "PUT",
            "/v1/apps/own/routes",
            Some(&evil),
            json!({"routes": ["login.acme.example"]}),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "domain_not_granted");
    // A tenant cannot grant itself anything.
    let r = grant(&api, "evil", Some(&evil), &["acme.example"]).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    // The admin can, and refuses what no tenant may be given.
    for bad in [
        "example",
        "10.0.0.1",
        "*.acme.example",
        "apps.example.net",
        "localhost",
    ] {
        let r = grant(&api, "evil", Some(ADMIN), &[bad]).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_domain");
    }
    let r = grant(
        &api,
        "evil",
        Some(ADMIN),
        &["Evil.Example", "evil-shop.example"],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(
        r.body["domains"],
        json!(["evil.example", "evil-shop.example"])
    );
    let r = api.app(&evil, "shop", &["www.evil-shop.example"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    // A grant never takes a host another tenant holds.
    let r = grant(&api, "evil", Some(ADMIN), &["evil.example", "acme.example"]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    let r = api.app(&evil, "take", &["shop.acme.example/evil"]).await;
    assert_error(&r, StatusCode::CONFLICT, "host_taken");
    let r = grant(&api, "nobody", Some(ADMIN), &[]).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

/// A wildcard certificate needs the grant of its parent: a tenant that
/// routes one name in a shared zone cannot answer for all of them.
#[tokio::test]
async fn a_wildcard_certificate_needs_its_parents_grant() {
    let api = Api::with_policy(zone_policy());
    let acme = tenant_with(&api, "acme", &["shop.acme.example"]).await;
    let r = api.app(&acme, "web", &["www.shop.acme.example"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let r = api.app(&acme, "zone", &["web.acme.apps.example.net"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    for host in ["*.shop.acme.example", "*.acme.apps.example.net"] {
        let r = api.put_certificate(&acme, host).await;
        assert_eq!(r.status, StatusCode::OK, "{host}: {}", r.raw);
    }
    // Granted only `shop.acme.example`: `*.acme.example` would cover names
    // outside it. Routed `x.apps.example.net` names don't grant the zone.
    grant(
        &api,
        "acme",
        Some(ADMIN),
        &["shop.acme.example", "acme.example"],
    )
    .await;
    let r = api.app(&acme, "top", &["www.acme.example"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    grant(&api, "acme", Some(ADMIN), &["shop.acme.example"]).await;
    let r = api.put_certificate(&acme, "*.acme.example").await;
    assert_error(&r, StatusCode::FORBIDDEN, "domain_not_granted");
}

fn quota(r: &Reply, name: &str) {
    assert_error(r, StatusCode::FORBIDDEN, "quota_exceeded");
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("quota {name}:")), "{msg}");
}

/// Hosts, environment bytes, stored bytes: over each is 403 naming it;
/// versions past the quota are pruned (the active one never); the admin
/// raises one tenant's quota without touching another's.
#[tokio::test]
async fn each_quota_is_enforced_and_overridable_per_tenant() {
    let api = Api::with_policy(Policy {
        quotas: Quotas {
            hosts: 2,
            env_bytes_per_app: 100,
            versions_per_app: 2,
            stored_mib: 1,
            ..Quotas::default()
        },
        ..Policy::default()
    });
    let acme = api.tenant("acme").await;
    let beta = api.tenant("beta").await;
    let r = api
        .app(
            &acme,
            "web",
            &["a.acme.example", "a.acme.example/x", "b.acme.example"],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let r = api.app(&acme, "more", &["c.acme.example"]).await;
    quota(&r, "hosts");
    let r = api
        .json(
            "PUT",
            "/v1/apps/web/env",
            Some(&acme),
            json!({"K": "x".repeat(100)}),
        )
        .await;
    quota(&r, "env_bytes_per_app");
    // Versions: three deploys keep two; the first is gone, module too.
    let mut versions = Vec::new();
    for i in 0..3 {
        let r = api
            .deploy("web", &acme, fixtures::hello(&format!("v{i}")))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
        versions.push(r.body["digest"].as_str().unwrap().to_string());
    }
    let listed = api.get("/v1/apps/web/deployments", Some(&acme)).await;
    let kept: Vec<u64> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["version"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, [2, 3]);
    assert!(
        api.store.module(&versions[0]).unwrap().is_none(),
        "a pruned version's module was kept"
    );
    let r = api
        .json(
            "POST",
            "/v1/apps/web/rollback",
            Some(&acme),
            json!({"version": 1}),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    // Stored bytes: a component just under the upload cap (1 MiB here)
    // that, with the version kept beside it, passes the 1 MiB quota.
    let pad = 1024 * 1024 - fixtures::hello("big\n").len() - 100;
    let big = crate::disk_full::padded_hello("big", pad);
    assert!(big.len() <= 1024 * 1024);
    let r = api.deploy("web", &acme, big.clone()).await;
    quota(&r, "stored_mib");
    assert_eq!(
        api.get("/v1/apps/web/deployments", Some(&acme))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The admin raises acme's quotas only; bad overrides are refused.
    let r = api
        .json(
            "PUT",
            "/v1/tenants/acme/quotas",
            Some(ADMIN),
            json!({"hosts": 0}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_quotas");
    let r = api
        .json(
            "PUT",
            "/v1/tenants/acme/quotas",
            Some(&acme),
            json!({"hosts": 10}),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = api
        .json(
            "PUT",
            "/v1/tenants/acme/quotas",
            Some(ADMIN),
            json!({"hosts": 3, "stored_mib": 8}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["quotas"], json!({"hosts": 3, "stored_mib": 8}));
    assert_eq!(r.body["usage"]["hosts"], 2);
    let r = api.app(&acme, "more", &["c.acme.example"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let r = api.deploy("web", &acme, big).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    // beta still has the operator's defaults.
    let r = api
        .app(
            &beta,
            "web",
            &["a.beta.example", "b.beta.example", "c.beta.example"],
        )
        .await;
    quota(&r, "hosts");
}

/// Several named tokens: listed without their value, each revocable; a
/// revoked token is 401 on its very next request, and one tenant cannot
/// touch another's tokens.
#[tokio::test]
async fn tokens_are_named_listed_and_revoked_at_once() {
    let api = Api::new();
    let acme = api.tenant("acme").await;
    let beta = api.tenant("beta").await;
    let r = api
        .json("POST", "/v1/tokens", Some(&acme), json!({"name": "ci"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let ci = r.body["token"].as_str().unwrap().to_string();
    assert_ne!(ci, acme);
    let r = api
        .json("POST", "/v1/tokens", Some(&acme), json!({"name": "ci"}))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "exists");
    let r = api
        .json(
            "POST",
            "/v1/tokens",
            Some(&acme),
            json!({"name": "Bad Name"}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_name");
    let list = api.get("/v1/tokens", Some(&ci)).await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci", "default"]);
    assert!(
        !list.raw.contains(&ci[4..]) && !list.raw.contains(&acme[4..]),
        "{}",
        list.raw
    );
    // beta sees only its own, and cannot revoke acme's.
    let r = api.get("/v1/tokens", Some(&beta)).await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    let r = api.send("DELETE", "/v1/tokens/ci", Some(&beta)).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(api.get("/v1/apps", Some(&ci)).await.status, StatusCode::OK);
    // Revoking the default token with the ci one: the next call is 401.
    let r = api.send("DELETE", "/v1/tokens/default", Some(&ci)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    assert_error(
        &api.get("/v1/apps", Some(&acme)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_eq!(api.get("/v1/apps", Some(&ci)).await.status, StatusCode::OK);
    // A tenant that revoked its last token gets one back from the admin.
    api.send("DELETE", "/v1/tokens/ci", Some(&ci)).await;
    assert_error(
        &api.get("/v1/apps", Some(&ci)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let r = api
        .json(
            "POST",
            "/v1/tenants/acme/tokens",
            Some(ADMIN),
            json!({"name": "recovery"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    let back = r.body["token"].as_str().unwrap();
    assert_eq!(api.get("/v1/apps", Some(back)).await.status, StatusCode::OK);
}

/// Disabled: the tenant may read but not write; enabled again, it may.
/// Deleted: its token is dead, its apps gone, its hosts free for others.
#[tokio::test]
async fn a_disabled_tenant_cannot_write_and_a_deleted_one_leaves_nothing() {
    let api = Api::new();
    let acme = api.tenant("acme").await;
    let beta = api.tenant("beta").await;
    let r = api.app(&acme, "web", &["shop.example.com"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    api.deploy("web", &acme, fixtures::hello("acme")).await;
    let r = api
        .send("POST", "/v1/tenants/acme/disable", Some(&acme))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = api
        .send("POST", "/v1/tenants/acme/disable", Some(ADMIN))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["disabled"], true);
    let revision = api.store.revision().unwrap();
    assert_eq!(
        api.get("/v1/apps/web", Some(&acme)).await.status,
        StatusCode::OK
    );
    for r in [
        api.app(&acme, "other", &["other.example.com"]).await,
        api.deploy("web", &acme, fixtures::hello("more")).await,
        api.json("POST", "/v1/tokens", Some(&acme), json!({"name": "sneaky"}))
            .await,
    ] {
        assert_error(&r, StatusCode::FORBIDDEN, "tenant_disabled");
    }
    assert_eq!(api.store.revision().unwrap(), revision);
    // beta is not affected.
    let r = api.app(&beta, "web", &["beta.example.com"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);
    api.send("POST", "/v1/tenants/acme/enable", Some(ADMIN))
        .await;
    let r = api.app(&acme, "other", &["other.example.com"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.raw);

    let digest = api.store.deployments("acme", "web").unwrap()[0]
        .digest
        .clone();
    let r = api.send("DELETE", "/v1/tenants/acme", Some(ADMIN)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.raw);
    assert_error(
        &api.get("/v1/apps", Some(&acme)).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert!(api.store.apps("acme").unwrap().is_empty());
    assert!(
        api.store.module(&digest).unwrap().is_none(),
        "a deleted tenant's module was kept"
    );
    let r = api.app(&beta, "shop", &["shop.example.com"]).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "the deleted tenant's host stayed taken: {}",
        r.raw
    );
    let tenants = api.get("/v1/tenants", Some(ADMIN)).await;
    let names: Vec<&str> = tenants
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["beta"]);
    let r = api.send("DELETE", "/v1/tenants/acme", Some(ADMIN)).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}
