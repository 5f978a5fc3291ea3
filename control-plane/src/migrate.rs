//! `control-plane migrate`: the upgrade path from one control plane on
//! sled to several on etcd and an OCI registry, in one command.
//!
//! The source is the stopped control plane's data directory; the target
//! an empty etcd prefix (what the new control planes get as `--store`)
//! and the registry they get as `--registry`. Records move as they are
//! stored, so every token, sealed secret and certificate keeps working
//! with the same sealing key, and the revision is the source's: a node
//! switched to the new control planes resumes where it was and compiles
//! nothing again. See [`crate::store::Copied`] for what is safe to
//! interrupt.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::config::{ConfigError, EtcdArgs, EtcdConfig};
use crate::store::{EtcdKv, EtcdStore, RegistryBlobs, SledStore};

/// `control-plane migrate` flags.
#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The data directory of the sled control plane to move (stop it first: sled admits one
    /// process).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The etcd prefix to fill, empty (or left by an interrupted migrate), as the new control
    /// planes' --store: etcd://HOST:PORT[,HOST:PORT…][/PREFIX].
    #[arg(long, value_name = "URL")]
    pub to: String,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub registry: outpost_oci::RegistryArgs,
    /// The key the source's secrets are sealed with, which the new control planes need as
    /// --cert-key [default: the one in DIR/cert.key].
    #[arg(
        long,
        env = "OUTPOST_CERT_KEY",
        hide_env_values = true,
        value_name = "HEX"
    )]
    pub cert_key: Option<String>,
}

/// Moves the store and prints what moved. Nothing is written to the
/// target before the source has opened and its secrets have opened with
/// the key.
pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let registry =
        args.registry
            .resolve(Default::default(), std::path::Path::new(""), &mut problems);
    let etcd = EtcdConfig::resolve("--to", &args.to, args.etcd, registry, &mut problems);
    let key_file = args.from.join("cert.key");
    let cert_key = match args.cert_key {
        Some(key) => Some(key),
        None => match std::fs::read_to_string(&key_file) {
            Ok(key) => Some(key),
            Err(e) => {
                problems.push(format!(
                    "no --cert-key, and {} cannot be read ({e}): give the key the source was sealed with",
                    key_file.display()
                ));
                None
            }
        },
    };
    let sealer = cert_key.and_then(|key| {
        outpost_runtime::seal::Sealer::from_hex(&key)
            .map_err(|e| problems.push(format!("--cert-key: {e}")))
            .ok()
    });
    if !args.from.join("db").exists() {
        problems.push(format!(
            "--from {}: no sled store there",
            args.from.display()
        ));
    }
    let (Some(etcd), Some(sealer)) = (etcd, sealer) else {
        return Err(ConfigError(problems).into());
    };
    if !problems.is_empty() {
        return Err(ConfigError(problems).into());
    }

    let source = SledStore::open(&args.from).with_context(|| {
        format!(
            "opening the sled store in {} (is its control plane still running?)",
            args.from.display()
        )
    })?;
    // The same check a control plane makes at start: a wrong key stops
    // here, before the target is touched.
    crate::env::seal_stored(&source, &sealer).context("checking the sealing key")?;
    let options = etcd
        .options()
        .context("reading the etcd CA file (--etcd-ca-file)")?;
    let blobs = RegistryBlobs::new(&etcd.registry).context("setting up the registry client")?;
    let target = EtcdKv::connect(&etcd.endpoints, options)
        .with_context(|| format!("connecting to etcd at {}", etcd.endpoints.join(",")))?;
    // The marker names the source as a canonical path, so a rerun spelled
    // differently still finishes its own copy.
    let source_name = std::fs::canonicalize(&args.from)
        .unwrap_or_else(|_| args.from.clone())
        .display()
        .to_string();
    let copied = source
        .copy_into(&target, &blobs, &source_name)
        .with_context(|| format!("copying into {}", args.to))?;
    // Opened as a control plane would open it: the schema markers came
    // along, and the secrets open with the same key.
    let store = EtcdStore::from_kv(target, std::sync::Arc::new(blobs))
        .context("opening the copied store")?;
    crate::env::seal_stored(&store, &sealer).context("checking the copied secrets")?;

    println!(
        "Migrated {} into {} at revision {}:",
        args.from.display(),
        args.to,
        copied.revision
    );
    for (tree, count) in &copied.records {
        println!("  {tree}: {count}");
    }
    println!(
        "  modules pushed to {}: {} ({} bytes)",
        etcd.registry.url, copied.modules, copied.module_bytes
    );
    println!(
        "Start the control planes with --store {} --registry {} and the same --cert-key; nodes keep their caches.",
        args.to, etcd.registry.url
    );
    Ok(())
}
