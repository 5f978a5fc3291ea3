//! The tenant's own apps under `outpost dev`: each project (an
//! `outpost.toml`) built, deployed to the in-process control plane and
//! served under `*.localhost`; with `--watch`, built and deployed again
//! whenever its sources change, the last good version serving meanwhile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http::Method;
use outpost_proto::EnvComparison;
use outpost_runtime::router::Route;
use tokio::sync::mpsc;

use crate::args::Wait;
use crate::client::{Client, segment};
use crate::commands::Out;
use crate::commands::deploy::{short_digest, wait_for_nodes};
use crate::commands::plan;
use crate::manifest::{self, Loaded};

/// How long a burst of file events is let settle before a build (an
/// editor's save is often several writes).
const SETTLE: Duration = Duration::from_millis(300);

/// The projects named on the command line (or `./outpost.toml`), read and
/// checked before anything binds. Two apps of one name are refused.
pub fn load(manifests: &[PathBuf]) -> anyhow::Result<Vec<Loaded>> {
    let mut out: Vec<Loaded> = Vec::new();
    for path in manifests {
        let mut loaded = manifest::load(Some(path))?;
        // Absolute, as the file watcher reports paths.
        loaded.dir = std::fs::canonicalize(&loaded.dir)
            .with_context(|| format!("resolving {}", loaded.dir.display()))?;
        if let Some(other) = out
            .iter()
            .find(|l| l.manifest.app.name == loaded.manifest.app.name)
        {
            bail!(
                "{} and {} both name app {:?}",
                other.path.display(),
                loaded.path.display(),
                loaded.manifest.app.name
            );
        }
        out.push(loaded);
    }
    Ok(out)
}

/// The routes an app gets under `outpost dev`: its `*.localhost` routes,
/// or `NAME.localhost` if it has none (the others are a real domain's,
/// which only a deploy to a fleet serves).
pub fn dev_routes(loaded: &Loaded) -> Vec<String> {
    let local: Vec<String> = loaded
        .routes()
        .into_iter()
        .filter(|r| {
            r.parse::<Route>()
                .is_ok_and(|r| r.host() == "localhost" || r.host().ends_with(".localhost"))
        })
        .collect();
    if local.is_empty() {
        vec![format!("{}.localhost", loaded.manifest.app.name)]
    } else {
        local
    }
}

/// The limits the dev tenant gets: each one any manifest asks for, the
/// largest where several do (limits are the tenant's under `outpost dev`,
/// so every app gets at least what its manifest asks).
pub fn dev_limits(projects: &[Loaded]) -> outpost_proto::Limits {
    // `None` (not asked) orders below any `Some`.
    let mut out = outpost_proto::Limits::default();
    for l in projects
        .iter()
        .filter_map(|p| p.manifest.app.limits.as_ref())
    {
        out.fuel = out.fuel.max(l.fuel);
        out.memory_mib = out.memory_mib.max(l.memory_mib);
        out.timeout_ms = out.timeout_ms.max(l.timeout_ms);
        out.max_concurrency = out.max_concurrency.max(l.max_concurrency);
    }
    out
}

/// Builds (if the manifest has a build command) and deploys one project:
/// only what changed, then its secrets from `.dev.vars`; waits until the
/// node serves it. A line saying what happened.
pub async fn build_and_deploy(client: &Client, loaded: &Loaded) -> anyhow::Result<String> {
    let started = Instant::now();
    if loaded.manifest.build.is_some() {
        let project = loaded.clone();
        tokio::task::spawn_blocking(move || crate::project::build(&project))
            .await
            .context("the build task failed")??;
    }
    let component = loaded.component();
    let wasm = std::fs::read(&component)
        .with_context(|| format!("reading the component {}", component.display()))?;
    let routes = dev_routes(loaded);
    let quiet = Out {
        json: true,
        quiet: true,
    };
    let plan = plan::plan(client, loaded, &routes, &wasm).await?;
    let deployment = if plan.is_empty() {
        None
    } else {
        plan::apply(client, loaded, &routes, &plan, wasm, quiet).await?
    };
    set_dev_secrets(client, loaded).await?;
    let wait = Wait {
        no_wait: false,
        wait_timeout: 120,
    };
    wait_for_nodes(client, &loaded.manifest.app.name, &wait, quiet).await?;
    let name = &loaded.manifest.app.name;
    let took = started.elapsed().as_secs_f64();
    Ok(match deployment {
        Some(d) => format!(
            "{name}: version {} ({}) serving after {took:.1} s",
            d.version,
            short_digest(&d.digest)
        ),
        None if plan.is_empty() => format!("{name}: up to date ({took:.1} s)"),
        None => format!("{name}: settings updated ({took:.1} s)"),
    })
}

/// The `.dev.vars` file beside a manifest: `NAME=VALUE` lines (blank
/// lines and `#` comments skipped), for the manifest's secrets under
/// `outpost dev` only; it never leaves this machine.
fn dev_vars(loaded: &Loaded) -> anyhow::Result<BTreeMap<String, String>> {
    let path = loaded.dir.join(".dev.vars");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut vars = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            bail!("{} line {}: expected NAME=VALUE", path.display(), i + 1);
        };
        let name = name.trim();
        if !loaded.manifest.app.secrets.iter().any(|s| s == name) {
            bail!(
                "{} line {}: {name:?} is not in app.secrets of {}",
                path.display(),
                i + 1,
                loaded.path.display()
            );
        }
        vars.insert(name.to_string(), value.to_string());
    }
    Ok(vars)
}

