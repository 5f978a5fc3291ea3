//! `outpost`: parse, run, and on failure print one line and exit 1.

use clap::Parser as _;

fn main() {
    let cli = outpost_cli::args::Cli::parse();
    // Logs (from `outpost dev`'s servers) go to stderr; RUST_LOG filters.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(outpost_cli::commands::run(cli)) {
        // One line: the chain of causes, joined.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
