//! Module bytes as Wasm OCI artifacts in a registry (the CNCF
//! distribution spec, as Spin, wasmCloud and `wkg` ship components).
//!
//! The control plane pushes each upload once, under its sha256 digest
//! (the same digest the rest of Outpost names modules by), as a manifest
//! with an `application/wasm` layer, tagged `sha256-<hex>` so the
//! registry's garbage collector keeps it and `oci://` references can name
//! it. Nodes pull the layer blob by digest and check its sha256 before
//! anything else sees it: the registry is trusted for availability only,
//! never for integrity.
//!
//! URLs follow the control plane's rules ([`outpost_link::target`]):
//! `https://` verified against a CA file or the system's roots, plain
//! `http://` only to this machine. The client is the ORAS project's
//! `oci-client` (auth flows, chunked and monolithic uploads); this crate
//! is the small layer saying what an Outpost module looks like there.
//!
//! What it deliberately is not: a cache (nodes keep their own) or a
//! garbage collector (the registry's runs on its own schedule).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest as _, Sha256};

/// The layer's media type: a Wasm component.
pub const WASM_LAYER: &str = "application/wasm";
/// The config's media type (the Wasm OCI artifact layout).
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Longest wait for a connection, and for a read to make progress.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The registry URL or CA file is unusable.
    #[error("registry: {0}")]
    Link(#[from] outpost_link::LinkError),
    /// The URL names no repository.
    #[error(
        "registry URL {0:?}: expected SCHEME://HOST[:PORT]/REPOSITORY, e.g. https://registry.example.net/outpost/modules"
    )]
    Repository(String),
    /// A digest that is not `sha256:` and 64 hex digits.
    #[error("{0:?} is not a sha256 digest")]
    Digest(String),
    /// The CA file could not be read.
    #[error("reading the registry's CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The registry refused or failed a call.
    #[error("registry {registry}: {source}")]
    Registry {
        /// Host and port.
        registry: String,
        /// Why.
        source: oci_client::errors::OciDistributionError,
    },
    /// A pulled blob does not hash to its digest.
    #[error("the registry's blob for {0} does not match its digest")]
    Mismatch(String),
}

/// Where the registry is and how to sign in.
#[derive(Clone, Default)]
pub struct RegistryConfig {
    /// `https://HOST[:PORT]/REPOSITORY` (or `http://` to this machine).
    pub url: String,
    /// Basic-auth user, if the registry wants one.
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// The CA of the registry's certificate; `None`: the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches logs.
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// The registry flags both binaries take: the control plane pushes
/// module bytes there (with `--store etcd://…`), nodes pull from it first.
#[derive(Clone, Default, clap::Args)]
pub struct RegistryArgs {
    /// OCI repository of module bytes: https://HOST[:PORT]/REPOSITORY, or http:// to this
    /// machine (the control plane pushes there with --store etcd://…; nodes pull from it first,
    /// the control plane when it fails) [default: none].
    #[arg(
        id = "registry",
        long = "registry",
        env = "OUTPOST_REGISTRY",
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// User for the registry's basic auth.
    #[arg(
        id = "registry_user",
        long = "registry-user",
        env = "OUTPOST_REGISTRY_USER",
        value_name = "USER"
    )]
    pub username: Option<String>,
    /// Password for the registry's basic auth.
    #[arg(
        id = "registry_password",
        long = "registry-password",
        env = "OUTPOST_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// PEM file of the CA that signed the registry's certificate [default: the system's roots].
    #[arg(
        id = "registry_ca_file",
        long = "registry-ca-file",
        env = "OUTPOST_REGISTRY_CA_FILE",
        value_name = "FILE"
    )]
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for RegistryArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches logs.
        f.debug_struct("RegistryArgs")
            .field("url", &self.url)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The `[registry]` table of a config file: the same settings as the
