//! Which hosts a tenant may claim, before the store checks that no other
//! tenant holds them.
//!
//! - Never: IP literals in any spelling a resolver accepts, single-label
//!   names, names under `localhost` outside `outpost dev`, and the
//!   operator's reserved names (the nodes' and the control plane's own).
//! - Names under the operator's platform zone (`--apps-domain`) as
//!   `APP.TENANT.<zone>`: every tenant may claim those under its own label,
//!   without a grant (the equivalent of `*.workers.dev`).
//! - Anything else only under a domain the admin granted the tenant
//!   (`PUT /v1/tenants/{tenant}/domains`): the domain itself and every
//!   name under it.

use outpost_runtime::router::Route;

use super::Policy;
use super::error::ApiError;
use crate::store::TenantRecord;

/// Most domains one tenant may be granted.
pub const MAX_DOMAINS: usize = 100;

/// Whether `name` is `domain` or a name under it.
fn under(name: &str, domain: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|head| head.ends_with('.'))
}

/// What a host name can be that is not a public DNS name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotAName {
    /// An IP address in any spelling a resolver accepts: dotted, IPv6 in
    /// brackets or not, and the `inet_aton` forms (`2130706433`, `127.1`,
    /// `0x7f.1`, `0177.0.0.1`).
    IpLiteral,
    /// `localhost` or a name under it.
    Localhost,
    /// One label (`metadata`, `intranet`): resolved through search domains
    /// and `/etc/hosts`, never a public name.
    SingleLabel,
}

/// Whether `host` (without a port) is one of [`NotAName`]'s kinds.
pub(crate) fn not_a_name(host: &str) -> Option<NotAName> {
    let host = host.trim_end_matches('.');
    if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        return Some(NotAName::IpLiteral);
    }
    if under(host, "localhost") {
        return Some(NotAName::Localhost);
    }
    if !host.contains('.') {
        // A lone number is an address (`2130706433`, `0x7f000001`).
        let numeric = host.bytes().all(|b| b.is_ascii_digit()) || host.starts_with("0x");
        return Some(if numeric {
            NotAName::IpLiteral
        } else {
            NotAName::SingleLabel
        });
    }
    // The last label all digits: an IP in another spelling (`127.1`,
    // `0x7f.1`), never a public name (no top-level domain is numeric).
    let last = host.rsplit('.').next().unwrap_or(host);
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
        return Some(NotAName::IpLiteral);
    }
    None
}

/// Why no tenant may ever route `host`, if so.
fn never(host: &str, policy: &Policy) -> Option<&'static str> {
    let host = host.trim_end_matches('.');
    match not_a_name(host) {
        Some(NotAName::IpLiteral) => {
            return Some("IP addresses cannot be routed; use a DNS name");
        }
        Some(NotAName::Localhost) => {
            return (host == "localhost" || !policy.allow_localhost)
                .then_some("localhost names are only for outpost dev");
        }
        Some(NotAName::SingleLabel) => {
            return Some("single-label names cannot be routed; use a full DNS name");
        }
        None => {}
    }
    if policy.reserved.iter().any(|r| under(host, r)) {
        return Some("the operator reserved this name");
    }
    None
}

/// Whether `tenant` may claim `host` by grant or by the platform zone
/// (`host` may be `*.parent`, for a wildcard certificate).
pub(crate) fn granted(host: &str, tenant: &TenantRecord, policy: &Policy) -> bool {
    let in_own_zone = policy.apps_domain.as_deref().is_some_and(|zone| {
        let own = format!("{}.{zone}", tenant.name);
        host != own && under(host, &own)
    });
    in_own_zone || tenant.domains.iter().any(|d| under(host, d))
}

/// Refuses `host` unless `tenant` may claim it: 400 `host_not_allowed`
/// for names nobody may route, 403 `domain_not_granted` for names outside
/// the tenant's grants and zone.
pub(crate) fn check_claim(
    host: &str,
    tenant: &TenantRecord,
    policy: &Policy,
) -> Result<(), ApiError> {
    if let Some(why) = never(host, policy) {
        return Err(ApiError::bad_request(
            "host_not_allowed",
            format!("{host}: {why}"),
        ));
    }
    if granted(host, tenant, policy) {
        return Ok(());
    }
    let zone = match &policy.apps_domain {
        Some(zone) => format!(" or under {}.{zone}", tenant.name),
        None => String::new(),
    };
    Err(ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "domain_not_granted",
        format!(
            "{host} is not under a domain granted to your tenant{zone}; \
             ask the operator to grant its domain"
        ),
    ))
}

