//! Node configuration: defaults, a TOML file, `OUTPOST_*` environment
//! variables and flags, in rising order of precedence. Everything is checked
//! before any port is bound, and every problem is reported at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

pub use crate::server::config::Config as ServerConfig;
/// The connection-handling part of [`ServerConfig`], shared with the
/// control plane.
pub use outpost_serve::Config as ConnectionConfig;

use crate::error::{Error, Result};
use outpost_runtime::code::CodeConfig;
use outpost_runtime::edge_cache::CacheConfig;
use outpost_runtime::router::{Route, Router};
use outpost_runtime::{AppSpec, LaneConfig, LimitOverrides, Limits, OutboundConfig, PoolConfig};

/// Tenant name used for apps given on the command line or without one.
pub const DEFAULT_TENANT: &str = "default";

/// `edge-node` command-line flags. Each has an `OUTPOST_*` variable and a
/// key in the `--config` file; flags win over variables, which win over the
/// file.
#[derive(Debug, Default, Parser)]
#[command(
    name = "edge-node",
    version,
    about = "Outpost edge node: routes HTTP requests to WebAssembly workers and runs each in a fresh, limited sandbox."
)]
pub struct Args {
    /// TOML config file (keys: http, metrics, [limits], [pool], [lanes], [app_metrics], [code], [cache],
    /// [server], [[app]]).
    #[arg(long, env = "OUTPOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP listener; port 0 picks a free one [default: 127.0.0.1:8080].
    #[arg(long, env = "OUTPOST_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Address of the HTTPS listener (TLS 1.2/1.3, ALPN h2 + http/1.1); port 0 picks a free
    /// one [default: none, no HTTPS].
    #[arg(long, env = "OUTPOST_HTTPS", value_name = "ADDR")]
    pub https: Option<SocketAddr>,
    /// PEM certificate chain served for names no tenant has a certificate for
    /// [default: a generated self-signed one for localhost].
    #[arg(
        long,
        env = "OUTPOST_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "OUTPOST_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Answer plain HTTP with 308 redirects to HTTPS (needs --https).
    #[arg(long, env = "OUTPOST_REDIRECT_HTTP")]
    pub redirect_http: bool,
    /// Address of the metrics listener (/metrics, /healthz) [default: 127.0.0.1:9100].
    #[arg(long, env = "OUTPOST_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Serve a component: ROUTE=FILE.wasm, ROUTE being HOST or HOST/PATH-PREFIX. Repeatable;
    /// the variable takes a comma-separated list.
    #[arg(
        long = "app",
        env = "OUTPOST_APPS",
        value_delimiter = ',',
        value_name = "ROUTE=FILE"
    )]
    pub apps: Vec<String>,
    /// Fuel (about one unit per wasm instruction) per request [default: 1000000000].
    #[arg(long, env = "OUTPOST_FUEL")]
    pub fuel: Option<u64>,
    /// Memory per instance (all its linear memories and tables together), in MiB [default: 128].
    #[arg(long, env = "OUTPOST_MEMORY_MIB")]
    pub memory_mib: Option<u64>,
    /// Wall-clock deadline per request, in milliseconds [default: 30000].
    #[arg(long, env = "OUTPOST_TIMEOUT_MS")]
    pub timeout_ms: Option<u64>,
    /// Instances of one app running at once [default: 64].
    #[arg(long, env = "OUTPOST_MAX_CONCURRENCY")]
    pub max_concurrency: Option<u32>,
    /// Largest request body, in bytes [default: 10485760].
    #[arg(long, env = "OUTPOST_MAX_REQUEST_BODY_BYTES")]
    pub max_request_body_bytes: Option<u64>,
    /// Largest response body, in bytes [default: 104857600].
    #[arg(long, env = "OUTPOST_MAX_RESPONSE_BODY_BYTES")]
    pub max_response_body_bytes: Option<u64>,
    /// Client connections open at once; more are closed on accept [default: 10000].
    #[arg(long, env = "OUTPOST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Apps with metric series of their own; the rest count into their tenant's app="_other"
    /// series (see [app_metrics] for apps that always have their own) [default: 100].
    #[arg(long, env = "OUTPOST_PER_APP_SERIES", value_name = "N")]
    pub per_app_series: Option<usize>,
    /// Bytes of compiled code kept loaded; past it the least recently used apps' code is
    /// dropped and loaded again at their next request [default: 268435456].
    #[arg(long, env = "OUTPOST_CODE_BUDGET_BYTES", value_name = "BYTES")]
    pub code_budget_bytes: Option<u64>,
    /// Bytes of compiled functions kept in memory so the next module sharing them (every JS
    /// worker shares its engine) compiles faster; 0 turns it off [default: 134217728].
    #[arg(long, env = "OUTPOST_FUNCTION_CACHE_BYTES", value_name = "BYTES")]
    pub function_cache_bytes: Option<u64>,
    /// Whether workers' GET and HEAD fetches to their origins go through the node's edge cache
    /// (true/false) [default: true].
    #[arg(long, env = "OUTPOST_CACHE", value_name = "BOOL")]
    pub cache: Option<bool>,
    /// Bytes the edge cache holds at most, all tenants together [default: 268435456].
    #[arg(long, env = "OUTPOST_CACHE_BUDGET_BYTES", value_name = "BYTES")]
    pub cache_budget_bytes: Option<u64>,
    /// Bytes one tenant's objects take in the edge cache at most [default: 67108864].
    #[arg(long, env = "OUTPOST_CACHE_TENANT_BUDGET_BYTES", value_name = "BYTES")]
    pub cache_tenant_budget_bytes: Option<u64>,
    /// Largest response body the edge cache stores; larger ones pass through [default: 8388608].
    #[arg(long, env = "OUTPOST_CACHE_MAX_OBJECT_BYTES", value_name = "BYTES")]
    pub cache_max_object_bytes: Option<u64>,
    /// Use wasmtime's pooling allocator (true/false) [default: true].
    #[arg(long, env = "OUTPOST_POOLING", value_name = "BOOL")]
    pub pooling: Option<bool>,
    /// Follow this control plane (sync mode) instead of serving --app files: an https:// URL,
    /// or http:// to this machine; several comma-separated (control planes sharing one etcd):
    /// the node follows one and moves to the next when it fails.
    #[arg(long, env = "OUTPOST_CONTROL_PLANE", value_name = "URL")]
    pub control_plane: Option<String>,
    /// PEM file of the CA that signed the control plane's certificate [default: the system's
    /// roots].
    #[arg(long, env = "OUTPOST_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub registry: outpost_oci::RegistryArgs,
    /// The node's token (sync mode): its own identity's (`outpost nodes add`), or the control
    /// plane's shared node token.
    #[arg(long, env = "OUTPOST_NODE_TOKEN", hide_env_values = true)]
    pub node_token: Option<String>,
    /// A file holding the node's token instead (a mounted Secret, a systemd credential), so
    /// it is in no process's environment.
    #[arg(
        long,
        env = "OUTPOST_NODE_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "node_token"
    )]
    pub node_token_file: Option<PathBuf>,
    /// Where sync mode keeps the last snapshot and modules [default: ./node-cache].
    #[arg(long, env = "OUTPOST_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Key sealing the cached snapshot (tenants' env values and private
    /// keys), 64 hex digits [default: derived from the node token].
    #[arg(long, env = "OUTPOST_CACHE_KEY", hide_env_values = true)]
    pub cache_key: Option<String>,
    /// This node's id as the control plane lists it [default: the name in an identity's token,
    /// else the hostname].
    #[arg(long, env = "OUTPOST_NODE_ID")]
    pub node_id: Option<String>,
    /// Cached modules, and separately compiled code, that the applied
    /// snapshot no longer uses and are kept for quick rollbacks; older ones
    /// are deleted [default: 512].
    #[arg(long, env = "OUTPOST_CACHE_KEEP_UNUSED_MIB", value_name = "MIB")]
    pub cache_keep_unused_mib: Option<u64>,
    /// An address range (CIDR, or one address) guests' outbound calls may
    /// reach although it is loopback, private, link-local or otherwise
    /// special-purpose; the node's own listeners stay closed. Repeatable;
    /// the variable takes a comma-separated list; replaces the file's list
    /// [default: none].
    #[arg(
        long = "outbound-allow-cidr",
        env = "OUTPOST_OUTBOUND_ALLOW_CIDRS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub outbound_allow_cidrs: Vec<String>,
    /// Largest outbound response body a guest may read, in bytes
    /// [default: 104857600].
    #[arg(long, env = "OUTPOST_OUTBOUND_MAX_RESPONSE_BODY_BYTES")]
    pub outbound_max_response_body_bytes: Option<u64>,
}

