//! Wire types ([`outpost_proto`]) into what the node loads: an app's
//! routes and runtime spec, and parsed certificates.

use outpost_proto::{AppSpec as WireApp, CertSpec};
use outpost_runtime::router::Route;
use outpost_runtime::{AppSpec, Limits, ModuleFile};

use crate::error::{Error, Result};
use crate::tls::Certificate;

/// Turns a wire app and its module's file (none for a disabled tenant's
/// app, never loaded) into what the runtime loads; the runtime reads the
/// file if and when it must compile it. `defaults` fill the limits neither
/// the tenant nor the app sets.
pub fn app(
    app: &WireApp,
    module: Option<ModuleFile>,
    defaults: &Limits,
) -> Result<(Vec<Route>, AppSpec)> {
    let routes = app
        .routes
        .iter()
        .map(|r| r.parse::<Route>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(vec![format!("app {}/{}: {e}", app.tenant, app.name)]))?;
    Ok((
        routes,
        AppSpec {
            tenant: app.tenant.clone(),
            name: app.name.clone(),
            wasm: Vec::new(),
            module,
            limits: defaults.with(&(&app.limits).into()),
            env: app.env.clone().into_iter().collect(),
            allow_outbound: app.allow_outbound.clone(),
            disabled: app.disabled,
        },
    ))
}

/// Parses wire certificates into what the TLS listener serves. One that
/// does not parse (the control plane checked it, so this is corruption or a
/// version skew) is left out with a warning rather than failing the whole
/// revision: its hostname falls back to the node's default certificate.
pub fn certificates<'a>(
    certs: impl IntoIterator<Item = (&'a String, &'a CertSpec)>,
) -> Vec<(String, String, Certificate)> {
    certs
        .into_iter()
        .filter_map(|(host, spec)| {
            match Certificate::parse(spec.cert_chain_pem.as_bytes(), spec.private_key_pem.as_bytes()) {
                Ok(cert) => Some((host.clone(), spec.tenant.clone(), cert)),
                Err(e) => {
                    tracing::warn!(hostname = %host, tenant = %spec.tenant, error = %e, "certificate left out");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_limits_override_only_what_they_set() {
        let wire = WireApp {
            tenant: "t".into(),
            name: "a".into(),
            routes: vec!["a.example.com/v2".into()],
            version: 1,
            digest: String::new(),
            env: [("K".to_string(), "v".to_string())].into(),
            limits: outpost_proto::Limits {
                fuel: Some(7),
                memory_mib: Some(3),
                ..Default::default()
            },
            allow_outbound: vec!["api.example.com".into()],
            disabled: false,
        };
        let defaults = Limits::default();
        let module = ModuleFile {
            path: "/cache/modules/ab.wasm".into(),
            sha256: [0xab; 32],
        };
        let (routes, spec) = app(&wire, Some(module.clone()), &defaults).unwrap();
        assert_eq!(spec.module, Some(module));
        assert!(spec.wasm.is_empty(), "read only when compiled");
        assert_eq!(routes, vec!["a.example.com/v2".parse::<Route>().unwrap()]);
        assert_eq!(spec.limits.fuel, 7);
        assert_eq!(spec.limits.memory_bytes, 3 * 1024 * 1024);
        assert_eq!(spec.limits.timeout, defaults.timeout);
        assert_eq!(spec.limits.max_concurrency, defaults.max_concurrency);
        assert_eq!(spec.env, vec![("K".to_string(), "v".to_string())]);
    }

    #[test]
    fn a_bad_route_names_its_app() {
        let wire = WireApp {
            tenant: "t".into(),
            name: "a".into(),
            routes: vec!["not a host".into()],
            version: 1,
            digest: String::new(),
            env: Default::default(),
            limits: Default::default(),
            allow_outbound: vec![],
            disabled: false,
        };
        let err = app(&wire, None, &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("app t/a"), "{err}");
    }
}
