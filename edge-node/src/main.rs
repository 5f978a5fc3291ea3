//! `edge-node`: parse config, compile the apps, bind, serve until Ctrl-C or
//! SIGTERM.

use anyhow::Context as _;
use clap::Parser as _;
use outpost_edge_node::Node;
use outpost_edge_node::config::{Args, Config};
use outpost_edge_node::metrics::Metrics;
use outpost_edge_node::server::{self, Listeners};
use outpost_edge_node::sync::{self, Cache, SyncConfig};
use outpost_edge_node::tls;

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
    let node = Node::with_lanes(&config.pool, &config.lanes, Metrics::new())?;
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
        .collect::<Result<Vec<_>, _>>()?;
    node.apply(apps).await?;

    // Sync mode serves its cached snapshot before binding, so a restarted
    // node answers even while the control plane is down.
    let follow = match &config.sync {
        Some(settings) => {
            let cache =
                Cache::open(&settings.cache_dir)?.keep_unused_bytes(settings.keep_unused_bytes);
            let applied = sync::restore(&node, &cache, &config.limits)
                .await?
                .unwrap_or(0);
            let sync_config = SyncConfig {
                url: settings.url.clone(),
                token: settings.token.clone(),
                defaults: config.limits.clone(),
                node_id: settings.node_id.clone(),
            };
            Some((sync_config, cache, applied))
        }
        None => None,
    };

    let listeners = Listeners::bind(&config).await?;
    println!("{}", listeners.banner()?);
    if let Some((sync_config, cache, applied)) = follow {
        tokio::spawn(sync::follow(node.clone(), sync_config, cache, applied));
    }
    server::run(node, listeners, config.server, server::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
