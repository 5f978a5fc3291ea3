//! Control-plane configuration: defaults, a TOML file, `OUTPOST_*`
//! variables and flags, in rising order of precedence; every problem
//! reported at once, before anything is opened or bound.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

use crate::api::DEFAULT_MAX_MODULE_BYTES;

/// The `[server]` section: connection handling, shared with the edge node.
pub use outpost_serve::Config as ServerConfig;

/// Tokens shorter than this are refused: they guard the whole fleet.
pub const MIN_TOKEN_LEN: usize = 16;

/// `control-plane` flags.
#[derive(Default, Parser)]
#[command(
    name = "control-plane",
    version,
    about = "Outpost control plane: the tenant REST API, storage, and the stream edge nodes follow."
)]
pub struct Args {
    /// TOML config file (keys: listen, name, data_dir, store, etcd_user, etcd_password,
    /// etcd_ca_file, admin_token, node_token, max_module_bytes, cert_key, tls_cert, tls_key,
    /// apps_domain, reserved_hosts, [registry], [quotas], [server]).
    #[arg(long, env = "OUTPOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the API listener; port 0 picks a free one [default: 127.0.0.1:7070].
    #[arg(long, env = "OUTPOST_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain of the API listener, which then serves HTTPS (with --tls-key);
    /// reloaded when the file changes [default: plain HTTP].
    #[arg(long, env = "OUTPOST_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "OUTPOST_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// State in etcd instead of sled, shared by several control planes:
    /// etcd://HOST:PORT[,HOST:PORT…][/PREFIX]; module bytes then go to --registry
    /// [default: sled in --data-dir].
    #[arg(long, env = "OUTPOST_STORE", value_name = "URL")]
    pub store: Option<String>,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub registry: outpost_oci::RegistryArgs,
    /// Directory of the sled database [default: ./data].
    #[arg(long, env = "OUTPOST_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Admin bearer token (manages tenants). Required, at least 16 characters.
    #[arg(long, env = "OUTPOST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Shared node bearer token, for nodes without their own identity (`outpost nodes add`).
    /// Optional, at least 16 characters; without it only per-node identities let nodes in.
    #[arg(long, env = "OUTPOST_NODE_TOKEN", hide_env_values = true)]
    pub node_token: Option<String>,
    /// Largest component accepted at upload, in bytes [default: 52428800].
    #[arg(long, env = "OUTPOST_MAX_MODULE_BYTES")]
    pub max_module_bytes: Option<u64>,
    /// Key sealing tenants' TLS private keys and env values at rest: 64 hex digits [default: generated once
    /// into DATA_DIR/cert.key].
    #[arg(
        long,
        env = "OUTPOST_CERT_KEY",
        hide_env_values = true,
        value_name = "HEX"
    )]
    pub cert_key: Option<String>,
    /// The platform zone: every tenant may route APP.TENANT.<zone> without a grant
    /// [default: none].
    #[arg(long, env = "OUTPOST_APPS_DOMAIN", value_name = "DOMAIN")]
    pub apps_domain: Option<String>,
    /// Names no tenant may route, with every name under them: the nodes' and the control
    /// plane's own (comma-separated) [default: none].
    #[arg(
        long,
        env = "OUTPOST_RESERVED_HOSTS",
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    pub reserved_hosts: Option<Vec<String>>,
    /// API connections open at once; at the cap a new one takes an idle one's place or is
    /// closed on accept [default: 10000].
    #[arg(long, env = "OUTPOST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// This control plane's name in the fleet view (`GET /v1/nodes` says which control plane
    /// each node follows): letters, digits, `.`, `_`, `:`, `-` [default: HOSTNAME:PORT].
    #[arg(long, env = "OUTPOST_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// A one-off task instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `control-plane` does other than serve.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Copy a sled installation (stopped) into an empty etcd prefix and an OCI registry, so
    /// control planes started with --store etcd://… serve it as it was.
    Migrate(crate::migrate::MigrateArgs),
}

