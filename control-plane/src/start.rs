//! The one start-up path of a control plane, shared by the
//! `control-plane` binary, `outpost dev` and the tests: the sealing key,
//! the store, the validating runtime, the API state, then the listener.
//! Anything refused (a bad key, a store another process holds, a port in
//! use) fails before the port is bound.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use outpost_runtime::{PoolConfig, Runtime};
use tokio::task::JoinHandle;

use crate::api::{ApiState, Policy};
use crate::config::Config;
use crate::server;
use crate::store::{EtcdStore, RegistryBlobs, SledStore, Store, StoreError};
use outpost_runtime::seal::{Sealer, SecretError};

/// Why a control plane could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key sealing private keys and secrets is unusable.
    #[error("loading the sealing key: {0}")]
    Sealer(#[from] SecretError),
    /// The stored secrets do not open with the key, or could not be sealed.
    #[error(transparent)]
    Secrets(#[from] crate::env::SealStoredError),
    /// The store could not be opened.
    #[error("opening the store in {dir}: {source}")]
    Store {
        /// Its directory.
        dir: std::path::PathBuf,
        /// Why.
        source: StoreError,
    },
    /// etcd or the registry could not be reached or used.
    #[error("opening the etcd store at {endpoints}: {source}")]
    Etcd {
        /// The members.
        endpoints: String,
        /// Why.
        source: StoreError,
    },
    /// The validating runtime could not be set up.
    #[error(transparent)]
    Runtime(#[from] outpost_runtime::Error),
    /// The API's certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The API address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
    /// The store did not close within its bound (after a full disk, sled's
    /// last flush can retry forever). Every acknowledged write was flushed
    /// before it was acknowledged, so giving up on this one loses nothing.
    #[error(
        "the store did not close within {} s (a full disk?); every acknowledged write is already on disk",
        .0.as_secs()
    )]
    StoreClose(Duration),
}

/// Longest wait for the store to close at exit.
const STORE_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A serving control plane.
pub struct Running {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// Whether it serves HTTPS.
    pub tls: bool,
    /// The API's state (store, tokens, validator).
    pub state: Arc<ApiState>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// The API's base URL (`https://` when it serves TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The line scripts and tests wait for.
    pub fn banner(&self) -> String {
        format!("Listening on {}/", self.url())
    }

    /// Waits until the shutdown future given to [`start`] completes and the
    /// API has stopped, then closes the store (bounded).
    pub async fn stopped(self) -> Result<(), StartError> {
        let served = self.server.await;
        let store = self.state.store().clone();
        drop(self.state);
        close_store(store)?;
        match served {
            Ok(result) => Ok(result?),
            Err(e) => Err(std::io::Error::other(e).into()),
        }
    }

    /// Stops at once, leaving the store to close when its last user goes.
    pub fn abort(&self) {
        self.server.abort();
    }
}

/// Starts a control plane over its store — etcd with module bytes in a
/// registry when `config.etcd` says so, else sled in `config.data_dir` —
/// and serves until `shutdown` completes.
pub async fn start(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    let sealer = config.sealer()?;
    let store: Arc<dyn Store> = match &config.etcd {
        Some(etcd) => {
            let failed = |source| StartError::Etcd {
                endpoints: etcd.endpoints.join(","),
                source,
            };
            let options = etcd.options().map_err(|e| failed(StoreError::io(&e)))?;
            let blobs = Arc::new(RegistryBlobs::new(&etcd.registry).map_err(failed)?);
            // The client connects (and blocks) on a runtime of its own.
            let endpoints = etcd.endpoints.clone();
            let store =
                tokio::task::spawn_blocking(move || EtcdStore::connect(&endpoints, options, blobs))
                    .await
                    .map_err(|e| failed(StoreError::Backend(e.to_string())))?
                    .map_err(failed)?;
            Arc::new(store)
        }
        None => {
            Arc::new(
                SledStore::open(&config.data_dir).map_err(|source| StartError::Store {
                    dir: config.data_dir.clone(),
                    source,
                })?,
            )
        }
    };
    start_with(config, store, sealer, shutdown).await
}

/// [`start`] over any `store` (an existing one, a faulty one for tests)
/// with this sealing key; `config.data_dir` and `config.cert_key` are not
/// used.
pub async fn start_with(
    config: &Config,
    store: Arc<dyn Store>,
    sealer: Sealer,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, StartError> {
    // `Config::from_args` checked this already; a config built in code
    // (tests, `outpost dev`) is checked here, still before binding.
    let problems = config.server.problems();
    if !problems.is_empty() {
        return Err(crate::config::ConfigError(problems).into());
    }
    let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    // Uploads are compiled and trial-instantiated in a small pool shaped
    // like the nodes' (see `PoolConfig::for_validation`).
    let validator = Arc::new(Runtime::new(
        &PoolConfig::for_validation(),
        outpost_runtime::Metrics::new(),
    )?);
    crate::env::seal_stored(store.as_ref(), &sealer)?;
    if config.node_token.is_none() {
        tracing::info!("no shared node token: only nodes with their own identity can connect");
    }
    let state = ApiState::new(
        store,
        &config.admin_token,
        config.node_token.as_deref(),
        validator,
        config.max_module_bytes,
        sealer,
    );
    let state = state.with_policy(Policy {
        quotas: config.quotas.clone(),
        allow_localhost: config.allow_localhost,
        apps_domain: config.apps_domain.clone(),
        reserved: config.reserved_hosts.clone(),
    });
    let listener = outpost_serve::bind(config.listen).map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let addr = listener.local_addr()?;
    let served_tls = tls.is_some();
    let state = state.with_name(
        config
            .name
            .clone()
            .unwrap_or_else(|| format!("{}:{}", hostname(), addr.port())),
    );
    if state.store().shared() {
        tokio::spawn(crate::fanout::follow(
            Arc::downgrade(&state),
            crate::fanout::INTERVAL,
        ));
        tokio::spawn(crate::fleet::publish(
            Arc::downgrade(&state),
            crate::fleet::INTERVAL,
        ));
    }
    let server = tokio::spawn(server::run(
        server::Listener {
            tcp: listener,
            tls,
            config: config.server.clone(),
        },
        state.clone(),
        shutdown,
    ));
    Ok(Running {
        addr,
        tls: served_tls,
        state,
        server,
    })
}

/// This machine's name (a pod's name in Kubernetes), for the default
/// control-plane name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "control-plane".into())
}

/// Drops the store (sled flushes on drop) on its own thread and waits for
/// it a bounded time.
fn close_store(store: Arc<dyn Store>) -> Result<(), StartError> {
    let (done, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(store);
        let _ = done.send(());
    });
    closed
        .recv_timeout(STORE_CLOSE_TIMEOUT)
        .map_err(|_| StartError::StoreClose(STORE_CLOSE_TIMEOUT))
}