/// The config file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// Address of the HTTP listener.
    http: Option<SocketAddr>,
    /// Address of the HTTPS listener.
    https: Option<SocketAddr>,
    /// The default certificate.
    #[serde(default)]
    tls: TlsFileConfig,
    /// Address of the metrics listener.
    metrics: Option<SocketAddr>,
    /// Node-wide default limits.
    #[serde(default)]
    limits: LimitOverrides,
    /// Instance pool settings.
    #[serde(default)]
    pool: PoolConfig,
    /// Foreground/background lanes for guest execution.
    #[serde(default)]
    lanes: LaneConfig,
    /// Which apps have metric series of their own.
    #[serde(default)]
    app_metrics: outpost_runtime::metrics::PerAppSeries,
    /// Compiled code loaded on demand.
    #[serde(default)]
    code: CodeConfig,
    /// The edge cache of workers' origin fetches.
    #[serde(default)]
    cache: CacheConfig,
    /// Connection handling (the server's own section).
    #[serde(default)]
    server: ServerConfig,
    /// Where guests' outbound calls may go.
    #[serde(default)]
    outbound: OutboundFileConfig,
    /// Apps served in standalone mode.
    #[serde(default, rename = "app")]
    apps: Vec<AppFileConfig>,
    /// Control plane to follow (sync mode).
    control_plane: Option<String>,
    /// CA of its certificate, relative to the file.
    ca_file: Option<PathBuf>,
    /// The OCI registry modules are pulled from first.
    #[serde(default)]
    registry: outpost_oci::RegistryFile,
    /// Its node token.
    node_token: Option<String>,
    /// Sync mode's cache directory, relative to the file.
    cache_dir: Option<PathBuf>,
    /// Key sealing the cached snapshot, 64 hex digits.
    cache_key: Option<String>,
    /// This node's id.
    node_id: Option<String>,
    /// Unused cached modules / compiled code kept, in MiB.
    cache_keep_unused_mib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFileConfig {
    /// PEM certificate chain, relative to the file.
    cert: Option<PathBuf>,
    /// PEM private key, relative to the file.
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboundFileConfig {
    /// CIDRs (or addresses) opened despite being special-purpose.
    #[serde(default)]
    allow_cidrs: Vec<String>,
    /// Largest outbound response body, in bytes.
    max_response_body_bytes: Option<u64>,
    /// Names resolved to a fixed address instead of by DNS.
    #[serde(default)]
    hosts: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppFileConfig {
    /// App name; defaults to its first route.
    name: Option<String>,
    /// Owning tenant; defaults to `default`.
    tenant: Option<String>,
    /// Routes (HOST or HOST/PREFIX).
    routes: Vec<String>,
    /// The component file, relative to the config file.
    wasm: PathBuf,
    /// Limits for this app over the node's defaults.
    #[serde(default)]
    limits: LimitOverrides,
    /// Environment variables for the guest.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Hosts the guest may call (`host`, for ports 80 and 443, or
    /// `host:port`).
    #[serde(default)]
    allow_outbound: Vec<String>,
}

/// A fully resolved node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the HTTP listener.
    pub http: SocketAddr,
    /// Address of the HTTPS listener, if any.
    pub https: Option<SocketAddr>,
    /// The default certificate's PEM files (chain, key); a self-signed
    /// one is generated when HTTPS is on and these are not given.
    pub tls_default: Option<(PathBuf, PathBuf)>,
    /// Address of the metrics listener.
    pub metrics: SocketAddr,
    /// Default limits for every app.
    pub limits: Limits,
    /// Instance pool settings.
    pub pool: PoolConfig,
    /// Foreground/background lanes for guest execution.
    pub lanes: LaneConfig,
    /// Which apps have metric series of their own.
    pub app_metrics: outpost_runtime::metrics::PerAppSeries,
    /// Compiled code loaded on demand.
    pub code: CodeConfig,
    /// The edge cache of workers' origin fetches.
    pub cache: CacheConfig,
    /// Connection handling.
    pub server: ServerConfig,
    /// Where guests' outbound calls may go.
    pub outbound: OutboundConfig,
    /// Apps to serve (standalone mode).
    pub apps: Vec<AppConfig>,
    /// The control plane to follow (sync mode).
    pub sync: Option<SyncSettings>,
}

/// Sync mode settings.
#[derive(Clone)]
pub struct SyncSettings {
    /// Control plane base URL.
    pub url: String,
    /// CA file its certificate is verified against; `None`: the system's
    /// roots.
    pub ca_file: Option<PathBuf>,
    /// The OCI registry modules are pulled from first, if any.
    pub registry: Option<outpost_oci::RegistryConfig>,
    /// Node token.
    pub token: String,
    /// Cache directory.
    pub cache_dir: PathBuf,
    /// Key sealing the cached snapshot (64 hex digits); `None`: derived
    /// from the node token, which is not in the cache directory.
    pub cache_key: Option<String>,
    /// Bytes of unused modules (and of unused compiled code) the cache
    /// keeps.
    pub keep_unused_bytes: u64,
    /// This node's id.
    pub node_id: String,
}

impl std::fmt::Debug for SyncSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches logs.
        f.debug_struct("SyncSettings")
            .field("url", &self.url)
            .field("cache_dir", &self.cache_dir)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            https: None,
            tls_default: None,
            metrics: SocketAddr::from(([127, 0, 0, 1], 9100)),
            limits: Limits::default(),
            pool: PoolConfig::default(),
            lanes: LaneConfig::default(),
            app_metrics: Default::default(),
            code: CodeConfig::default(),
            cache: CacheConfig::default(),
            server: ServerConfig::default(),
            outbound: OutboundConfig::default(),
            apps: Vec::new(),
            sync: None,
        }
    }
}

