//! `control-plane`: parse config, open the store, bind, serve until Ctrl-C
//! or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use outpost_control_plane::api::ApiState;
use outpost_control_plane::config::{Args, Config};
use outpost_control_plane::server;
use outpost_control_plane::store::{SledStore, Store};
use outpost_edge_node::metrics::Metrics;
use outpost_edge_node::runtime::{PoolConfig, Runtime};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::from_args(Args::parse())?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let sealer = config
        .sealer()
        .context("loading the certificate encryption key")?;
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(&config.data_dir)
            .with_context(|| format!("opening the store in {}", config.data_dir.display()))?,
    );
    // Uploads are compiled, never instantiated, here: no pool needed.
    let pool = PoolConfig {
        enabled: false,
        ..PoolConfig::default()
    };
    let validator = Arc::new(Runtime::new(&pool, Metrics::new())?);
    let store_at_exit = store.clone();
    let state = ApiState::new(
        store,
        &config.admin_token,
        &config.node_token,
        validator,
        config.max_module_bytes,
        sealer,
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    println!("Listening on http://{}/", listener.local_addr()?);
    server::run(
        listener,
        state,
        outpost_edge_node::server::shutdown_signal(),
    )
    .await?;
    close_store(store_at_exit);
    Ok(())
}

/// Longest wait for the store to close at exit.
const STORE_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Drops the store (sled flushes on drop) on its own thread and waits for
/// it a bounded time. After the disk has filled up, sled's final flush can
/// retry forever, and the process would ignore SIGTERM; every write was
/// flushed before it was acknowledged, so giving up on this one loses
/// nothing that was promised.
fn close_store(store: Arc<dyn Store>) {
    let (done, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(store);
        let _ = done.send(());
    });
    if closed.recv_timeout(STORE_CLOSE_TIMEOUT).is_err() {
        tracing::error!(
            timeout_s = STORE_CLOSE_TIMEOUT.as_secs(),
            "the store did not close in time (a full disk?); exiting anyway: every acknowledged write is already on disk"
        );
        std::process::exit(1);
    }
}
