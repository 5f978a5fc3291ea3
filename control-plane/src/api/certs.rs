//! Tenant endpoints for TLS certificates: upload (checked with the node's
//! own parser), list (never the key), delete.
//!
//! A certificate is installed for a hostname the tenant routes: an exact
//! host of one of its routes, or `*.parent` when at least one of its route
//! hosts is one label under `parent` and `parent` is within the tenant's
//! grants or zone. Nodes only serve a wildcard for hosts
//! the same tenant routes, so it never answers for another tenant's host.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use outpost_proto::{CertInfo, CertUpload, ErrorBody};
use outpost_runtime::cert::Certificate;
use outpost_runtime::router::Route;

use super::auth::TenantAuth;
use super::error::{ApiError, ApiResult};
use super::{ApiState, JsonBody};
use crate::store::{AppRecord, CertRecord, now};

fn info(record: &CertRecord) -> CertInfo {
    CertInfo {
        hostname: record.hostname.clone(),
        names: record.names.clone(),
        not_before: record.not_before,
        not_after: record.not_after,
        created_at: record.created_at,
    }
}

/// Normalizes `a.example.com` or `*.example.com` (lower case, no port,
/// no path) or says why it is not a hostname.
fn normalize_hostname(hostname: &str) -> ApiResult<String> {
    let bad = |why: &str| ApiError::bad_request("bad_hostname", format!("{hostname:?}: {why}"));
    let (wildcard, host) = match hostname.strip_prefix("*.") {
        Some(parent) => (true, parent),
        None => (false, hostname),
    };
    if host.contains('/') {
        return Err(bad("a certificate is for a hostname, without a path"));
    }
    let route: Route = host
        .parse()
        .map_err(|e: outpost_runtime::router::RouteError| bad(&e.to_string()))?;
    let host = route.host().to_string();
    if wildcard && !host.contains('.') {
        return Err(bad("a wildcard needs a parent domain with a dot"));
    }
    Ok(if wildcard { format!("*.{host}") } else { host })
}

/// The hosts of `tenant`'s routes.
fn route_hosts<'a>(apps: &'a [AppRecord], tenant: &'a str) -> impl Iterator<Item = &'a str> {
    apps.iter()
        .filter(move |a| a.tenant == tenant)
        .flat_map(|a| a.routes.iter())
        .map(|r| r.split('/').next().unwrap_or(r))
}

/// Whether `tenant` routes a host that `hostname` (exact or `*.parent`)
/// stands for: the condition for uploading it and for nodes serving it.
pub(crate) fn routed_by(hostname: &str, tenant: &str, apps: &[AppRecord]) -> bool {
    match hostname.strip_prefix("*.") {
        Some(parent) => route_hosts(apps, tenant).any(|h| {
            h.split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent)
        }),
        None => route_hosts(apps, tenant).any(|h| h == hostname),
    }
}