/// One app of a standalone node.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Owning tenant.
    pub tenant: String,
    /// App name.
    pub name: String,
    /// Where it is served.
    pub routes: Vec<Route>,
    /// The component file.
    pub wasm: PathBuf,
    /// Its limits.
    pub limits: Limits,
    /// Its guest environment.
    pub env: Vec<(String, String)>,
    /// Hosts it may call.
    pub allow_outbound: Vec<String>,
}

impl AppConfig {
    /// Reads the component file into a spec ready to load.
    pub fn read(&self) -> Result<(Vec<Route>, AppSpec)> {
        let wasm = std::fs::read(&self.wasm).map_err(|source| Error::Read {
            path: self.wasm.clone(),
            source,
        })?;
        Ok((
            self.routes.clone(),
            AppSpec {
                tenant: self.tenant.clone(),
                name: self.name.clone(),
                module: Some(outpost_runtime::ModuleFile::of(&self.wasm, &wasm)),
                wasm,
                limits: self.limits.clone(),
                env: self.env.clone(),
                allow_outbound: self.allow_outbound.clone(),
                disabled: false,
            },
        ))
    }
}

impl Config {
    /// Resolves flags (and their variables) over the `--config` file over
    /// the defaults, then checks the result.
    pub fn from_args(args: Args) -> Result<Config> {
        let (file, base) = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?;
                let file: FileConfig = toml::from_str(&text).map_err(|e| {
                    Error::Config(vec![format!("{}: {}", path.display(), e.message())])
                })?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (file, base)
            }
            None => (FileConfig::default(), PathBuf::new()),
        };

        let mut problems = Vec::new();
        let defaults = Config::default();
        let flag_limits = LimitOverrides {
            fuel: args.fuel,
            memory_mib: args.memory_mib,
            timeout_ms: args.timeout_ms,
            max_concurrency: args.max_concurrency,
            max_request_body_bytes: args.max_request_body_bytes,
            max_response_body_bytes: args.max_response_body_bytes,
            max_log_bytes_per_request: None,
            max_subrequests: None,
        };
        let limits = defaults.limits.with(&file.limits.or(&flag_limits));
        problems.extend(limits.problems("limits"));

        let mut pool = file.pool;
        if let Some(on) = args.pooling {
            pool.enabled = on;
        }
        problems.extend(pool.problems());
        problems.extend(file.lanes.problems());
        let mut app_metrics = file.app_metrics;
        if let Some(n) = args.per_app_series {
            app_metrics.max_apps = n;
        }
        problems.extend(app_metrics.problems());
        let mut code = file.code;
        if let Some(bytes) = args.code_budget_bytes {
            code.budget_bytes = bytes;
        }
        if let Some(bytes) = args.function_cache_bytes {
            code.function_cache_bytes = bytes;
        }
        problems.extend(code.problems());
        let mut cache = file.cache;
        if let Some(on) = args.cache {
            cache.enabled = on;
        }
        if let Some(bytes) = args.cache_budget_bytes {
            cache.budget_bytes = bytes;
        }
        if let Some(bytes) = args.cache_tenant_budget_bytes {
            cache.tenant_budget_bytes = bytes;
        }
        if let Some(bytes) = args.cache_max_object_bytes {
            cache.max_object_bytes = bytes;
        }
        problems.extend(cache.problems());

        // The file's [server] section (already defaulted and typed by
        // serde), with the two flags laid over it.
        let mut server = file.server;
        if let Some(n) = args.max_connections {
            server.connections.max_connections = n;
        }
        server.redirect_http |= args.redirect_http;
        let https = args.https.or(file.https);
        if server.redirect_http && https.is_none() {
            problems.push("--redirect-http needs --https".into());
        }
        let tls_default = match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => match (file.tls.cert, file.tls.key) {
                (Some(cert), Some(key)) => Some((base.join(cert), base.join(key))),
                (None, None) => None,
                _ => {
                    problems.push("[tls] needs both cert and key".into());
                    None
                }
            },
        };
        if let Some((cert, key)) = &tls_default {
            for file in [cert, key] {
                if !file.is_file() {
                    problems.push(format!("TLS file {} does not exist", file.display()));
                }
            }
        }
        problems.extend(server.problems());

        let cidrs = if args.outbound_allow_cidrs.is_empty() {
            file.outbound.allow_cidrs
        } else {
            args.outbound_allow_cidrs
        };
        let mut outbound = OutboundConfig::default();
        for cidr in &cidrs {
            match OutboundConfig::parse_cidr(cidr) {
                Ok(net) => outbound.allow_cidrs.push(net),
                Err(e) => problems.push(format!("outbound.allow_cidrs: {e}")),
            }
        }
        for (name, ip) in &file.outbound.hosts {
            match ip.parse::<std::net::IpAddr>() {
                Ok(ip) => {
                    outbound.hosts.insert(name.to_ascii_lowercase(), ip);
                }
                Err(_) => problems.push(format!(
                    "outbound.hosts: {name:?} = {ip:?} is not an IP address"
                )),
            }
        }
        if let Some(max) = args
            .outbound_max_response_body_bytes
            .or(file.outbound.max_response_body_bytes)
        {
            if max == 0 {
                problems.push("outbound.max_response_body_bytes must be greater than 0".into());
            }
            outbound.max_response_body_bytes = max;
        }

        let mut apps = Vec::new();
        for (i, app) in file.apps.into_iter().enumerate() {
            let what = format!("app #{} in the config file", i + 1);
            let routes = parse_routes(&app.routes, &what, &mut problems);
            if app.routes.is_empty() {
                problems.push(format!("{what}: needs at least one route"));
            }
            let name = app
                .name
                .or_else(|| routes.first().map(route_name))
                .unwrap_or_default();
            let app_limits = limits.with(&app.limits);
            problems.extend(app_limits.problems(&format!("app {name:?}")));
            apps.push(AppConfig {
                tenant: app.tenant.unwrap_or_else(|| DEFAULT_TENANT.into()),
                name,
                routes,
                wasm: base.join(app.wasm),
                limits: app_limits,
                env: app.env.into_iter().collect(),
                allow_outbound: app.allow_outbound,
            });
        }
        for spec in &args.apps {
            let what = format!("--app {spec:?}");
            let Some((route, file)) = spec.split_once('=') else {
                problems.push(format!("{what}: expected ROUTE=FILE.wasm"));
                continue;
            };
            if file.is_empty() {
                problems.push(format!("{what}: the file name is empty"));
                continue;
            }
            let routes = parse_routes(&[route.to_string()], &what, &mut problems);
            let Some(first) = routes.first() else {
                continue;
            };
            apps.push(AppConfig {
                tenant: DEFAULT_TENANT.into(),
                name: route_name(first),
                routes,
                wasm: PathBuf::from(file),
                limits: limits.clone(),
                env: Vec::new(),
                allow_outbound: Vec::new(),
            });
        }
        check_apps(&apps, &mut problems);

        let sync = match args.control_plane.or(file.control_plane) {
            None => None,
            Some(url) => {
                let ca_file = args.ca_file.or(file.ca_file.map(|f| base.join(f)));
                let registry = args.registry.resolve(file.registry, &base, &mut problems);
                // Several control planes sharing one store, comma-separated.
                for one in url.split(',') {
                    if let Err(e) = outpost_link::target(one.trim(), ca_file.as_deref()) {
                        problems.push(format!("--control-plane: {e}"));
                    }
                }
                if !apps.is_empty() {
                    problems.push("--app and --control-plane cannot be combined: a node follows a control plane or serves its own apps".into());
                }
                let token = match &args.node_token_file {
                    Some(path) => match std::fs::read_to_string(path) {
                        Ok(text) => text.trim().to_string(),
                        Err(e) => {
                            problems.push(format!(
                                "--node-token-file {}: {e} (create the node's identity with `outpost nodes add NAME` and put its token there)",
                                path.display()
                            ));
                            String::new()
                        }
                    },
                    None => args.node_token.or(file.node_token).unwrap_or_default(),
                };
                if token.is_empty() && args.node_token_file.is_none() {
                    problems.push(
                        "--control-plane needs --node-token or --node-token-file (or OUTPOST_NODE_TOKEN/OUTPOST_NODE_TOKEN_FILE)"
                            .into(),
                    );
                } else if token.is_empty()
                    && problems.iter().all(|p| !p.starts_with("--node-token-file"))
                {
                    problems.push("--node-token-file: the file is empty".into());
                }
                let cache_key = args.cache_key.or(file.cache_key);
                if let Some(key) = &cache_key
                    && outpost_runtime::seal::Sealer::from_hex(key).is_err()
                {
                    problems.push("--cache-key: expected 64 hex digits (32 bytes)".into());
                }
                // A node with its own identity is that identity's node: the
                // control plane would refuse any other id, so say it now.
                let node_id = match (
                    args.node_id.or(file.node_id),
                    outpost_proto::node_token_name(&token),
                ) {
                    (Some(id), Some(name)) if id != name => {
                        problems.push(format!(
                            "the node token belongs to node {name}, but --node-id is {id}"
                        ));
                        id
                    }
                    (Some(id), _) => id,
                    (None, Some(name)) => name.to_string(),
                    (None, None) => default_node_id(),
                };
                let id_ok = !node_id.is_empty()
                    && node_id.len() <= 63
                    && node_id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !id_ok {
                    problems.push(format!(
                        "node id {node_id:?}: use 1-63 characters of a-z, 0-9 and '-'"
                    ));
                }
                Some(SyncSettings {
                    node_id,
                    url,
                    ca_file,
                    registry,
                    token,
                    cache_key,
                    cache_dir: args
                        .cache_dir
                        .or(file.cache_dir.map(|d| base.join(d)))
                        .unwrap_or_else(|| PathBuf::from("node-cache")),
                    keep_unused_bytes: args
                        .cache_keep_unused_mib
                        .or(file.cache_keep_unused_mib)
                        .map_or(crate::sync::cache::DEFAULT_KEEP_UNUSED_BYTES, |mib| {
                            mib.saturating_mul(1024 * 1024)
                        }),
                })
            }
        };

        if !problems.is_empty() {
            return Err(Error::Config(problems));
        }
        Ok(Config {
            http: args.http.or(file.http).unwrap_or(defaults.http),
            https,
            tls_default,
            metrics: args.metrics.or(file.metrics).unwrap_or(defaults.metrics),
            limits,
            pool,
            lanes: file.lanes,
            app_metrics,
            code,
            cache,
            server,
            outbound,
            apps,
            sync,
        })
    }
}