/// How to sign in to etcd and check its certificate: the same flags for
/// serving (`--store`) and for `migrate --to`.
#[derive(Default, clap::Args)]
pub struct EtcdArgs {
    /// etcd user (with --etcd-password), when etcd has auth enabled.
    #[arg(long, env = "OUTPOST_ETCD_USER", value_name = "USER")]
    pub etcd_user: Option<String>,
    /// etcd password.
    #[arg(long, env = "OUTPOST_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    /// PEM CA of etcd's certificate: talk to etcd over TLS.
    #[arg(long, env = "OUTPOST_ETCD_CA_FILE", value_name = "FILE")]
    pub etcd_ca_file: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// Address of the API listener.
    listen: Option<SocketAddr>,
    /// Name in the fleet view.
    name: Option<String>,
    /// Directory of the sled database, relative to the file.
    data_dir: Option<PathBuf>,
    /// etcd://… to keep state in etcd.
    store: Option<String>,
    /// etcd user.
    etcd_user: Option<String>,
    /// etcd password.
    etcd_password: Option<String>,
    /// CA of etcd's certificate, relative to the file.
    etcd_ca_file: Option<PathBuf>,
    /// The OCI registry for module bytes (with etcd).
    #[serde(default)]
    registry: outpost_oci::RegistryFile,
    /// PEM certificate chain of the API listener, relative to the file.
    tls_cert: Option<PathBuf>,
    /// Its PEM private key, relative to the file.
    tls_key: Option<PathBuf>,
    /// Admin bearer token.
    admin_token: Option<String>,
    /// Shared node bearer token (optional).
    node_token: Option<String>,
    /// Largest component accepted, bytes.
    max_module_bytes: Option<u64>,
    /// Key sealing TLS private keys and env values, 64 hex digits.
    cert_key: Option<String>,
    /// The platform zone.
    apps_domain: Option<String>,
    /// Names no tenant may route.
    reserved_hosts: Option<Vec<String>>,
    /// Per-tenant quotas.
    #[serde(default)]
    quotas: crate::quotas::Quotas,
    /// Connection handling: the same keys and defaults as the edge node's
    /// `[server]` section, less `redirect_http`.
    #[serde(default)]
    server: outpost_serve::Config,
}

// Written by hand: the tokens and the sealing key never reach a log.
impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("tls_cert", &self.tls_cert)
            .field("max_module_bytes", &self.max_module_bytes)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("max_module_bytes", &self.max_module_bytes)
            .finish_non_exhaustive()
    }
}

/// A resolved configuration.
#[derive(Clone)]
pub struct Config {
    /// API listener.
    pub listen: SocketAddr,
    /// Name in the fleet view; `None`: this machine's hostname and the
    /// API's port.
    pub name: Option<String>,
    /// The listener's certificate and key: HTTPS. `None`: plain HTTP, for
    /// `outpost dev` and a control plane behind a proxy on its machine.
    pub tls: Option<crate::tls::TlsFiles>,
    /// sled directory.
    pub data_dir: PathBuf,
    /// State in etcd and module bytes in a registry instead of sled.
    pub etcd: Option<EtcdConfig>,
    /// Admin token (clear; only its hash is kept once running).
    pub admin_token: String,
    /// The shared node token, if any: any node may present it. `None`:
    /// only nodes with their own identity get in — where a fleet ends up
    /// once every node has moved to one.
    pub node_token: Option<String>,
    /// Upload cap.
    pub max_module_bytes: u64,
    /// Key sealing TLS private keys and env values (hex); `None`: `data_dir/cert.key`.
    pub cert_key: Option<String>,
    /// What one tenant may hold.
    pub quotas: crate::quotas::Quotas,
    /// Tenants may be granted `localhost` and route names under it:
    /// `outpost dev` only, where every name resolves to this machine. A
    /// real control plane refuses them with IP literals and single-label
    /// names.
    pub allow_localhost: bool,
    /// The platform zone: every tenant may route `APP.TENANT.<zone>`
    /// without a grant.
    pub apps_domain: Option<String>,
    /// Names (with every name under them) no tenant may route.
    pub reserved_hosts: Vec<String>,
    /// How the API listener treats connections: the cap, timeouts and
    /// head caps that keep hostile clients from starving the rest.
    pub server: outpost_serve::Config,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens never reach logs.
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("data_dir", &self.data_dir)
            .field("max_module_bytes", &self.max_module_bytes)
            .finish_non_exhaustive()
    }
}

/// Where a control plane sharing its state with others keeps it.
#[derive(Clone)]
pub struct EtcdConfig {
    /// `http(s)://HOST:PORT` of each member.
    pub endpoints: Vec<String>,
    /// The root of Outpost's keys.
    pub prefix: String,
    /// etcd user and password.
    pub user: Option<(String, String)>,
    /// CA of etcd's certificate (TLS to etcd).
    pub ca_file: Option<PathBuf>,
    /// Where module bytes go.
    pub registry: outpost_oci::RegistryConfig,
}