#[utoipa::path(
    put,
    path = "/v1/certificates/{hostname}",
    tag = "certificates",
    params(("hostname" = String, Path, description = "a.example.com or *.example.com, one of your routes' hosts")),
    request_body = CertUpload,
    responses(
        (status = 200, body = CertInfo, description = "Installed (replacing any previous one)"),
        (status = 400, body = ErrorBody, description = "Not PEM, key mismatch, expired, not covering the hostname, or not your route"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn put(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(hostname): Path<String>,
    JsonBody(upload): JsonBody<CertUpload>,
) -> ApiResult<Json<CertInfo>> {
    let hostname = normalize_hostname(&hostname)?;
    let apps = state.blocking(|s| s.all_apps()).await?;
    if !routed_by(&hostname, &tenant.name, &apps) {
        return Err(ApiError::bad_request(
            "not_your_route",
            format!("{hostname} is not the host of any of your routes"),
        ));
    }
    // A wildcard stands for every name under its parent, so it needs the
    // parent's grant (or the tenant's own zone), not just one route there:
    // routing `a.shared.example` must not let a tenant answer for the
    // names another tenant may claim under `shared.example` later.
    if hostname.starts_with("*.") && !super::hosts::granted(&hostname, &tenant, &state.policy) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "domain_not_granted",
            format!("{hostname} needs a grant of its parent domain to your tenant"),
        ));
    }
    let bad = |e: outpost_runtime::Error| ApiError::bad_request("bad_certificate", e.to_string());
    let cert = Certificate::parse(
        upload.cert_chain_pem.as_bytes(),
        upload.private_key_pem.as_bytes(),
    )
    .map_err(bad)?;
    cert.check_for(&hostname, now() as i64).map_err(bad)?;
    // Replacing one of its own certificates is not one more.
    let installed = state.blocking(|s| s.certificates()).await?;
    let held = installed
        .iter()
        .filter(|c| c.tenant == tenant.name && c.hostname != hostname)
        .count();
    let quota = state.policy.quotas_for(&tenant).certificates;
    if held >= quota {
        return Err(ApiError::quota_exceeded("certificates", quota as u64));
    }
    let record = CertRecord {
        private_key_sealed: state.sealer.seal(&hostname, &upload.private_key_pem),
        hostname,
        tenant: tenant.name,
        cert_chain_pem: upload.cert_chain_pem,
        names: cert.names().to_vec(),
        not_before: cert.not_before(),
        not_after: cert.not_after(),
        created_at: now(),
    };
    let shown = info(&record);
    state.mutate(move |s| s.put_certificate(record)).await?;
    Ok(Json(shown))
}

#[utoipa::path(
    get,
    path = "/v1/certificates",
    tag = "certificates",
    responses((status = 200, body = Vec<CertInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
) -> ApiResult<Json<Vec<CertInfo>>> {
    let all = state.blocking(|s| s.certificates()).await?;
    Ok(Json(
        all.iter()
            .filter(|c| c.tenant == tenant.name)
            .map(info)
            .collect(),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/certificates/{hostname}",
    tag = "certificates",
    params(("hostname" = String, Path, description = "The hostname it was installed for")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete(
    TenantAuth(tenant): TenantAuth,
    State(state): State<Arc<ApiState>>,
    Path(hostname): Path<String>,
) -> ApiResult<StatusCode> {
    let hostname = normalize_hostname(&hostname)?;
    state
        .mutate(move |s| s.delete_certificate(&tenant.name, &hostname))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_normalize_or_get_a_reason() {
        assert_eq!(
            normalize_hostname("A.Example.com").unwrap(),
            "a.example.com"
        );
        assert_eq!(
            normalize_hostname("*.example.com").unwrap(),
            "*.example.com"
        );
        for bad in [
            "",
            "*.com",
            "a.example.com/v2",
            "a.*.com",
            "**.example.com",
            "a.example.com:443",
            "*",
        ] {
            assert!(normalize_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcards_need_a_route_one_label_below() {
        let app = |tenant: &str, routes: &[&str]| AppRecord {
            tenant: tenant.into(),
            name: "x".into(),
            routes: routes.iter().map(|r| r.to_string()).collect(),
            env: Default::default(),
            env_sealed: true,
            active_version: None,
            versions: 0,
            kept: Vec::new(),
            created_at: 0,
            allow_outbound: Vec::new(),
        };
        let apps = [
            app("acme", &["a.example.com/v2", "shop.acme.test"]),
            app("beta", &["b.example.com"]),
        ];
        assert!(routed_by("a.example.com", "acme", &apps));
        assert!(routed_by("*.example.com", "acme", &apps));
        assert!(routed_by("*.acme.test", "acme", &apps));
        assert!(!routed_by("b.example.com", "acme", &apps));
        assert!(!routed_by("*.test", "acme", &apps));
        assert!(!routed_by("*.shop.acme.test", "acme", &apps));
    }
}