/// The hostname, lower-cased, with anything but `a-z0-9-` as `-`.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let id = id.trim_matches('-').to_string();
    if id.is_empty() { "edge".into() } else { id }
}

fn parse_routes(routes: &[String], what: &str, problems: &mut Vec<String>) -> Vec<Route> {
    routes
        .iter()
        .filter_map(|r| match r.parse::<Route>() {
            Ok(route) => Some(route),
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                None
            }
        })
        .collect()
}

/// An app named after its route: `api.example.com/v2` → `api.example.com-v2`.
fn route_name(route: &Route) -> String {
    route.to_string().replace('/', "-")
}

/// Names unique per tenant, routes unique across the node, files present.
fn check_apps(apps: &[AppConfig], problems: &mut Vec<String>) {
    let mut names = std::collections::HashSet::new();
    for app in apps {
        if app.name.is_empty() {
            problems.push("an app has an empty name".into());
        } else if !names.insert((app.tenant.as_str(), app.name.as_str())) {
            problems.push(format!(
                "app {:?} of tenant {:?} is defined twice",
                app.name, app.tenant
            ));
        }
        if !app.wasm.is_file() {
            problems.push(format!(
                "app {:?}: component file {} does not exist",
                app.name,
                app.wasm.display()
            ));
        }
    }
    let all = apps
        .iter()
        .flat_map(|a| a.routes.iter().map(move |r| (r.clone(), ())));
    if let Err(e) = Router::new(all) {
        problems.push(e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("edge-node").chain(list.iter().copied())).unwrap()
    }

    fn wasm_file(dir: &Path, name: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, b"not checked here").unwrap();
        p.display().to_string()
    }

    #[test]
    fn flags_resolve_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let a = wasm_file(dir.path(), "a.wasm");
        let b = wasm_file(dir.path(), "b.wasm");
        let c = Config::from_args(args(&[
            "--http",
            "127.0.0.1:0",
            "--app",
            &format!("a.example.com={a}"),
            "--app",
            &format!("api.example.com/v2={b}"),
            "--fuel",
            "5000",
            "--timeout-ms",
            "250",
        ]))
        .unwrap();
        assert_eq!(c.http.port(), 0);
        assert_eq!(c.metrics, Config::default().metrics);
        assert_eq!(c.limits.fuel, 5000);
        assert_eq!(c.limits.timeout, Duration::from_millis(250));
        assert_eq!(c.limits.memory_bytes, Limits::DEFAULT_MEMORY_BYTES);
        let names: Vec<_> = c.apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["a.example.com", "api.example.com-v2"]);
        assert_eq!(c.apps[1].routes[0].prefix(), "/v2");
        assert_eq!(c.apps[0].tenant, DEFAULT_TENANT);
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        wasm_file(dir.path(), "a.wasm");
        let path = dir.path().join("edge.toml");
        std::fs::write(
            &path,
            r#"
            http = "127.0.0.1:1234"
            [limits]
            fuel = 10
            memory_mib = 64
            [pool]
            enabled = false
            max_memories_per_component = 4
            [[app]]
            name = "web"
            tenant = "acme"
            routes = ["a.example.com", "www.a.example.com"]
            wasm = "a.wasm"
            env = { GREETING = "hi" }
            limits = { timeout_ms = 100 }
            "#,
        )
        .unwrap();
        let c =
            Config::from_args(args(&["--config", path.to_str().unwrap(), "--fuel", "99"])).unwrap();
        assert_eq!(c.http.port(), 1234);
        assert_eq!(c.limits.fuel, 99, "flags win over the file");
        assert_eq!(c.limits.memory_bytes, 64 << 20);
        assert!(!c.pool.enabled);
        assert_eq!(c.pool.max_memories_per_component, 4);
        let app = &c.apps[0];
        assert_eq!((app.tenant.as_str(), app.name.as_str()), ("acme", "web"));
        assert_eq!(app.routes.len(), 2);
        assert_eq!(app.limits.timeout, Duration::from_millis(100));
        assert_eq!(app.limits.fuel, 99);
        assert_eq!(app.env, vec![("GREETING".into(), "hi".into())]);
        assert_eq!(app.wasm, dir.path().join("a.wasm"), "relative to the file");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = wasm_file(dir.path(), "a.wasm");
        let err = Config::from_args(args(&[
            "--app",
            "no-equals-sign",
            "--app",
            "bad host!=x.wasm",
            "--app",
            &format!("a.example.com={a}"),
            "--app",
            &format!("A.example.com={a}"),
            "--app",
            "b.example.com=/does/not/exist.wasm",
            "--fuel",
            "0",
            "--max-concurrency",
            "0",
        ]))
        .unwrap_err();
        let Error::Config(problems) = &err else {
            panic!("{err}")
        };
        let text = err.to_string();
        assert_eq!(problems.len(), 7, "{text}");
        for needle in [
            "expected ROUTE=FILE.wasm",
            "invalid route \"bad host!\"",
            "fuel must be greater than 0",
            "max concurrency must be greater than 0",
            "is defined twice",
            "route a.example.com is given twice",
            "/does/not/exist.wasm does not exist",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn sync_mode_needs_a_token_and_no_local_apps() {
        let c = Config::from_args(args(&[
            "--control-plane",
            "http://127.0.0.1:7070",
            "--node-token",
            "secret-node-token",
        ]))
        .unwrap();
        let sync = c.sync.expect("sync mode");
        assert_eq!(sync.url, "http://127.0.0.1:7070");
        assert_eq!(sync.cache_dir, PathBuf::from("node-cache"));
        assert!(!format!("{sync:?}").contains("secret-node-token"));

        let dir = tempfile::tempdir().unwrap();
        let a = wasm_file(dir.path(), "a.wasm");
        let err = Config::from_args(args(&[
            "--control-plane",
            "ftp://cp",
            "--app",
            &format!("a.example.com={a}"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "expected an https:// URL",
            "cannot be combined",
            "needs --node-token",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn an_identity_token_names_the_node() {
        let token = format!("opn_edge-1_{}", "ab".repeat(32));
        let sync = |extra: &[&str]| {
            let mut list = vec![
                "--control-plane",
                "http://127.0.0.1:7070",
                "--node-token",
                &token,
            ];
            list.extend(extra);
            Config::from_args(args(&list))
        };
        let c = sync(&[]).unwrap();
        assert_eq!(c.sync.unwrap().node_id, "edge-1");
        let c = sync(&["--node-id", "edge-1"]).unwrap();
        assert_eq!(c.sync.unwrap().node_id, "edge-1");
        let err = sync(&["--node-id", "edge-2"]).unwrap_err().to_string();
        assert!(
            err.contains("the node token belongs to node edge-1, but --node-id is edge-2"),
            "{err}"
        );
        // A shared token says nothing about the node: the id is the
        // operator's choice, or the hostname.
        let c = Config::from_args(args(&[
            "--control-plane",
            "http://127.0.0.1:7070",
            "--node-token",
            "shared-node-token-0123",
            "--node-id",
            "edge-2",
        ]))
        .unwrap();
        assert_eq!(c.sync.unwrap().node_id, "edge-2");
    }

    #[test]
    fn the_token_may_come_from_a_file_which_must_hold_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-token");
        let token = format!("opn_edge-7_{}", "cd".repeat(32));
        std::fs::write(&path, format!("{token}\n")).unwrap();
        let with_file = |extra: &[&str]| {
            let mut list = vec![
                "--control-plane",
                "https://cp.example.net",
                "--node-token-file",
                path.to_str().unwrap(),
            ];
            list.extend(extra);
            Config::from_args(args(&list))
        };
        let sync = with_file(&[]).unwrap().sync.unwrap();
        assert_eq!(
            (sync.token.as_str(), sync.node_id.as_str()),
            (token.as_str(), "edge-7")
        );
        std::fs::write(&path, "\n").unwrap();
        let err = with_file(&[]).unwrap_err().to_string();
        assert!(err.contains("the file is empty"), "{err}");
        std::fs::remove_file(&path).unwrap();
        let err = with_file(&[]).unwrap_err().to_string();
        assert!(err.contains("outpost nodes add"), "{err}");
        // Not both.
        assert!(
            Args::try_parse_from(["edge-node", "--node-token", "x", "--node-token-file", "y"])
                .is_err()
        );
    }

    #[test]
    fn outbound_hosts_and_the_cache_section_are_read_and_bad_values_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        std::fs::write(
            &path,
            "[outbound]\nhosts = { \"Origin.Internal.Example\" = \"10.0.0.5\" }\n\
             [cache]\nbudget_bytes = 1000000\ntenant_budget_bytes = 500000\n\
             max_object_bytes = 100000\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let c = Config::from_args(args(&["--config", file])).unwrap();
        assert_eq!(
            c.outbound.hosts["origin.internal.example"],
            "10.0.0.5".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(c.cache.budget_bytes, 1_000_000);
        assert!(c.cache.enabled);
        let c = Config::from_args(args(&["--config", file, "--cache", "false"])).unwrap();
        assert!(!c.cache.enabled);
        assert!(Config::default().cache.enabled);

        std::fs::write(
            &path,
            "[outbound]\nhosts = { \"o.example\" = \"nope\" }\n[cache]\nmax_object_bytes = 0\n",
        )
        .unwrap();
        let err = Config::from_args(args(&["--config", file]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"nope\" is not an IP address"), "{err}");
        assert!(err.contains("cache.max_object_bytes"), "{err}");
    }

    #[test]
    fn outbound_section_opens_ranges_flags_replace_it_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        std::fs::write(
            &path,
            "[outbound]\nallow_cidrs = [\"10.1.0.0/16\", \"fd00::/8\"]\n\
             max_response_body_bytes = 1048576\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let c = Config::from_args(args(&["--config", file])).unwrap();
        let cidrs: Vec<String> = c
            .outbound
            .allow_cidrs
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(cidrs, ["10.1.0.0/16", "fd00::/8"]);
        assert_eq!(c.outbound.max_response_body_bytes, 1 << 20);
        assert!(Config::default().outbound.allow_cidrs.is_empty());

        let c = Config::from_args(args(&[
            "--config",
            file,
            "--outbound-allow-cidr",
            "127.0.0.0/8,::1",
        ]))
        .unwrap();
        let cidrs: Vec<String> = c
            .outbound
            .allow_cidrs
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            cidrs,
            ["127.0.0.0/8", "::1/128"],
            "flags replace the file's list"
        );

        let err = Config::from_args(args(&[
            "--outbound-allow-cidr",
            "localhost,10.0.0.0/40",
            "--outbound-max-response-body-bytes",
            "0",
        ]))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "\"localhost\" is not a CIDR",
            "\"10.0.0.0/40\" is not a CIDR",
            "max_response_body_bytes must be greater than 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        std::fs::write(&path, "htp = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::from_args(args(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("unknown field `htp`"), "{err}");
    }

    #[test]
    fn server_section_sets_connection_limits_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        std::fs::write(
            &path,
            r#"
            [server]
            idle_timeout_ms = 1500
            max_header_bytes = 16384
            max_uri_bytes = 2048
            h2_max_concurrent_streams = 50
            h2_max_pending_accept_reset_streams = 10
            "#,
        )
        .unwrap();
        let c = Config::from_args(args(&["--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(
            c.server.connections.idle_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(c.server.connections.max_header_bytes, 16384);
        assert_eq!(c.server.connections.max_uri_bytes, 2048);
        assert_eq!(c.server.connections.h2_max_concurrent_streams, 50);
        assert_eq!(c.server.connections.h2_max_pending_accept_reset_streams, 10);

        std::fs::write(
            &path,
            "[server]\nidle_timeout_ms = 0\nmax_header_bytes = 100\nmax_uri_bytes = 0\n\
             h2_max_concurrent_streams = 0\nh2_max_pending_accept_reset_streams = 0\n",
        )
        .unwrap();
        let err = Config::from_args(args(&["--config", path.to_str().unwrap()])).unwrap_err();
        let text = err.to_string();
        for needle in [
            "idle_timeout_ms must be greater than 0",
            "max_header_bytes must be at least 8192",
            "max_uri_bytes must be greater than 0",
            "h2_max_concurrent_streams must be greater than 0",
            "h2_max_pending_accept_reset_streams must be greater than 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn code_budget_is_read_from_the_file_and_the_flag_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        let path_arg = path.to_str().unwrap().to_string();
        std::fs::write(&path, "[code]\nbudget_bytes = 1000000\n").unwrap();
        let c = Config::from_args(args(&["--config", &path_arg])).unwrap();
        assert_eq!(c.code.budget_bytes, 1_000_000);
        let c =
            Config::from_args(args(&["--config", &path_arg, "--code-budget-bytes", "7"])).unwrap();
        assert_eq!(c.code.budget_bytes, 7);
        assert_eq!(Config::default().code.budget_bytes, 256 * 1024 * 1024);
        let err = Config::from_args(args(&["--code-budget-bytes", "0"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("code.budget_bytes must be greater than 0"),
            "{err}"
        );
        std::fs::write(&path, "[code]\nbudget = 3\n").unwrap();
        assert!(Config::from_args(args(&["--config", &path_arg])).is_err());
    }

    #[test]
    fn app_metrics_bound_is_read_from_the_file_and_the_flag_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        let path_arg = path.to_str().unwrap().to_string();
        std::fs::write(
            &path,
            "[app_metrics]\nmax_apps = 20\nalways = [\"acme/web\"]\n",
        )
        .unwrap();
        let c = Config::from_args(args(&["--config", &path_arg])).unwrap();
        assert_eq!(c.app_metrics.max_apps, 20);
        assert_eq!(c.app_metrics.always, ["acme/web"]);
        let c = Config::from_args(args(&["--config", &path_arg, "--per-app-series", "5"])).unwrap();
        assert_eq!(c.app_metrics.max_apps, 5);
        assert_eq!(Config::default().app_metrics.max_apps, 100);

        std::fs::write(&path, "[app_metrics]\nalways = [\"acme\", \"Acme/web\"]\n").unwrap();
        let err = Config::from_args(args(&["--config", &path_arg]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(r#""acme" is not TENANT/APP"#) && err.contains(r#""Acme/web""#),
            "{err}"
        );
        std::fs::write(&path, "[app_metrics]\nmax = 3\n").unwrap();
        assert!(Config::from_args(args(&["--config", &path_arg])).is_err());
    }
}
