//! Deploys, versions, rollbacks (each waiting for the nodes), and logs.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::Method;
use indicatif::{ProgressBar, ProgressStyle};
use outpost_proto::{App, Deployment, GuestLogLine, Rollout};
use serde_json::json;

use super::{Out, ago, table, when};
use crate::args::{Deploy, Logs, Rollback, Wait};
use crate::client::{Client, segment};

/// Waits until every live node serves the control plane's current revision
/// (which includes the change just made to `app`). Returns the rollout seen
/// last. If a node could not load `app`, says why and fails: waiting
/// longer would not change that.
pub(crate) async fn wait_for_nodes(
    client: &Client,
    app: &str,
    wait: &Wait,
    out: Out,
) -> anyhow::Result<Option<Rollout>> {
    if wait.no_wait {
        return Ok(None);
    }
    let started = Instant::now();
    let first: Rollout = client.get("/v1/rollout").await?;
    let path = format!("/v1/rollout?revision={}", first.revision);
    let spinner = out.progress().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let done = |bar: &Option<ProgressBar>| {
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    };
    loop {
        let now: Rollout = match client.get(&path).await {
            Ok(now) => now,
            Err(e) => {
                done(&spinner);
                return Err(e);
            }
        };
        if now.nodes == 0 {
            done(&spinner);
            if !out.json {
                eprintln!("No edge node is connected to this control plane; not waiting.");
            }
            return Ok(Some(now));
        }
        if now.applied >= now.nodes {
            done(&spinner);
            // Every node is at the revision, so what they report unavailable
            // is about this change. (A tenant sees `tenant/app` keys of its
            // own apps only.)
            let failed: Vec<_> = now
                .unavailable
                .iter()
                .filter(|u| u.app.rsplit_once('/').is_some_and(|(_, a)| a == app))
                .collect();
            if let Some(first) = failed.first() {
                bail!(
                    "app {app:?} does not load on {}/{} node(s) (it answers 503 app_unavailable there): {} (node {})",
                    failed.len(),
                    now.nodes,
                    first.reason,
                    first.node
                );
            }
            if !out.json {
                eprintln!(
                    "Live on {}/{} node(s) (revision {}) after {:.1} s.",
                    now.applied,
                    now.nodes,
                    now.revision,
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(Some(now));
        }
        let behind = if now.lagging.is_empty() {
            String::new()
        } else {
            format!("; behind: {}", now.lagging.join(", "))
        };
        if started.elapsed() > Duration::from_secs(wait.wait_timeout) {
            done(&spinner);
            bail!(
                "only {}/{} node(s) serve revision {} after {} s{behind} (the change is saved; nodes will catch up)",
                now.applied,
                now.nodes,
                now.revision,
                wait.wait_timeout
            );
        }
        if let Some(bar) = &spinner {
            // A node named only once it has had a few seconds: most
            // rollouts finish before that.
            let named = if started.elapsed() >= NAME_LAGGING_AFTER {
                behind.as_str()
            } else {
                ""
            };
            bar.set_message(format!(
                "waiting for nodes: {}/{} serve revision {}{named}",
                now.applied, now.nodes, now.revision
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long a rollout runs before the spinner names the nodes behind.
const NAME_LAGGING_AFTER: Duration = Duration::from_secs(3);

/// `outpost deploy APP FILE`, or from the manifest without them.
pub async fn deploy(client: &Client, cmd: Deploy, out: Out) -> anyhow::Result<()> {
    let (Some(app), Some(file)) = (cmd.app.clone(), cmd.file.clone()) else {
        return super::plan::deploy(client, cmd, out).await;
    };
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let deployment = upload(client, &app, Bytes::from(bytes), out).await?;
    let shown: App = client.get(&format!("/v1/apps/{}", segment(&app))).await?;
    if !out.json {
        println!(
            "Deployed {} version {} ({}, {}).",
            shown.name,
            deployment.version,
            deployment.digest,
            size(deployment.size)
        );
        println!("Served at: {}", super::apps::urls(&shown).join("  "));
    }
    let rollout = wait_for_nodes(client, &app, &cmd.wait, out).await?;
    out.show(
        &json!({"deployment": deployment, "app": shown, "rollout": rollout}),
        || {},
    );
    Ok(())
}

/// Uploads `bytes` as a new version of `app`, with a progress bar on a
/// terminal.
pub(super) async fn upload(
    client: &Client,
    app: &str,
    bytes: Bytes,
    out: Out,
) -> anyhow::Result<Deployment> {
    let total = bytes.len() as u64;
    let bar = out.progress().then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "Uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("a valid template")
            .progress_chars("#>-"),
        );
        bar
    });
    let path = format!("/v1/apps/{}/deployments", segment(app));
    let shown = bar.clone();
    let result = client
        .upload(&path, bytes, move |sent| {
            if let Some(bar) = &shown {
                bar.set_position(sent);
            }
        })
        .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

/// `outpost deployments APP`.
pub async fn deployments(client: &Client, app: &str, out: Out) -> anyhow::Result<()> {
    let shown: App = client.get(&format!("/v1/apps/{}", segment(app))).await?;
    let list: Vec<Deployment> = client
        .get(&format!("/v1/apps/{}/deployments", segment(app)))
        .await?;
    out.show(&list, || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|d| {
                let active = if Some(d.version) == shown.active_version {
                    "*"
                } else {
                    ""
                };
                vec![
                    format!("{}{active}", d.version),
                    short_digest(&d.digest),
                    size(d.size),
                    ago(d.created_at as i64),
                ]
            })
            .collect();
        table(&["version", "digest", "size", "created"], &rows);
    });
    Ok(())
}

/// `outpost rollback APP VERSION`.
pub async fn rollback(client: &Client, cmd: Rollback, out: Out) -> anyhow::Result<()> {
    let path = format!("/v1/apps/{}/rollback", segment(&cmd.app));
    let app: App = client
        .json(Method::POST, &path, &json!({"version": cmd.version}))
        .await?;
    if !out.json {
        println!("{} now serves version {}.", app.name, cmd.version);
    }
    let rollout = wait_for_nodes(client, &app.name, &cmd.wait, out).await?;
    out.show(&json!({"app": app, "rollout": rollout}), || {});
    Ok(())
}

/// `outpost logs APP [--follow]`: the app's recent guest output from every
/// node, then (with `--follow`) new lines as they come.
pub async fn logs(client: &Client, cmd: Logs, out: Out) -> anyhow::Result<()> {
    let path = format!("/v1/apps/{}/logs?follow={}", segment(&cmd.app), cmd.follow);
    client
        .stream_lines(&path, |raw| {
            if out.json {
                println!("{}", String::from_utf8_lossy(raw));
            } else {
                let line: GuestLogLine = serde_json::from_slice(raw)
                    .map_err(|e| anyhow::anyhow!("unexpected log line: {e}"))?;
                let millis = line.time_ms % 1000;
                println!(
                    "{}:{:02}.{millis:03} {} req={} {}: {}",
                    when((line.time_ms / 1000) as i64),
                    line.time_ms / 1000 % 60,
                    line.node,
                    line.request_id,
                    line.stream,
                    line.text
                );
            }
            // Followers read a terminal; show each line at once.
            let _ = std::io::stdout().flush();
            Ok(())
        })
        .await
}

/// `sha256:0123456789ab…`: enough of a digest to tell versions apart in
/// a line of text (`--json` has it whole).
pub(crate) fn short_digest(digest: &str) -> String {
    match digest.char_indices().nth(19) {
        Some((end, _)) => format!("{}…", &digest[..end]),
        None => digest.to_string(),
    }
}

/// `24.1 KB`-style sizes.
pub(super) fn size(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} KB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}