/// flags, which win over it.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// The repository URL.
    url: Option<String>,
    /// Basic-auth user.
    user: Option<String>,
    /// Basic-auth password.
    password: Option<String>,
    /// CA of the registry's certificate, relative to the file.
    ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for RegistryFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryFile")
            .field("url", &self.url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl RegistryArgs {
    /// The flags over the file's `[registry]` table (its paths relative
    /// to `base`): the registry, if one is named, checked; a problem is
    /// added to `problems`.
    pub fn resolve(
        self,
        file: RegistryFile,
        base: &Path,
        problems: &mut Vec<String>,
    ) -> Option<RegistryConfig> {
        let config = RegistryConfig {
            url: self.url.or(file.url)?,
            username: self.username.or(file.user),
            password: self.password.or(file.password),
            ca_file: self.ca_file.or(file.ca_file.map(|p| base.join(p))),
        };
        if let Err(e) = Registry::new(&config) {
            problems.push(format!("--registry: {e}"));
        }
        Some(config)
    }
}

/// One repository of one registry.
pub struct Registry {
    client: Client,
    registry: String,
    repository: String,
    auth: RegistryAuth,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("registry", &self.registry)
            .field("repository", &self.repository)
            .finish_non_exhaustive()
    }
}

/// rustls needs a process-wide provider when the client brings none:
/// ring, as for every other TLS connection here.
fn install_ring() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed it first.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// `sha256:<64 hex>` → the hex, or why not.
fn hex_of(digest: &str) -> Result<&str, OciError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| OciError::Digest(digest.to_string()))
}

/// `sha256:` and the lower-case hex of `bytes`' digest.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Registry {
    /// A client for the repository at `config.url`.
    pub fn new(config: &RegistryConfig) -> Result<Registry, OciError> {
        install_ring();
        let target = outpost_link::target(&config.url, config.ca_file.as_deref())?;
        let rest = target
            .base
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let (registry, repository) = rest
            .split_once('/')
            .filter(|(host, repo)| !host.is_empty() && !repo.is_empty())
            .ok_or_else(|| OciError::Repository(config.url.clone()))?;
        let mut client_config = ClientConfig {
            protocol: if target.tls {
                ClientProtocol::Https
            } else {
                ClientProtocol::Http
            },
            connect_timeout: Some(TIMEOUT),
            read_timeout: Some(TIMEOUT),
            platform_resolver: None,
            ..ClientConfig::default()
        };
        if let Some(path) = &config.ca_file {
            client_config.tls_certs_only = vec![ca_certificate(path)?];
        }
        let auth = match (&config.username, &config.password) {
            (Some(user), Some(password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            _ => RegistryAuth::Anonymous,
        };
        Ok(Registry {
            client: Client::new(client_config),
            registry: registry.to_string(),
            repository: repository.to_string(),
            auth,
        })
    }

    fn reference_by_tag(&self, hex: &str) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            format!("sha256-{hex}"),
        )
    }

    fn reference_by_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.registry.clone(),
            self.repository.clone(),
            digest.to_string(),
        )
    }

    fn failed(&self, source: oci_client::errors::OciDistributionError) -> OciError {
        OciError::Registry {
            registry: self.registry.clone(),
            source,
        }
    }

    async fn sign_in(&self, reference: &Reference, op: RegistryOperation) -> Result<(), OciError> {
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &self.auth)
            .await;
        if matches!(self.auth, RegistryAuth::Anonymous) {
            return Ok(());
        }
        self.client
            .auth(reference, &self.auth, op)
            .await
            .map(|_| ())
            .map_err(|e| self.failed(e))
    }

    /// Pushes `bytes` (whose digest is `digest`) as a Wasm artifact tagged
    /// `sha256-<hex>`; a blob the registry has already is not sent again.
    pub async fn push(&self, digest: &str, bytes: &[u8]) -> Result<(), OciError> {
        let hex = hex_of(digest)?;
        if digest_of(bytes) != digest {
            return Err(OciError::Mismatch(digest.to_string()));
        }
        let tagged = self.reference_by_tag(hex);
        self.sign_in(&tagged, RegistryOperation::Push).await?;
        if !self.exists(digest).await? {
            self.client
                .push_blob(&tagged, bytes.to_vec(), digest)
                .await
                .map_err(|e| self.failed(e))?;
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [digest],
        }))
        .expect("a JSON value serializes");
        let config_digest = digest_of(&config);
        if !self.exists(&config_digest).await? {
            self.client
                .push_blob(&tagged, config.clone(), &config_digest)
                .await
                .map_err(|e| self.failed(e))?;
        }
        let descriptor = |media_type: &str, digest: &str, size: usize| OciDescriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            urls: None,
            annotations: None,
            artifact_type: None,
        };
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_string()),
            config: descriptor(WASM_CONFIG, &config_digest, config.len()),
            layers: vec![descriptor(WASM_LAYER, digest, bytes.len())],
            subject: None,
            artifact_type: None,
            annotations: Some(BTreeMap::from([(
                "org.opencontainers.image.title".to_string(),
                format!("outpost module {digest}"),
            )])),
        };
        self.client
            .push_manifest(&tagged, &OciManifest::Image(manifest))
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// Whether the registry holds the blob `digest`.
    pub async fn exists(&self, digest: &str) -> Result<bool, OciError> {
        hex_of(digest)?;
        let reference = self.reference_by_digest(digest);
        self.sign_in(&reference, RegistryOperation::Pull).await?;
        self.client
            .blob_exists(&reference, digest)
            .await
            .map_err(|e| self.failed(e))
    }

    /// The module `digest`, verified; `None` if the registry does not
    /// have it.
    pub async fn pull(&self, digest: &str) -> Result<Option<Vec<u8>>, OciError> {
        hex_of(digest)?;
        if !self.exists(digest).await? {
            return Ok(None);
        }
        let reference = self.reference_by_digest(digest);
        let mut bytes = Vec::new();
        self.client
            .pull_blob(&reference, digest, &mut bytes)
            .await
            .map_err(|e| self.failed(e))?;
        // oci-client checks too; this check is ours, whatever it does.
        if digest_of(&bytes) != digest {
            return Err(OciError::Mismatch(digest.to_string()));
        }
        Ok(Some(bytes))
    }
}

