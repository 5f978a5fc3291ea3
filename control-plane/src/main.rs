//! `control-plane`: parse config, start, serve until Ctrl-C or SIGTERM.

use anyhow::Context as _;
use clap::Parser as _;
use outpost_control_plane::config::{Args, Command, Config};
use outpost_control_plane::{StartError, start};
use outpost_runtime::signal::shutdown_signal;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = Args::parse();
    if let Some(Command::Migrate(migrate)) = args.command.take() {
        return outpost_control_plane::migrate::run(migrate);
    }
    let config = Config::from_args(args)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(async {
            let running = start(&config, shutdown_signal()).await?;
            println!("{}", running.banner());
            match running.stopped().await {
                // sled's hung flush may hold other threads: exit for sure.
                Err(e @ StartError::StoreClose(_)) => {
                    tracing::error!("{e}; exiting anyway");
                    std::process::exit(1);
                }
                other => Ok(other?),
            }
        })
}
