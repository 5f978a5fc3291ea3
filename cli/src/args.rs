//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Deploy and manage WebAssembly workers on Outpost.
#[derive(Debug, Parser)]
#[command(
    name = "outpost",
    version,
    about = "Deploy and manage WebAssembly workers on an Outpost control plane, or run one locally with `outpost dev`.",
    after_help = "The control plane and token come from --url/--token, else OUTPOST_URL/OUTPOST_TOKEN, else the file `outpost login` writes."
)]
pub struct Cli {
    /// Control plane URL: https://, or http:// to this machine [default: the saved login, else
    /// http://127.0.0.1:7070].
    #[arg(long, global = true, env = "OUTPOST_URL", value_name = "URL")]
    pub url: Option<String>,
    /// PEM file of the CA that signed the control plane's certificate [default: the saved
    /// login's, else the system's roots].
    #[arg(long, global = true, env = "OUTPOST_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Bearer token (admin or tenant) [default: the saved login].
    #[arg(long, global = true, env = "OUTPOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Which saved login to use or save (`outpost login --profile staging`) [default: the one
    /// `outpost profiles use` chose, else `default`].
    #[arg(long, global = true, env = "OUTPOST_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars or spinners (there are none when stderr is not a terminal either).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save the control plane URL and token for later commands (checks them first).
    Login,
    /// Forget the saved login of this profile (the token stays valid: revoke it with `outpost
    /// tokens revoke`).
    Logout,
    /// Show who the token is (admin or which tenant), its limits, and where the login is saved.
    Whoami,
    /// List the saved logins, or choose the one used by default.
    #[command(subcommand)]
    Profiles(Profiles),
    /// Manage tenants (admin token).
    #[command(subcommand)]
    Tenants(Tenants),
    /// Manage your tenant's API tokens (tenant token).
    #[command(subcommand)]
    Tokens(Tokens),
    /// Manage your apps (tenant token).
    #[command(subcommand)]
    Apps(Apps),
    /// Upload a component and make it the app's active version.
    Deploy(Deploy),
    /// List an app's versions.
    Deployments {
        /// The app.
        app: String,
    },
    /// Make an earlier version active again.
    Rollback(Rollback),
    /// Manage an app's environment variables.
    #[command(subcommand)]
    Env(Env),
    /// Set secret environment variables without typing them on the command line.
    #[command(subcommand)]
    Secrets(Secrets),
    /// Manage TLS certificates for your hosts.
    #[command(subcommand)]
    Certs(Certs),
    /// List edge nodes with their revision and lag, or manage their own identities (admin token).
    Nodes(NodesArgs),
    /// Print an app's guest stdout/stderr, as collected from the nodes.
    Logs(Logs),
    /// Your objects in the edge nodes' cache of your workers' origin fetches (tenant token).
    #[command(subcommand)]
    Cache(Cache),
    /// Run a control plane and an edge node in this process, with an example worker.
    Dev(Dev),
    /// Create a project (source, outpost.toml, build script, README) that builds and serves.
    New(New),
    /// Run the manifest's build command and check the component before anything is uploaded.
    Build(Build),
    /// Print a shell completion script: `source <(outpost completions bash)`, or save it where
    /// the shell looks (e.g. ~/.local/share/bash-completion/completions/outpost,
    /// ~/.zfunc/_outpost, ~/.config/fish/completions/outpost.fish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `outpost tenants …`.
#[derive(Debug, Subcommand)]
pub enum Tenants {
    /// Create a tenant; prints its token (shown only once).
    Create {
        /// Tenant name (a-z, 0-9, '-').
        name: String,
        /// A domain the tenant may route (with every name under it); repeatable.
        #[arg(long = "domain", value_name = "DOMAIN")]
        domains: Vec<String>,
    },
    /// List tenants with their domains and usage.
    List,
    /// Set a tenant's limits (unset flags go back to the node defaults).
    Limits(TenantLimits),
    /// Set the domains a tenant may route (replaces the list; none: no grant).
    Domains {
        /// The tenant.
        name: String,
        /// Domains, each covering every name under it.
        domains: Vec<String>,
    },
    /// Override a tenant's quotas (unset flags go back to the operator's defaults).
    Quotas(TenantQuotas),
    /// Disable a tenant: its hosts answer 403 and its token can no longer change anything.
    Disable {
        /// The tenant.
        name: String,
    },
    /// Enable a disabled tenant again.
    Enable {
        /// The tenant.
        name: String,
    },
    /// Delete a tenant with all its apps, versions, certificates and tokens.
    Delete {
        /// The tenant.
        name: String,
        /// Required: deleting cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// `outpost tenants quotas`.
#[derive(Debug, Args)]
pub struct TenantQuotas {
    /// The tenant.
    pub name: String,
    /// Apps.
    #[arg(long)]
    pub apps: Option<u64>,
    /// Routes in one app.
    #[arg(long)]
    pub routes_per_app: Option<u64>,
    /// Distinct hosts.
    #[arg(long)]
    pub hosts: Option<u64>,
    /// Bytes of environment in one app.
    #[arg(long)]
    pub env_bytes_per_app: Option<u64>,
    /// Certificates.
    #[arg(long)]
    pub certificates: Option<u64>,
    /// MiB of components kept.
    #[arg(long)]
    pub stored_mib: Option<u64>,
    /// Versions kept per app.
    #[arg(long)]
    pub versions_per_app: Option<u64>,
}

/// `outpost tokens …`.
#[derive(Debug, Subcommand)]
pub enum Tokens {
    /// Create a named token; prints it (shown only once).
    Create {
        /// Token name (a-z, 0-9, '-'), unique within your tenant.
        name: String,
    },
    /// List your tokens (names and creation times; never the tokens).
    List,
    /// Revoke a token: requests with it are refused from now on.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// `outpost nodes [add|revoke|identities]`: without a subcommand, the
/// fleet list, as before identities existed.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// What to do with node identities; none: list the nodes.
    #[command(subcommand)]
    pub command: Option<Nodes>,
}

/// `outpost nodes …`.
#[derive(Debug, Subcommand)]
pub enum Nodes {
    /// Create a node's own identity; prints its token (shown only once). The node's id is NAME.
    Add {
        /// Node name (a-z, 0-9, '-'): the node's id in the fleet.
        name: String,
    },
    /// Revoke a node identity: its token is refused from now on and its stream ends.
    Revoke {
        /// The node's name.
        name: String,
    },
    /// List node identities (names and creation times; never the tokens).
    Identities,
}

/// `outpost tenants limits`.
#[derive(Debug, Args)]
pub struct TenantLimits {
    /// The tenant.
    pub name: String,
    /// Fuel per request.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Linear memory per instance, MiB.
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// Wall-clock deadline per request, ms.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Instances of one app at once.
    #[arg(long)]
    pub max_concurrency: Option<u32>,
}

/// `outpost apps …`.
#[derive(Debug, Subcommand)]
pub enum Apps {
    /// Create an app served on one or more routes.
    Create {
        /// App name (a-z, 0-9, '-').
        name: String,
        /// HOST or HOST/PATH-PREFIX; repeatable.
        #[arg(long = "route", required = true, value_name = "ROUTE")]
        routes: Vec<String>,
        /// A host (or host:port) the worker may call over outbound HTTP; repeatable.
        #[arg(long = "allow-outbound", value_name = "HOST")]
        allow_outbound: Vec<String>,
    },
    /// Replace the hosts an app may call over outbound HTTP (none: deny all).
    AllowOutbound {
        /// The app.
        name: String,
        /// host or host:port, repeatable.
        #[arg(value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// List your apps.
    List,
    /// Show one app.
    Show {
        /// The app.
        name: String,
    },
    /// Delete an app, its routes and its versions.
    Delete {
        /// The app.
        name: String,
    },
}

/// `outpost new`.
#[derive(Debug, Args)]
pub struct New {
    /// The app's name (a-z, 0-9, '-'); also the directory's, unless --dir.
    pub name: String,
    /// The language.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to create it [default: ./NAME]; must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Languages `outpost new` has a template for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    /// C: clang + wasi-libc, wit-bindgen, wasm-tools.
    C,
    /// JavaScript: componentize-js, in the project's own node_modules.
    Js,
    /// Python: componentize-py, in the project's own virtualenv.
    Python,
    /// Rust: cargo and the wasm32-wasip2 target (`rustup target add wasm32-wasip2`).
    Rust,
}

/// `outpost profiles …`.
#[derive(Debug, Subcommand)]
pub enum Profiles {
    /// List the saved logins (tokens are never printed).
    List,
    /// Use this saved login when no --profile or OUTPOST_PROFILE is given.
    Use {
        /// The profile.
        name: String,
    },
}

/// `outpost build`.
#[derive(Debug, Args)]
pub struct Build {
    /// The manifest [default: ./outpost.toml].
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

/// `outpost deploy`: the app of `outpost.toml`, or APP FILE.
#[derive(Debug, Args)]
#[command(
    after_help = "Without APP and FILE, reads outpost.toml (or --manifest) and brings the app to it: creates it if missing, updates routes, outbound hosts and env, and uploads the component only if the active version runs another."
)]
pub struct Deploy {
    /// The app [default: the manifest's].
    #[arg(requires = "file")]
    pub app: Option<String>,
    /// The component (`.wasm`) [default: the manifest's].
    pub file: Option<PathBuf>,
    /// The manifest to deploy [default: ./outpost.toml].
    #[arg(long, value_name = "FILE", conflicts_with = "app")]
    pub manifest: Option<PathBuf>,
    /// Print what would change and change nothing.
    #[arg(long, conflicts_with = "app")]
    pub dry_run: bool,
    #[command(flatten)]
    pub wait: Wait,
}

/// `outpost cache …`.
#[derive(Debug, Subcommand)]
pub enum Cache {
    /// Remove objects from every edge node's cache; waits until every live node has.
    Purge(Purge),
}

/// `outpost cache purge`: exactly one of URL, --key, --all.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["target", "key", "all"])))]
pub struct Purge {
    /// An absolute URL as your worker fetched it (every method and variant of it).
    #[arg(value_name = "URL")]
    pub target: Option<String>,
    /// A surrogate key: every object whose `Surrogate-Key` response header named it.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Everything your workers' fetches stored.
    #[arg(long)]
    pub all: bool,
    /// Waiting for the nodes (at most 60 s).
    #[command(flatten)]
    pub wait: Wait,
}

/// Waiting for nodes.
#[derive(Debug, Args)]
pub struct Wait {
    /// Return once the control plane accepted it, without waiting for nodes.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting for the nodes after this many seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub wait_timeout: u64,
}

/// `outpost rollback`.
#[derive(Debug, Args)]
pub struct Rollback {
    /// The app.
    pub app: String,
    /// The version to make active.
    pub version: u64,
    #[command(flatten)]
    pub wait: Wait,
}

/// `outpost env …`.
#[derive(Debug, Subcommand)]
pub enum Env {
    /// Set variables (others are kept).
    Set {
        /// The app.
        app: String,
        /// KEY=VALUE, repeatable.
        #[arg(required = true, value_name = "KEY=VALUE")]
        vars: Vec<String>,
    },
    /// Remove variables.
    Unset {
        /// The app.
        app: String,
        /// Names, repeatable.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// List variable names (values are never shown back).
    List {
        /// The app.
        app: String,
    },
}

/// `outpost secrets …`.
#[derive(Debug, Subcommand)]
pub enum Secrets {
    /// Set one variable to a value read from standard input (prompted for,
    /// unechoed, on a terminal) or from --file, so it stays out of shell
    /// history and process lists. One trailing newline is dropped.
    /// Remove it with `outpost env unset`.
    Set {
        /// The app.
        app: String,
        /// The variable's name.
        name: String,
        /// Read the value from this file instead of standard input.
        #[arg(long, value_name = "PATH")]
        file: Option<std::path::PathBuf>,
    },
}

/// `outpost certs …`.
#[derive(Debug, Subcommand)]
pub enum Certs {
    /// Install a certificate for one of your hosts (HOST or *.DOMAIN).
    Put {
        /// The hostname.
        host: String,
        /// PEM certificate chain, leaf first.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// PEM private key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// List your certificates.
    List,
    /// Remove a certificate.
    Delete {
        /// The hostname.
        host: String,
    },
}

/// `outpost logs`.
#[derive(Debug, Args)]
pub struct Logs {
    /// The app.
    pub app: String,
    /// Keep printing new lines as they arrive.
    #[arg(long, short)]
    pub follow: bool,
}

/// `outpost dev`.
#[derive(Debug, Args)]
pub struct Dev {
    /// A component (FILE.wasm) or a directory holding exactly one, deployed as app `hello`
    /// [default: the built-in example worker].
    pub path: Option<PathBuf>,
    /// Serve the app of this outpost.toml instead of the example (repeatable: several apps at
    /// once) [default: ./outpost.toml if there is one].
    #[arg(long = "manifest", value_name = "FILE", conflicts_with = "path")]
    pub manifests: Vec<PathBuf>,
    /// Build and deploy a project's app again whenever its files change; while a build
    /// fails, the last good version keeps serving.
    #[arg(long)]
    pub watch: bool,
    /// Where state is kept (control plane data, node cache, tokens).
    #[arg(long, default_value = ".outpost", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The control plane's API listener.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    pub api: SocketAddr,
    /// The node's HTTP listener.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub http: SocketAddr,
    /// The node's HTTPS listener (self-signed certificate).
    #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
    pub https: SocketAddr,
    /// The node's metrics listener.
    #[arg(long, default_value = "127.0.0.1:9100", value_name = "ADDR")]
    pub metrics: SocketAddr,
}