/// Sends the `.dev.vars` values that differ from what is stored.
async fn set_dev_secrets(client: &Client, loaded: &Loaded) -> anyhow::Result<()> {
    let vars = dev_vars(loaded)?;
    if vars.is_empty() {
        return Ok(());
    }
    let path = format!("/v1/apps/{}/env", segment(&loaded.manifest.app.name));
    let diff: EnvComparison = client
        .json(Method::POST, &format!("{path}/compare"), &vars)
        .await?;
    let changes: BTreeMap<&String, &String> = diff
        .changed
        .iter()
        .chain(&diff.missing)
        .map(|k| (k, &vars[k]))
        .collect();
    if !changes.is_empty() {
        let _: serde_json::Value = client.json(Method::PATCH, &path, &changes).await?;
    }
    Ok(())
}

/// `build.watch` as absolute paths (empty: the whole directory).
fn watch_list(loaded: &Loaded) -> Vec<PathBuf> {
    loaded
        .manifest
        .build
        .iter()
        .flat_map(|b| &b.watch)
        .map(|p| loaded.dir.join(p))
        .collect()
}

/// What to hand the watcher: the project's directory itself (an editor
/// that saves by renaming a new file over the old one is seen there),
/// and each watched directory with what is under it. Without a list,
/// everything under the directory.
fn watch_roots(loaded: &Loaded) -> Vec<(PathBuf, notify::RecursiveMode)> {
    use notify::RecursiveMode::{NonRecursive, Recursive};
    let list = watch_list(loaded);
    if list.is_empty() {
        return vec![(loaded.dir.clone(), Recursive)];
    }
    let mut roots = vec![(loaded.dir.clone(), NonRecursive)];
    for path in list {
        if path.is_dir() {
            roots.push((path, Recursive));
        } else if let Some(parent) = path.parent()
            && parent != loaded.dir
            && parent.is_dir()
        {
            roots.push((parent.to_path_buf(), NonRecursive));
        }
    }
    roots
}

/// Whether a change to `path` calls for a build.
fn relevant(loaded: &Loaded, path: &Path) -> bool {
    let list = watch_list(loaded);
    !is_output(loaded, path) && (list.is_empty() || list.iter().any(|w| path.starts_with(w)))
}

/// Whether a changed path is a build's own output or tool state, which
/// must not start another build.
fn is_output(loaded: &Loaded, path: &Path) -> bool {
    let component = loaded.component();
    let skip = [
        "build",
        "node_modules",
        ".venv",
        "__pycache__",
        ".outpost",
        "target",
        ".git",
    ];
    path == component
        || path == loaded.dir.join(".dev.vars")
        || path.strip_prefix(&loaded.dir).is_ok_and(|rel| {
            rel.components()
                .any(|c| skip.iter().any(|s| c.as_os_str() == *s))
        })
        || path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with('~'))
}

/// Each project's file watcher, and the changes it saw.
pub struct Watching {
    projects: Vec<Loaded>,
    changes: mpsc::UnboundedReceiver<usize>,
    /// Kept alive for as long as changes are wanted.
    _watchers: Vec<notify::RecommendedWatcher>,
}

/// Starts watching each project's files. Call it before the first build
/// and before saying the node is ready: an edit made as soon as the
/// banner shows must not be missed.
pub fn start_watching(projects: &[Loaded]) -> anyhow::Result<Watching> {
    use notify::Watcher as _;
    let (tx, rx) = mpsc::unbounded_channel::<usize>();
    let mut watchers = Vec::new();
    for (i, loaded) in projects.iter().enumerate() {
        let tx = tx.clone();
        let project = loaded.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if event.kind.is_access() {
                    return;
                }
                if event.paths.iter().any(|p| relevant(&project, p)) {
                    let _ = tx.send(i);
                }
            })
            .context("starting the file watcher")?;
        for (path, mode) in watch_roots(loaded) {
            watcher
                .watch(&path, mode)
                .with_context(|| format!("watching {}", path.display()))?;
        }
        watchers.push(watcher);
    }
    Ok(Watching {
        projects: projects.to_vec(),
        changes: rx,
        _watchers: watchers,
    })
}

/// Rebuilds and redeploys each project when its files change, until the
/// future is dropped. A failed build or deploy is printed and the version
/// before it keeps serving.
pub async fn watch(client: Client, watching: Watching) -> anyhow::Result<()> {
    let Watching {
        projects,
        changes: mut rx,
        _watchers,
    } = watching;
    while let Some(first) = rx.recv().await {
        let mut changed = vec![first];
        // Let the burst settle, then build each changed project once.
        tokio::time::sleep(SETTLE).await;
        while let Ok(i) = rx.try_recv() {
            changed.push(i);
        }
        changed.sort_unstable();
        changed.dedup();
        for i in changed {
            let loaded = &projects[i];
            let name = &loaded.manifest.app.name;
            println!("{name}: change seen, building…");
            match build_and_deploy(&client, loaded).await {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!(
                    "{name}: {e:#}\n{name}: the version before this change keeps serving."
                ),
            }
        }
    }
    Ok(())
}
