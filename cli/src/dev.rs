//! `outpost dev`: a control plane and an edge node in one process, state
//! under `./.outpost`, a tenant `dev` and an app `hello` (the built-in
//! example worker, or the component given) deployed, URLs printed.
//!
//! It is the real thing wired together in-process — the same API, store,
//! watch stream, sync client, TLS listener and runtime as a fleet — so what
//! works here works there. Running it again keeps every app, version,
//! certificate and token.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http::Method;
use outpost_control_plane::api::DEFAULT_MAX_MODULE_BYTES;
use outpost_control_plane::store::{SledStore, Store};
use outpost_edge_node::Config;
use outpost_edge_node::config::{ConnectionConfig, ServerConfig, SyncSettings};
use outpost_edge_node::sync::DEFAULT_KEEP_UNUSED_BYTES;
use outpost_edge_node::tls::Certificate;
use outpost_proto::{App, Deployment, Rollout, TenantCreated};
use outpost_runtime::seal::Sealer;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::args::Dev;
use crate::client::Client;
use crate::dev_projects;
use outpost_proto::manifest::MANIFEST_FILE;

/// The example worker deployed when no component is given: the C example
/// (hello, JSON echo, env), committed so `outpost dev` needs only cargo.
pub const EXAMPLE_WORKER: &[u8] = include_bytes!("../../examples/c/example.wasm");

/// The app `outpost dev` deploys, and where.
const APP: &str = "hello";
const ROUTE: &str = "hello.localhost";
const TENANT: &str = "dev";

/// Tokens kept across runs in `STATE_DIR/dev.toml` (mode 0600).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tokens {
    admin: String,
    node: String,
    tenant: Option<String>,
}

