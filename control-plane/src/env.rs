//! Apps' environment values, sealed at rest like certificate keys.
//!
//! Tenants put API keys and database passwords in env, so the store keeps
//! every value sealed (XChaCha20-Poly1305, the control plane's sealing
//! key), bound to its tenant, app and name: a copied data directory or
//! backup reveals nothing, and a value moved onto another variable does not
//! open. The API seals what it stores and never returns values (only
//! names); the snapshot for nodes opens them.
//!
//! Records written before sealing existed hold clear values
//! (`AppRecord::env_sealed` false); [`seal_stored`] seals them at start-up,
//! before the API serves.

use std::collections::BTreeMap;

use outpost_runtime::seal::{Sealer, SecretError};

use crate::store::{AppRecord, Store, StoreError};

/// What a sealed value is bound to.
fn context(tenant: &str, app: &str, name: &str) -> String {
    format!("env\0{tenant}\0{app}\0{name}")
}

/// `value` of variable `name` of `tenant`'s `app`, sealed.
pub fn seal(sealer: &Sealer, tenant: &str, app: &str, name: &str, value: &str) -> String {
    sealer.seal(&context(tenant, app, name), value)
}

/// Every variable of `app` in clear.
pub fn open(sealer: &Sealer, app: &AppRecord) -> Result<BTreeMap<String, String>, SecretError> {
    open_map(sealer, &app.tenant, &app.name, &app.env, app.env_sealed)
}

/// `env` of `tenant`'s `app` in clear; `sealed` says whether its values are.
pub fn open_map(
    sealer: &Sealer,
    tenant: &str,
    app: &str,
    env: &BTreeMap<String, String>,
    sealed: bool,
) -> Result<BTreeMap<String, String>, SecretError> {
    env.iter()
        .map(|(name, value)| {
            let clear = if sealed {
                sealer.open(&context(tenant, app, name), value)?
            } else {
                value.clone()
            };
            Ok((name.clone(), clear))
        })
        .collect()
}

/// Why the stored secrets could not be checked or sealed at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SealStoredError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored secret does not open: the configured key is not the one
    /// it was sealed with.
    #[error(
        "the sealing key does not open the stored secrets ({what}); is cert_key (OUTPOST_CERT_KEY) the key this data was written with?"
    )]
    WrongKey {
        /// The first secret that did not open.
        what: String,
    },
}

/// Checks that `sealer` opens what the store holds, then seals the env
/// values of records written before sealing existed. Returns how many
/// apps it sealed. Refusing to start with the wrong key beats serving
/// nodes a snapshot with every app's env missing.
pub fn seal_stored(store: &dyn Store, sealer: &Sealer) -> Result<usize, SealStoredError> {
    let apps = store.all_apps()?;
    let wrong_key = |what: String| SealStoredError::WrongKey { what };
    if let Some(app) = apps.iter().find(|a| a.env_sealed && !a.env.is_empty()) {
        open(sealer, app).map_err(|_| wrong_key(format!("env of app {:?}", app.name)))?;
    }
    if let Some(cert) = store.certificates()?.first() {
        sealer
            .open(&cert.hostname, &cert.private_key_sealed)
            .map_err(|_| wrong_key(format!("certificate key of {:?}", cert.hostname)))?;
    }
    let mut sealed = 0;
    for app in apps.iter().filter(|a| !a.env_sealed && !a.env.is_empty()) {
        // Sealed inside the store's transaction, from the stored record:
        // a record sealed meanwhile is left as it is.
        let refused = store.update_env(&app.tenant, &app.name, &mut |env| {
            if !env.sealed {
                for (name, value) in env.values.iter_mut() {
                    *value = seal(sealer, &app.tenant, &app.name, name, value);
                }
                env.sealed = true;
            }
            Ok(())
        })?;
        debug_assert!(refused.is_ok(), "sealing never refuses");
        sealed += 1;
    }
    if sealed > 0 {
        tracing::info!(apps = sealed, "sealed env values stored in clear");
    }
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_as_the_variable_it_was_sealed_for() {
        let sealer = Sealer::from_hex(&"33".repeat(32)).unwrap();
        let sealed = seal(&sealer, "acme", "web", "API_KEY", "s3cret");
        assert!(!sealed.contains("s3cret"));
        let env: BTreeMap<_, _> = [("API_KEY".to_string(), sealed.clone())].into();
        let open = open_map(&sealer, "acme", "web", &env, true).unwrap();
        assert_eq!(open["API_KEY"], "s3cret");
        for (tenant, app) in [("other", "web"), ("acme", "api")] {
            assert!(open_map(&sealer, tenant, app, &env, true).is_err());
        }
        let moved: BTreeMap<_, _> = [("DB_PASSWORD".to_string(), sealed)].into();
        assert!(open_map(&sealer, "acme", "web", &moved, true).is_err());
        // A record from before sealing is read as it is.
        let clear: BTreeMap<_, _> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(
            open_map(&sealer, "acme", "web", &clear, false).unwrap(),
            clear
        );
    }
}