impl EtcdConfig {
    /// The etcd store named by `url` (given as `flag`), with its
    /// credentials, CA and `registry` (which it needs: module bytes do not
    /// fit in etcd); every problem is added to `problems`.
    pub(crate) fn resolve(
        flag: &str,
        url: &str,
        args: EtcdArgs,
        registry: Option<outpost_oci::RegistryConfig>,
        problems: &mut Vec<String>,
    ) -> Option<EtcdConfig> {
        let user = match (args.etcd_user, args.etcd_password) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            _ => {
                problems.push("--etcd-user and --etcd-password go together".into());
                None
            }
        };
        let parsed = etcd_url(flag, url, args.etcd_ca_file.is_some());
        if registry.is_none() {
            problems.push(format!(
                "{flag} etcd://… needs --registry: module bytes do not fit in etcd"
            ));
        }
        let (endpoints, prefix) = parsed.map_err(|e| problems.push(e)).ok()?;
        Some(EtcdConfig {
            endpoints,
            prefix,
            user,
            ca_file: args.etcd_ca_file,
            registry: registry?,
        })
    }

    /// How the client connects: the prefix, credentials and CA.
    pub fn options(&self) -> std::io::Result<crate::store::EtcdOptions> {
        let tls = match &self.ca_file {
            Some(path) => Some(crate::store::EtcdTls {
                ca_pem: Some(std::fs::read(path)?),
                client_identity_pem: None,
            }),
            None => None,
        };
        Ok(crate::store::EtcdOptions {
            prefix: self.prefix.clone(),
            user: self.user.clone(),
            tls,
            ..crate::store::EtcdOptions::default()
        })
    }
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Passwords never reach logs.
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// `etcd://HOST:PORT[,HOST:PORT…][/PREFIX]` → the endpoints (with the
/// scheme TLS asks for) and the prefix, or the problem.
fn etcd_url(flag: &str, url: &str, tls: bool) -> Result<(Vec<String>, String), String> {
    let bad = |why: &str| format!("{flag} {url:?}: {why}");
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| bad("expected etcd://HOST:PORT[,HOST:PORT…][/PREFIX]"))?;
    let (hosts, prefix) = match rest.split_once('/') {
        Some((hosts, prefix)) => (hosts, format!("/{}", prefix.trim_end_matches('/'))),
        None => (rest, "/outpost".to_string()),
    };
    let scheme = if tls { "https" } else { "http" };
    let mut endpoints = Vec::new();
    for host in hosts.split(',') {
        let ok = host
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(bad(&format!("{host:?} is not HOST:PORT")));
        }
        endpoints.push(format!("{scheme}://{host}"));
    }
    if prefix.len() < 2 {
        return Err(bad("the key prefix must not be empty"));
    }
    Ok((endpoints, prefix))
}

/// A control plane's name: what a metric label and a log line carry
/// without quoting surprises.
fn valid_name(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
}

