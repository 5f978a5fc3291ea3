//! `edge-node`: parse config, compile the apps, bind, serve until Ctrl-C or
//! SIGTERM.

use anyhow::Context as _;
use clap::Parser as _;
use outpost_edge_node::Node;
use outpost_edge_node::config::{Args, Config};
use outpost_edge_node::metrics::Metrics;
use outpost_edge_node::server::{self, Listeners};

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
    let node = Node::new(&config.pool, Metrics::new())?;
    let apps = config
        .apps
        .iter()
        .map(|app| app.read())
        .collect::<Result<Vec<_>, _>>()?;
    node.apply(apps).await?;

    let listeners = Listeners::bind(&config).await?;
    println!("{}", listeners.banner()?);
    server::run(node, listeners, config.server, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