fn ca_certificate(path: &Path) -> Result<Certificate, OciError> {
    let data = std::fs::read(path).map_err(|source| OciError::CaFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Certificate {
        encoding: CertificateEncoding::Pem,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_repository_and_follow_the_plain_http_rule() {
        let config = |url: &str| RegistryConfig {
            url: url.into(),
            ..RegistryConfig::default()
        };
        let r = Registry::new(&config("https://registry.example.net/outpost/modules")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("registry.example.net", "outpost/modules")
        );
        assert!(Registry::new(&config("http://127.0.0.1:5000/m")).is_ok());
        assert!(matches!(
            Registry::new(&config("http://registry.example.net/m")),
            Err(OciError::Link(_))
        ));
        assert!(matches!(
            Registry::new(&config("https://registry.example.net")),
            Err(OciError::Repository(_))
        ));
    }

    #[test]
    fn flags_win_over_the_file_table_whose_paths_are_relative_to_it() {
        let file: RegistryFile = serde_json::from_value(serde_json::json!({
            "url": "https://file.example.net/m",
            "user": "from-file",
            "password": "pw",
            "ca_file": "ca.pem",
        }))
        .unwrap();
        let flags = RegistryArgs {
            url: Some("https://flag.example.net/outpost/modules".into()),
            ..RegistryArgs::default()
        };
        let dir = std::env::temp_dir().join(format!("outpost-oci-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), "a CA").unwrap();
        let mut problems = Vec::new();
        let c = flags.resolve(file, &dir, &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.url, "https://flag.example.net/outpost/modules");
        assert_eq!(c.username.as_deref(), Some("from-file"));
        assert_eq!(c.ca_file.unwrap(), dir.join("ca.pem"));
        std::fs::remove_dir_all(&dir).unwrap();
        let none =
            RegistryArgs::default().resolve(RegistryFile::default(), Path::new(""), &mut problems);
        assert!(none.is_none());
        let bad = RegistryArgs {
            url: Some("http://registry.example.net/m".into()),
            ..RegistryArgs::default()
        };
        bad.resolve(RegistryFile::default(), Path::new(""), &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(serde_json::from_value::<RegistryFile>(serde_json::json!({"uri": "x"})).is_err());
    }

    #[test]
    fn digests_are_checked_and_passwords_stay_out_of_debug() {
        assert!(hex_of("sha256:abc").is_err());
        assert!(hex_of(&format!("sha512:{}", "a".repeat(64))).is_err());
        assert_eq!(
            digest_of(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let c = RegistryConfig {
            url: "https://r.example.net/m".into(),
            username: Some("u".into()),
            password: Some("hunter2-secret".into()),
            ca_file: None,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