/// Normalizes a domain the admin grants, refusing what no tenant may be
/// given: names nobody may route, a wildcard or a path, and the platform
/// zone (its names belong to every tenant by label).
pub(crate) fn normalize_domains(
    domains: &[String],
    policy: &Policy,
) -> Result<Vec<String>, ApiError> {
    let bad = |d: &str, why: &str| ApiError::bad_request("bad_domain", format!("{d:?}: {why}"));
    if domains.len() > MAX_DOMAINS {
        return Err(ApiError::bad_request(
            "bad_domain",
            format!("at most {MAX_DOMAINS} domains per tenant"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(domains.len());
    for d in domains {
        if d.contains('/') || d.contains('*') {
            return Err(bad(
                d,
                "a domain, without a path or wildcard (it covers every name under it)",
            ));
        }
        let route: Route = d
            .parse()
            .map_err(|e: outpost_runtime::router::RouteError| bad(d, &e.to_string()))?;
        let domain = route.host().trim_end_matches('.').to_string();
        // `localhost` itself is grantable in dev: the grant covers the
        // names under it, which are routable there.
        let dev_zone = domain == "localhost" && policy.allow_localhost;
        if !dev_zone && let Some(why) = never(&domain, policy) {
            return Err(bad(d, why));
        }
        if let Some(zone) = &policy.apps_domain
            && (under(&domain, zone) || under(zone, &domain))
        {
            return Err(bad(
                d,
                "overlaps the platform zone, whose names each tenant gets by its own label",
            ));
        }
        if !out.contains(&domain) {
            out.push(domain);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(domains: &[&str]) -> TenantRecord {
        TenantRecord {
            name: "acme".into(),
            token_sha256: String::new(),
            limits: Default::default(),
            created_at: 0,
            domains: domains.iter().map(|d| d.to_string()).collect(),
            disabled: false,
            quotas: Default::default(),
        }
    }

    fn policy() -> Policy {
        Policy {
            apps_domain: Some("apps.example.net".into()),
            reserved: vec!["cp.example.com".into()],
            ..Policy::default()
        }
    }

    fn code(r: Result<(), ApiError>) -> String {
        match r {
            Ok(()) => "ok".into(),
            Err(e) => e.code().to_string(),
        }
    }

    #[test]
    fn ip_literals_localhost_and_single_labels_are_not_names() {
        use NotAName::*;
        for (host, want) in [
            ("127.0.0.1", Some(IpLiteral)),
            ("2130706433", Some(IpLiteral)),
            ("0x7f000001", Some(IpLiteral)),
            ("127.1", Some(IpLiteral)),
            ("0x7f.1", Some(IpLiteral)),
            ("0177.0.0.1", Some(IpLiteral)),
            ("169.254.169.254", Some(IpLiteral)),
            ("::1", Some(IpLiteral)),
            ("[::1]", Some(IpLiteral)),
            ("localhost", Some(Localhost)),
            ("localhost.", Some(Localhost)),
            ("app.localhost", Some(Localhost)),
            ("metadata", Some(SingleLabel)),
            ("intranet.", Some(SingleLabel)),
            ("api.example.com", None),
            ("metadata.google.internal", None),
            ("1password.com", None),
            ("localhost.example.com", None),
        ] {
            assert_eq!(not_a_name(host), want, "{host}");
        }
    }

    #[test]
    fn a_tenant_claims_its_grants_and_its_own_zone_only() {
        let (t, p) = (tenant(&["example.com"]), policy());
        for (host, want) in [
            ("example.com", "ok"),
            ("shop.example.com", "ok"),
            ("a.b.example.com", "ok"),
            ("badexample.com", "domain_not_granted"),
            ("example.org", "domain_not_granted"),
            ("web.acme.apps.example.net", "ok"),
            ("acme.apps.example.net", "domain_not_granted"),
            ("web.beta.apps.example.net", "domain_not_granted"),
            ("apps.example.net", "domain_not_granted"),
            ("cp.example.com", "host_not_allowed"),
            ("x.cp.example.com", "host_not_allowed"),
            ("127.0.0.1", "host_not_allowed"),
            ("web.localhost", "host_not_allowed"),
            ("intranet", "host_not_allowed"),
        ] {
            assert_eq!(code(check_claim(host, &t, &p)), want, "{host}");
        }
        assert!(granted("*.example.com", &t, &p));
        assert!(granted("*.acme.apps.example.net", &t, &p));
        assert!(!granted("*.apps.example.net", &t, &p));
        assert!(!granted("*.com", &t, &p));
    }

    #[test]
    fn grants_are_domains_outside_the_zone_and_never_unroutable_names() {
        let p = policy();
        let ok = normalize_domains(&["Example.COM".into(), "example.com".into()], &p).unwrap();
        assert_eq!(ok, ["example.com"]);
        for bad in [
            "com",
            "localhost",
            "10.0.0.1",
            "*.example.com",
            "example.com/x",
            "apps.example.net",
            "x.apps.example.net",
            "example.net",
        ] {
            let e = normalize_domains(&[bad.into()], &p).unwrap_err();
            assert_eq!(e.code(), "bad_domain", "{bad}");
        }
        let dev = Policy {
            allow_localhost: true,
            ..Policy::default()
        };
        assert_eq!(
            normalize_domains(&["localhost".into()], &dev).unwrap(),
            ["localhost"]
        );
    }
}