/// `len` random bytes in hex.
fn random_hex(len: usize) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn random_token(prefix: &str) -> anyhow::Result<String> {
    Ok(format!("{prefix}_{}", random_hex(16)?))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

fn load_tokens(path: &Path) -> anyhow::Result<Tokens> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tokens = Tokens {
                admin: random_token("dev_admin")?,
                node: random_token("dev_node")?,
                tenant: None,
            };
            write_private(path, &toml::to_string(&tokens)?)?;
            Ok(tokens)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The component to deploy: the file, the one `.wasm` in the directory, or
/// the built-in example.
fn worker(path: Option<&Path>) -> anyhow::Result<(Vec<u8>, String)> {
    let Some(path) = path else {
        return Ok((
            EXAMPLE_WORKER.to_vec(),
            "the built-in example worker".into(),
        ));
    };
    let file: PathBuf = if path.is_dir() {
        let wasm: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        match wasm.as_slice() {
            [one] => one.clone(),
            [] => bail!("{} holds no .wasm file", path.display()),
            _ => bail!("{} holds several .wasm files; name one", path.display()),
        }
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    Ok((bytes, file.display().to_string()))
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(dev: Dev) -> anyhow::Result<()> {
    run_until(dev, outpost_edge_node::server::shutdown_signal()).await
}

/// Runs until `shutdown` completes.
pub async fn run_until(
    dev: Dev,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // Everything that can be refused is checked before anything binds.
    let mut manifests = dev.manifests.clone();
    if manifests.is_empty() && dev.path.is_none() && Path::new(MANIFEST_FILE).is_file() {
        manifests.push(PathBuf::from(MANIFEST_FILE));
    }
    if dev.watch && manifests.is_empty() {
        bail!(
            "--watch rebuilds a project: run it where its outpost.toml is, or give --manifest FILE"
        );
    }
    let projects = dev_projects::load(&manifests)?;
    let example = if projects.is_empty() {
        Some(worker(dev.path.as_deref())?)
    } else {
        None
    };
    let state_dir = &dev.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let tokens_path = state_dir.join("dev.toml");
    let mut tokens = load_tokens(&tokens_path)?;
    // The dev state dir is the place for the key (the production control
    // plane warns when it has to keep it beside its data).
    let key_path = state_dir.join("cert.key");
    if !key_path.exists() {
        write_private(&key_path, &random_hex(32)?)?;
    }
    let sealer = Sealer::load_or_create(&key_path)?;
    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(&state_dir.join("data")).with_context(|| {
            format!(
                "opening {} (is another `outpost dev` using it?)",
                state_dir.join("data").display()
            )
        })?);

    // The control plane, then an edge node following it: each through the
    // start-up path its own binary takes.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let cp_config = outpost_control_plane::config::Config {
        listen: dev.api,
        // Plain HTTP on loopback: nothing to set up, and the CLI allows
        // plain http:// to this machine only.
        tls: None,
        etcd: None,
        data_dir: state_dir.join("data"),
        admin_token: tokens.admin.clone(),
        node_token: Some(tokens.node.clone()),
        max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
        cert_key: None,
        quotas: Default::default(),
        // Dev apps live under *.localhost, granted to the dev tenant.
        allow_localhost: true,
        apps_domain: None,
        reserved_hosts: Vec::new(),
        name: None,
        server: Default::default(),
    };
    let control_plane =
        outpost_control_plane::start_with(&cp_config, store, sealer, stopped(stop_rx.clone()))
            .await?;
    // The node and the CLI reach it on loopback, also when it listens on
    // every address: plain http:// is allowed to this machine only.
    let api_addr = match control_plane.addr {
        a if a.ip().is_unspecified() && a.is_ipv4() => {
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, a.port()))
        }
        a if a.ip().is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    };
    let node_config = Config {
        http: dev.http,
        https: Some(dev.https),
        metrics: dev.metrics,
        server: ServerConfig {
            connections: ConnectionConfig {
                shutdown_grace: Duration::from_secs(2),
                ..ConnectionConfig::default()
            },
            ..ServerConfig::default()
        },
        sync: Some(SyncSettings {
            url: format!("http://{api_addr}"),
            ca_file: None,
            registry: None,
            token: tokens.node.clone(),
            cache_dir: state_dir.join("node-cache"),
            cache_key: None,
            keep_unused_bytes: DEFAULT_KEEP_UNUSED_BYTES,
            node_id: "dev".into(),
        }),
        ..Config::default()
    };
    let edge = match outpost_edge_node::start(node_config, stopped(stop_rx)).await {
        Ok(edge) => edge,
        Err(e) => {
            control_plane.abort();
            return Err(e.into());
        }
    };
    // `*.localhost` too: every dev app is routed under it.
    edge.node
        .set_default_certificate(Certificate::self_signed(&["localhost", "*.localhost"])?.0);
    let (http, metrics) = (edge.http, edge.metrics);
    let https = edge.https.expect("https was configured");

    let setup = async {
        // Watching starts before the first build, so no edit is missed.
        let watching = if dev.watch {
            Some(dev_projects::start_watching(&projects)?)
        } else {
            None
        };
        let wasm = example.as_ref().map(|(wasm, _)| wasm.as_slice());
        // A project's manifest decides the limits; without one, whatever
        // the operator set on the dev tenant stays.
        let limits = (!projects.is_empty()).then(|| dev_projects::dev_limits(&projects));
        bootstrap(
            &api_addr.to_string(),
            &mut tokens,
            &tokens_path,
            wasm,
            limits.as_ref(),
        )
        .await?;
        let tenant_token = tokens.tenant.clone().unwrap_or_default();
        let tenant = Client::new(&format!("http://{api_addr}"), tokens.tenant.clone(), None)?;
        for project in &projects {
            match dev_projects::build_and_deploy(&tenant, project).await {
                Ok(line) => eprintln!("{line}"),
                // With --watch, the next good build serves it.
                Err(e) if dev.watch => eprintln!(
                    "{}: {e:#}\n{0}: not served until a build succeeds.",
                    project.manifest.app.name
                ),
                Err(e) => return Err(e),
            }
        }
        let port = |addr: std::net::SocketAddr| addr.port();
        println!("Listening on http://{http}/");
        println!("Listening on https://{https}/");
        println!("Metrics on http://{metrics}/metrics");
        println!("Control plane on http://{api_addr}/");
        println!();
        match &example {
            Some((_, what)) => {
                println!(
                    "Outpost dev is running {what} as app {APP:?} (state in {}; Ctrl-C stops).",
                    state_dir.display()
                );
                println!("  try:    curl http://{ROUTE}:{}/", port(http));
                println!("          curl -k https://{ROUTE}:{}/", port(https));
            }
            None => {
                println!(
                    "Outpost dev is serving {} (state in {}; Ctrl-C stops).",
                    projects
                        .iter()
                        .map(|p| format!("{} ({})", p.manifest.app.name, p.path.display()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    state_dir.display()
                );
                for project in &projects {
                    for route in dev_projects::dev_routes(project) {
                        println!(
                            "  {}:  http://{route}:{}/  https://{route}:{}/",
                            project.manifest.app.name,
                            port(http),
                            port(https)
                        );
                    }
                }
            }
        }
        println!("  CLI:    export OUTPOST_URL=http://{api_addr} OUTPOST_TOKEN={tenant_token}");
        if example.is_some() {
            println!("          outpost deploy {APP} my-worker.wasm");
        }
        println!("  admin token and node token: {}", tokens_path.display());
        if watching.is_some() {
            println!("  watching: a change to a project's files builds and deploys it again.");
        }
        anyhow::Ok((tenant, watching))
    };
    let outcome = match setup.await {
        Ok((tenant, watching)) => {
            match watching {
                Some(watching) => tokio::select! {
                    () = shutdown => {}
                    watched = dev_projects::watch(tenant, watching) => {
                        if let Err(e) = watched {
                            eprintln!("watching stopped: {e:#}");
                        }
                    }
                },
                None => shutdown.await,
            }
            eprintln!("Stopping…");
            Ok(())
        }
        Err(e) => Err(e),
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), edge.stopped()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), control_plane.stopped()).await;
    outcome
}

