//! The one start-up path of an edge node, shared by the `edge-node`
//! binary, `outpost dev` and the tests, so its ordering holds everywhere:
//!
//! 1. the runtime, the default certificate and the compile cache;
//! 2. the standalone apps, every one compiled and trial-instantiated — a
//!    bad component fails here, before any port is bound;
//! 3. in sync mode, the cached snapshot applied — so a node with a cache
//!    serves its last state from its first request, even while the control
//!    plane is down;
//! 4. only then the listeners bound, and the follower started.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::server::{self, Listeners};
use crate::sync::{self, Cache, Follower, SyncConfig};
use crate::tls;

/// A node that serves: its addresses, and the tasks serving and following.
pub struct Running {
    /// The node (its apps, certificates and metrics).
    pub node: Arc<Node>,
    /// Where client HTTP is served.
    pub http: SocketAddr,
    /// Where client HTTPS is served, if configured.
    pub https: Option<SocketAddr>,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics: SocketAddr,
    /// The revision the node served when its listeners were bound: the
    /// cached snapshot's, or 0.
    pub restored_revision: u64,
    server: JoinHandle<Result<()>>,
    follower: Option<JoinHandle<std::result::Result<(), sync::SyncError>>>,
}

impl Running {
    /// The lines scripts and tests wait for, with the bound addresses.
    pub fn banner(&self) -> String {
        let mut out = format!("Listening on http://{}/\n", self.http);
        if let Some(https) = self.https {
            out.push_str(&format!("Listening on https://{https}/\n"));
        }
        out.push_str(&format!("Metrics on http://{}/metrics", self.metrics));
        out
    }

    /// Waits until the shutdown future given to [`start`] completes and
    /// in-flight requests are done (or their grace period is over), then
    /// stops following the control plane. Ends early, with
    /// [`Error::Refused`], when the control plane refuses a node that has
    /// nothing to serve.
    pub async fn stopped(mut self) -> Result<()> {
        let served = match self.follower.take() {
            None => self.server.await,
            Some(mut follower) => tokio::select! {
                served = &mut self.server => {
                    follower.abort();
                    served
                }
                Ok(Err(refused)) = &mut follower => {
                    // Nothing was served but 404s: no grace needed.
                    self.server.abort();
                    return Err(Error::Refused(Box::new(refused)));
                }
            },
        };
        match served {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e).into()),
        }
    }

    /// Stops at once: no grace for in-flight requests.
    pub fn abort(&self) {
        self.server.abort();
        if let Some(follower) = &self.follower {
            follower.abort();
        }
    }
}

/// Starts a node as `config` says and serves until `shutdown` completes.
/// Returns once the listeners are bound (and, with a cache, the cached
/// snapshot is being served). Bad config, a bad component or a port in
/// use is an error, and then nothing was bound.
pub async fn start(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running> {
    let metrics = Metrics::new();
    metrics.runtime.set_per_app(config.app_metrics.clone());
    let node = Node::with_lanes(&config.pool, &config.lanes, metrics)?;
    node.runtime().configure_code(&config.code);
    node.runtime().edge_cache().configure(config.cache.clone());
    node.runtime().network().configure(config.outbound.clone());
    if config.https.is_some() {
        node.set_default_certificate(tls::default_certificate(config.tls_default.as_ref())?);
    }
    if let Some(settings) = &config.sync {
        node.runtime()
            .enable_compile_cache(&settings.cache_dir.join("compiled"))?;
    }
    let apps = config
        .apps
        .iter()
        .map(|app| app.read())
        .collect::<Result<Vec<_>>>()?;
    node.apply(apps).await?;

    let follow = match &config.sync {
        Some(settings) => {
            let sealer = match &settings.cache_key {
                Some(key) => outpost_runtime::seal::Sealer::from_hex(key)
                    .map_err(|e| Error::Config(vec![format!("--cache-key: {e}")]))?,
                None => sync::cache::sealer_from_token(&settings.token),
            };
            let cache = Cache::open(&settings.cache_dir, sealer)?
                .keep_unused_bytes(settings.keep_unused_bytes);
            // Read and verified once: the follower starts from it too.
            let restored = sync::restore(&node, &cache, &config.limits).await?;
            let sync_config = SyncConfig {
                url: settings.url.clone(),
                ca_file: settings.ca_file.clone(),
                registry: settings.registry.clone(),
                token: settings.token.clone(),
                defaults: config.limits.clone(),
                node_id: settings.node_id.clone(),
            };
            Some(Follower::new(node.clone(), sync_config, cache, restored)?)
        }
        None => None,
    };
    let restored_revision = follow.as_ref().map_or(0, Follower::served_revision);

    let listeners = Listeners::bind(&config).await?;
    let http = listeners.http.local_addr()?;
    let https = match &listeners.https {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let metrics = listeners.metrics.local_addr()?;
    // Known only now (port 0 picks one); before anything is served.
    node.runtime().network().set_own_listeners(
        [Some(http), https, Some(metrics)]
            .into_iter()
            .flatten()
            .collect(),
    );
    let follower = follow.map(|f| tokio::spawn(f.run()));
    let server = tokio::spawn(server::run(
        node.clone(),
        listeners,
        config.server.clone(),
        shutdown,
    ));
    Ok(Running {
        node,
        http,
        https,
        metrics,
        restored_revision,
        server,
        follower,
    })
}