/// A DNS name with at least one dot, normalized as routes are, or the
/// problem with it.
fn domain_name(key: &str, name: &str) -> Result<String, String> {
    let bad = |why: &str| format!("{key}: {name:?} {why}");
    if name.contains(['/', '*']) {
        return Err(bad("must be a DNS name, without a path or wildcard"));
    }
    let route: outpost_runtime::router::Route = name
        .parse()
        .map_err(|e: outpost_runtime::router::RouteError| bad(&e.to_string()))?;
    let host = route.host().trim_end_matches('.').to_string();
    if !host.contains('.') || host.parse::<std::net::IpAddr>().is_ok() {
        return Err(bad("must be a DNS name with at least one dot"));
    }
    Ok(host)
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Resolves flags over the file over the defaults and checks the result.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let (file, base) = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(vec![format!("reading {}: {e}", path.display())]))?;
                let file: FileConfig = toml::from_str(&text).map_err(|e| {
                    ConfigError(vec![format!("{}: {}", path.display(), e.message())])
                })?;
                (file, path.parent().map(PathBuf::from).unwrap_or_default())
            }
            None => (FileConfig::default(), PathBuf::new()),
        };
        let mut problems = Vec::new();
        let admin_token = args.admin_token.or(file.admin_token).unwrap_or_default();
        // Empty counts as absent, as an unset variable in a template would.
        let node_token = args
            .node_token
            .or(file.node_token)
            .filter(|t| !t.is_empty());
        if admin_token.is_empty() {
            problems
                .push("the admin token is required (--admin-token or OUTPOST_ADMIN_TOKEN)".into());
        }
        for (name, token) in [
            ("admin token", Some(&admin_token)),
            ("node token", node_token.as_ref()),
        ] {
            if let Some(token) = token
                && !token.is_empty()
                && token.len() < MIN_TOKEN_LEN
            {
                problems.push(format!(
                    "the {name} must be at least {MIN_TOKEN_LEN} characters"
                ));
            }
        }
        if !admin_token.is_empty() && node_token.as_ref() == Some(&admin_token) {
            problems.push("the admin and node tokens must differ".into());
        }
        let max_module_bytes = args
            .max_module_bytes
            .or(file.max_module_bytes)
            .unwrap_or(DEFAULT_MAX_MODULE_BYTES);
        if max_module_bytes == 0 {
            problems.push("max_module_bytes must be greater than 0".into());
        }
        let cert_key = args.cert_key.or(file.cert_key);
        problems.extend(file.quotas.problems());
        // The file's [server] section (defaulted and typed by serde), with
        // the flag laid over it.
        let mut server = file.server;
        if let Some(n) = args.max_connections {
            server.max_connections = n;
        }
        problems.extend(server.problems());
        let apps_domain = args
            .apps_domain
            .or(file.apps_domain)
            .map(|d| domain_name("apps_domain", &d))
            .transpose()
            .unwrap_or_else(|e| {
                problems.push(e);
                None
            });
        let mut reserved_hosts = Vec::new();
        for host in args
            .reserved_hosts
            .or(file.reserved_hosts)
            .unwrap_or_default()
        {
            match domain_name("reserved_hosts", &host) {
                Ok(host) => reserved_hosts.push(host),
                Err(e) => problems.push(e),
            }
        }
        if let Some(key) = &cert_key
            && let Err(e) = outpost_runtime::seal::Sealer::from_hex(key)
        {
            problems.push(e.to_string());
        }
        let registry = args.registry.resolve(file.registry, &base, &mut problems);
        let etcd_args = EtcdArgs {
            etcd_user: args.etcd.etcd_user.or(file.etcd_user),
            etcd_password: args.etcd.etcd_password.or(file.etcd_password),
            etcd_ca_file: args
                .etcd
                .etcd_ca_file
                .or(file.etcd_ca_file.map(|p| base.join(p))),
        };
        let etcd = match args.store.or(file.store) {
            None => {
                if registry.is_some() {
                    problems.push(
                        "--registry is for --store etcd://…: with sled, module bytes stay in sled"
                            .into(),
                    );
                }
                None
            }
            Some(url) => {
                if cert_key.is_none() {
                    problems.push(
                        "--store etcd://… needs --cert-key: every control plane must seal and open secrets with the same key"
                            .into(),
                    );
                }
                EtcdConfig::resolve("--store", &url, etcd_args, registry, &mut problems)
            }
        };
        let name = args.name.or(file.name);
        if let Some(name) = &name
            && !valid_name(name)
        {
            problems.push(format!(
                "name {name:?}: 1 to 253 letters, digits, '.', '_', ':' or '-'"
            ));
        }
        let tls_cert = args.tls_cert.or(file.tls_cert.map(|p| base.join(p)));
        let tls_key = args.tls_key.or(file.tls_key.map(|p| base.join(p)));
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                problems.push("tls_cert needs tls_key (--tls-key or OUTPOST_TLS_KEY)".into());
                None
            }
            (None, Some(_)) => {
                problems.push("tls_key needs tls_cert (--tls-cert or OUTPOST_TLS_CERT)".into());
                None
            }
        };
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(Config {
            tls,
            etcd,
            name,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7070))),
            data_dir: args
                .data_dir
                .or(file.data_dir.map(|d| base.join(d)))
                .unwrap_or_else(|| PathBuf::from("data")),
            admin_token,
            node_token,
            max_module_bytes,
            cert_key,
            quotas: file.quotas,
            allow_localhost: false,
            apps_domain,
            reserved_hosts,
            server,
        })
    }

    /// The sealer for TLS private keys and env values: the configured key, or the one
    /// kept in (and on first start generated into) `data_dir/cert.key`.
    pub fn sealer(
        &self,
    ) -> Result<outpost_runtime::seal::Sealer, outpost_runtime::seal::SecretError> {
        match &self.cert_key {
            Some(key) => outpost_runtime::seal::Sealer::from_hex(key),
            None => outpost_runtime::seal::Sealer::load_or_create(&self.data_dir.join("cert.key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("control-plane").chain(list.iter().copied())).unwrap()
    }

    #[test]
    fn the_quotas_section_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.toml");
        let tokens = [
            "--admin-token",
            "admin-token-0123456789",
            "--node-token",
            "node-token-0123456789",
        ];
        std::fs::write(&path, "[quotas]\napps = 5\n").unwrap();
        let with_file = |extra: &[&str]| {
            let mut list = vec!["--config", path.to_str().unwrap()];
            list.extend(tokens);
            list.extend(extra);
            Config::from_args(args(&list))
        };
        let c = with_file(&[]).unwrap();
        assert_eq!(c.quotas.apps, 5);
        assert_eq!(
            c.quotas.routes_per_app,
            crate::quotas::Quotas::default().routes_per_app
        );
        std::fs::write(&path, "[quotas]\napps = 0\ncertificates = 0\n").unwrap();
        let err = with_file(&[]).unwrap_err().to_string();
        assert!(
            err.contains("quotas.apps") && err.contains("quotas.certificates"),
            "{err}"
        );
        std::fs::write(&path, "[quotas]\nbuckets = 1\n").unwrap();
        assert!(with_file(&[]).is_err());
    }

    #[test]
    fn the_server_section_and_the_flag_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.toml");
        let with_file = |text: &str, extra: &[&str]| {
            std::fs::write(&path, text).unwrap();
            let mut list = vec![
                "--config",
                path.to_str().unwrap(),
                "--admin-token",
                "admin-token-0123456789",
                "--node-token",
                "node-token-0123456789",
            ];
            list.extend(extra);
            Config::from_args(args(&list))
        };
        let c = with_file(
            "[server]
idle_timeout_ms = 1500
max_connections = 7
",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.server.idle_timeout,
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(c.server.max_connections, 7);
        assert_eq!(
            c.server.header_read_timeout,
            outpost_serve::Config::default().header_read_timeout
        );
        let c = with_file(
            "[server]
max_connections = 7
",
            &["--max-connections", "9"],
        )
        .unwrap();
        assert_eq!(c.server.max_connections, 9);
        assert_eq!(
            with_file("", &[]).unwrap().server,
            outpost_serve::Config::default()
        );
        let err = with_file(
            "[server]
max_uri_bytes = 0
max_header_bytes = 10
",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("server.max_uri_bytes") && err.contains("server.max_header_bytes"),
            "{err}"
        );
        // The node's own keys mean nothing here; the handshake timeout
        // does, for the API's TLS.
        assert!(
            with_file(
                "[server]
redirect_http = true
",
                &[]
            )
            .is_err()
        );
        let c = with_file(
            "[server]
handshake_timeout_ms = 5
",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.server.handshake_timeout,
            std::time::Duration::from_millis(5)
        );
        assert!(with_file("", &["--max-connections", "0"]).is_err());
    }

    #[test]
    fn tls_needs_both_files_which_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.toml");
        std::fs::write(
            &path,
            "tls_cert = \"tls/cp.crt\"\ntls_key = \"tls/cp.key\"\n",
        )
        .unwrap();
        let tokens = [
            "--admin-token",
            "admin-token-0123456789",
            "--node-token",
            "node-token-0123456789",
        ];
        let mut list = vec!["--config", path.to_str().unwrap()];
        list.extend(tokens);
        let c = Config::from_args(args(&list)).unwrap();
        assert_eq!(
            c.tls,
            Some(crate::tls::TlsFiles {
                cert: dir.path().join("tls/cp.crt"),
                key: dir.path().join("tls/cp.key"),
            })
        );
        let mut list = tokens.to_vec();
        list.extend(["--tls-cert", "cp.crt"]);
        let e = Config::from_args(args(&list)).unwrap_err();
        assert!(e.to_string().contains("tls_cert needs tls_key"), "{e}");
        assert!(Config::from_args(args(&tokens)).unwrap().tls.is_none());
    }

    #[test]
    fn etcd_needs_a_registry_and_the_sealing_key_and_sled_takes_no_registry() {
        let base = [
            "--admin-token",
            "admin-token-0123456789",
            "--store",
            "etcd://10.0.0.1:2379,10.0.0.2:2379/tenants-a",
        ];
        let with = |extra: &[&str]| {
            let mut list = base.to_vec();
            list.extend(extra);
            Config::from_args(args(&list))
        };
        let c = with(&[
            "--registry",
            "https://registry.example.net/outpost/modules",
            "--cert-key",
            &"ab".repeat(32),
        ])
        .unwrap();
        let etcd = c.etcd.unwrap();
        assert_eq!(
            etcd.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(etcd.prefix, "/tenants-a");
        let err = with(&[]).unwrap_err().to_string();
        assert!(
            err.contains("needs --registry") && err.contains("needs --cert-key"),
            "{err}"
        );
        let e = Config::from_args(args(&[
            "--admin-token",
            "admin-token-0123456789",
            "--registry",
            "https://registry.example.net/m",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("with sled"), "{e}");
        for bad in ["etcd://", "etcd://host", "http://h:2379", "etcd://h:2379,x"] {
            let e = Config::from_args(args(&[
                "--admin-token",
                "admin-token-0123456789",
                "--store",
                bad,
            ]))
            .unwrap_err();
            assert!(e.to_string().contains("--store"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_zone_and_reserved_names_are_dns_names() {
        let tokens = [
            "--admin-token",
            "admin-token-0123456789",
            "--node-token",
            "node-token-0123456789",
        ];
        let with = |extra: &[&str]| {
            let mut list = tokens.to_vec();
            list.extend(extra);
            Config::from_args(args(&list))
        };
        let c = with(&[
            "--apps-domain",
            "Apps.Example.NET",
            "--reserved-hosts",
            "cp.example.net,edge.example.net",
        ])
        .unwrap();
        assert_eq!(c.apps_domain.as_deref(), Some("apps.example.net"));
        assert_eq!(c.reserved_hosts, ["cp.example.net", "edge.example.net"]);
        let e = with(&["--apps-domain", "net", "--reserved-hosts", "10.0.0.1,a/b"]).unwrap_err();
        assert_eq!(e.0.len(), 3, "{e}");
    }

    #[test]
    fn flags_resolve_and_tokens_stay_out_of_debug() {
        let a = args(&[
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            "admin-token-0123456789",
            "--node-token",
            "node-token-0123456789",
            "--cert-key",
            &"ab".repeat(32),
        ]);
        let shown = format!("{a:?}");
        assert!(
            !shown.contains("0123456789") && !shown.contains("abab"),
            "{shown}"
        );
        let c = Config::from_args(a).unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.max_module_bytes, DEFAULT_MAX_MODULE_BYTES);
        assert!(!format!("{c:?}").contains("0123456789"));
    }

    #[test]
    fn missing_short_and_equal_tokens_are_all_reported() {
        let e = Config::from_args(args(&[])).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.to_string().contains("OUTPOST_ADMIN_TOKEN"), "{e}");
        let e = Config::from_args(args(&[
            "--admin-token",
            "same-token-0123456789",
            "--node-token",
            "same-token-0123456789",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("must differ"), "{e}");
        let e = Config::from_args(args(&[
            "--admin-token",
            "short",
            "--node-token",
            "short",
            "--cert-key",
            "not-hex",
        ]))
        .unwrap_err();
        assert_eq!(e.0.len(), 4, "{e}");
        assert!(e.to_string().contains("64 hex digits"), "{e}");
    }

    /// The migration path: once every node has its own identity, the
    /// shared node token can go.
    #[test]
    fn the_shared_node_token_is_optional() {
        let c = Config::from_args(args(&["--admin-token", "admin-token-0123456789"])).unwrap();
        assert_eq!(c.node_token, None);
        let c = Config::from_args(args(&[
            "--admin-token",
            "admin-token-0123456789",
            "--node-token",
            "",
        ]))
        .unwrap();
        assert_eq!(c.node_token, None);
        let c = Config::from_args(args(&[
            "--admin-token",
            "admin-token-0123456789",
            "--node-token",
            "node-token-0123456789",
        ]))
        .unwrap();
        assert_eq!(c.node_token.as_deref(), Some("node-token-0123456789"));
    }
}