/// Creates the tenant on the first run and gives it `limits` (if any);
/// with `wasm` (no project), also the example app, deploys `wasm` unless
/// it is already the active version, and waits until the node serves it.
async fn bootstrap(
    api: &str,
    tokens: &mut Tokens,
    tokens_path: &Path,
    wasm: Option<&[u8]>,
    limits: Option<&outpost_proto::Limits>,
) -> anyhow::Result<()> {
    let url = format!("http://{api}");
    let admin = Client::new(&url, Some(tokens.admin.clone()), None)?;
    if tokens.tenant.is_none() {
        let created: TenantCreated = admin
            .json(Method::POST, "/v1/tenants", &json!({"name": TENANT}))
            .await
            .context("creating the dev tenant (if it exists but its token is lost, delete the state dir)")?;
        tokens.tenant = Some(created.token);
        write_private(tokens_path, &toml::to_string(&*tokens)?)?;
    }
    // Every start, so a state dir from before grants existed works too.
    let _: serde_json::Value = admin
        .json(
            Method::PUT,
            &format!("/v1/tenants/{TENANT}/domains"),
            &json!({"domains": ["localhost"]}),
        )
        .await
        .context("granting localhost to the dev tenant")?;
    // Every start too: limits a manifest no longer asks for go back to
    // the defaults.
    if let Some(limits) = limits {
        let _: serde_json::Value = admin
            .json(Method::PUT, &format!("/v1/tenants/{TENANT}/limits"), limits)
            .await
            .context("giving the dev tenant the manifests' limits")?;
    }
    let tenant = Client::new(&url, tokens.tenant.clone(), None)?;
    let Some(wasm) = wasm else {
        return Ok(());
    };
    let app: App = match tenant.get(&format!("/v1/apps/{APP}")).await {
        Ok(app) => app,
        Err(_) => {
            tenant
                .json(
                    Method::POST,
                    "/v1/apps",
                    &json!({"name": APP, "routes": [ROUTE]}),
                )
                .await?
        }
    };
    let digest = outpost_edge_node::sync::digest_of(wasm);
    let versions: Vec<Deployment> = tenant.get(&format!("/v1/apps/{APP}/deployments")).await?;
    let active = versions
        .iter()
        .find(|d| Some(d.version) == app.active_version);
    if active.is_none_or(|d| d.digest != digest) {
        let _: Deployment = tenant
            .upload(
                &format!("/v1/apps/{APP}/deployments"),
                bytes::Bytes::copy_from_slice(wasm),
                |_| {},
            )
            .await
            .context("deploying the worker")?;
    }
    // Serve before saying so: wait until the node has the revision.
    let started = Instant::now();
    let first: Rollout = tenant.get("/v1/rollout").await?;
    loop {
        let now: Rollout = tenant
            .get(&format!("/v1/rollout?revision={}", first.revision))
            .await?;
        if now.nodes > 0 && now.applied >= now.nodes {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the edge node did not pick up the deployment within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
