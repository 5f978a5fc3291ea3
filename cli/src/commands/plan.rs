//! `outpost deploy` from `outpost.toml`: the app brought to the manifest's
//! state, changing only what differs, the plan printed first. With
//! `--dry-run` only the plan.

use std::collections::BTreeSet;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::Method;
use outpost_proto::{App, Deployment, EnvComparison, Limits, Whoami};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::Out;
use super::deploy::{short_digest, size, upload, wait_for_nodes};
use crate::args::Deploy;
use crate::client::{Client, segment};
use crate::manifest::{self, Loaded};

/// What `outpost deploy` will change (or, with `--dry-run`, would).
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    /// The app.
    pub app: String,
    /// The app does not exist yet.
    pub create: bool,
    /// The routes, if they change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Change>,
    /// The outbound allow-list, if it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_outbound: Option<Change>,
    /// Variables of `[app.env]` set because they are new or differ.
    pub env_set: Vec<String>,
    /// Variables stored but neither in `[app.env]` nor `app.secrets`.
    pub env_removed: Vec<String>,
    /// Secrets declared but not set (`outpost secrets set` sets them).
    pub secrets_missing: Vec<String>,
    /// The component's digest.
    pub digest: String,
    /// Whether it is uploaded (the active version runs another).
    pub upload: bool,
    /// The active version, if it already runs this component.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_version: Option<u64>,
}

/// A list that changes.
#[derive(Debug, Default, Serialize)]
pub struct Change {
    /// Entries added.
    pub added: Vec<String>,
    /// Entries removed.
    pub removed: Vec<String>,
    /// The whole new list.
    #[serde(skip)]
    pub new: Vec<String>,
}

impl Change {
    /// `None` if `now` and `want` hold the same entries.
    fn between(now: &[String], want: &[String]) -> Option<Change> {
        let (a, b): (BTreeSet<&String>, BTreeSet<&String>) =
            (now.iter().collect(), want.iter().collect());
        (a != b).then(|| Change {
            added: b.difference(&a).map(|s| s.to_string()).collect(),
            removed: a.difference(&b).map(|s| s.to_string()).collect(),
            new: want.to_vec(),
        })
    }

    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.added.iter().map(|r| format!("+{r}")).collect();
        parts.extend(self.removed.iter().map(|r| format!("-{r}")));
        parts.join(" ")
    }
}

impl Plan {
    /// Whether nothing on the control plane changes.
    pub fn is_empty(&self) -> bool {
        !self.create
            && self.routes.is_none()
            && self.allow_outbound.is_none()
            && self.env_set.is_empty()
            && self.env_removed.is_empty()
            && !self.upload
    }

    /// The plan as lines for a person.
    fn lines(&self, component: &str, bytes: u64) -> Vec<String> {
        let mut out = Vec::new();
        if self.create {
            out.push(format!("+ create app {}", self.app));
        }
        if let Some(c) = &self.routes {
            out.push(format!("~ routes: {}", c.describe()));
        }
        if let Some(c) = &self.allow_outbound {
            out.push(format!("~ allow_outbound: {}", c.describe()));
        }
        if !self.env_set.is_empty() {
            out.push(format!("~ env: set {}", self.env_set.join(", ")));
        }
        if !self.env_removed.is_empty() {
            out.push(format!("~ env: remove {}", self.env_removed.join(", ")));
        }
        if self.upload {
            out.push(format!(
                "+ upload {component} ({}, {})",
                short_digest(&self.digest),
                size(bytes)
            ));
        }
        out
    }
}

/// `outpost deploy [--manifest FILE] [--dry-run]`.
pub async fn deploy(client: &Client, cmd: Deploy, out: Out) -> anyhow::Result<()> {
    let loaded = manifest::load(cmd.manifest.as_deref())?;
    let component = loaded.component();
    let wasm = std::fs::read(&component).with_context(|| {
        format!(
            "reading the component {} (app.component in {}; `outpost build` makes it)",
            component.display(),
            loaded.path.display()
        )
    })?;
    let routes = loaded.routes();
    let plan = plan(client, &loaded, &routes, &wasm).await?;
    let name = plan.app.clone();
    let human = !out.json;
    let shown = component.display().to_string();
    if human {
        if plan.is_empty() {
            println!(
                "{name} is up to date: version {} runs {}; nothing to upload.",
                plan.active_version.unwrap_or_default(),
                short_digest(&plan.digest)
            );
        } else {
            println!(
                "Plan for {name} ({}{}):",
                loaded.path.display(),
                if cmd.dry_run { ", dry run" } else { "" }
            );
            for line in plan.lines(&shown, wasm.len() as u64) {
                println!("  {line}");
            }
        }
        for secret in &plan.secrets_missing {
            eprintln!(
                "warning: secret {secret} is not set; set it with `outpost secrets set {name} {secret}` (it reads the value from stdin)"
            );
        }
    }
    if cmd.dry_run || plan.is_empty() {
        if human && cmd.dry_run {
            println!("Dry run: nothing was changed.");
        }
        out.show(&json!({"plan": plan, "applied": false}), || {});
        return Ok(());
    }
    let deployment = apply(client, &loaded, &routes, &plan, wasm, out).await?;
    let app: App = client.get(&format!("/v1/apps/{}", segment(&name))).await?;
    if human {
        if let Some(d) = &deployment {
            println!(
                "Deployed {name} version {} ({}).",
                d.version,
                short_digest(&d.digest)
            );
        } else {
            println!(
                "Updated {name}; version {} still runs.",
                plan.active_version.unwrap_or_default()
            );
        }
        println!("Served at: {}", super::apps::urls(&app).join("  "));
    }
    let rollout = wait_for_nodes(client, &name, &cmd.wait, out).await?;
    out.show(
        &json!({"plan": plan, "applied": true, "deployment": deployment, "app": app, "rollout": rollout}),
        || {},
    );
    Ok(())
}

/// Compares the manifest (served on `routes`, normalized) and the
/// component `wasm` with what the control plane holds.
pub(crate) async fn plan(
    client: &Client,
    loaded: &Loaded,
    routes: &[String],
    wasm: &[u8],
) -> anyhow::Result<Plan> {
    let m = &loaded.manifest.app;
    if let Some(wanted) = &m.limits {
        check_limits(client, loaded, wanted).await?;
    }
    let app_path = format!("/v1/apps/{}", segment(&m.name));
    let digest = format!(
        "sha256:{}",
        Sha256::digest(wasm)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut plan = Plan {
        app: m.name.clone(),
        digest,
        ..Plan::default()
    };
    let Some(current) = client.get_if_found::<App>(&app_path).await? else {
        plan.create = true;
        plan.env_set = m.env.keys().cloned().collect();
        plan.secrets_missing = m.secrets.clone();
        plan.upload = true;
        return Ok(plan);
    };
    plan.routes = Change::between(&current.routes, routes);
    let outbound: Vec<String> = m.allow_outbound.iter().map(|h| h.to_lowercase()).collect();
    plan.allow_outbound = Change::between(&current.allow_outbound, &outbound);
    let env: EnvComparison = client
        .json(Method::POST, &format!("{app_path}/env/compare"), &m.env)
        .await?;
    plan.env_set = env.changed.into_iter().chain(env.missing).collect();
    plan.env_set.sort();
    let (secrets_set, removed): (Vec<String>, Vec<String>) =
        env.others.into_iter().partition(|k| m.secrets.contains(k));
    plan.env_removed = removed;
    plan.secrets_missing = m
        .secrets
        .iter()
        .filter(|s| !secrets_set.contains(s))
        .cloned()
        .collect();
    let deployments: Vec<Deployment> = client.get(&format!("{app_path}/deployments")).await?;
    let active = deployments
        .iter()
        .find(|d| Some(d.version) == current.active_version);
    match active {
        Some(d) if d.digest == plan.digest => plan.active_version = Some(d.version),
        _ => plan.upload = true,
    }
    Ok(plan)
}

/// Refuses, before anything changes, a manifest that asks for more than
/// the tenant's apps get: the app would deploy and then fail under load
/// (out of fuel or memory) in a way its author did not plan for.
async fn check_limits(client: &Client, loaded: &Loaded, wanted: &Limits) -> anyhow::Result<()> {
    let who: Whoami = client.get("/v1/whoami").await?;
    let (Some(tenant), Some(granted)) = (&who.tenant, &who.limits) else {
        bail!("deploying needs a tenant's token, not the admin's");
    };
    let asks = [
        ("fuel", wanted.fuel, granted.fuel, "--fuel"),
        (
            "memory_mib",
            wanted.memory_mib,
            granted.memory_mib,
            "--memory-mib",
        ),
        (
            "timeout_ms",
            wanted.timeout_ms,
            granted.timeout_ms,
            "--timeout-ms",
        ),
        (
            "max_concurrency",
            wanted.max_concurrency.map(u64::from),
            granted.max_concurrency.map(u64::from),
            "--max-concurrency",
        ),
    ];
    let mut over = Vec::new();
    let mut flags = Vec::new();
    for (key, want, have, flag) in asks {
        if let (Some(want), Some(have)) = (want, have)
            && want > have
        {
            over.push(format!(
                "app.limits.{key} = {want}, but tenant {}'s apps get {have}",
                tenant.name
            ));
            flags.push(format!("{flag} {want}"));
        }
    }
    if !over.is_empty() {
        bail!(
            "{} asks for more than this tenant may use:\n  {}\nLower them, or ask the operator to run `outpost tenants limits {} {}`.",
            loaded.path.display(),
            over.join("\n  "),
            tenant.name,
            flags.join(" ")
        );
    }
    Ok(())
}

/// Makes the plan's changes, in an order that never serves a half state:
/// the app and its settings first, the new component last.
pub(crate) async fn apply(
    client: &Client,
    loaded: &Loaded,
    routes: &[String],
    plan: &Plan,
    wasm: Vec<u8>,
    out: Out,
) -> anyhow::Result<Option<Deployment>> {
    let m = &loaded.manifest.app;
    let app_path = format!("/v1/apps/{}", segment(&m.name));
    if plan.create {
        let _: App = client
            .json(
                Method::POST,
                "/v1/apps",
                &json!({"name": m.name, "routes": routes, "allow_outbound": m.allow_outbound}),
            )
            .await
            .context("creating the app")?;
    } else {
        if let Some(routes) = &plan.routes {
            let _: App = client
                .json(
                    Method::PUT,
                    &format!("{app_path}/routes"),
                    &json!({"routes": routes.new}),
                )
                .await
                .context("setting the routes")?;
        }
        if plan.allow_outbound.is_some() {
            let _: App = client
                .json(
                    Method::PUT,
                    &format!("{app_path}/outbound"),
                    &json!({"hosts": m.allow_outbound}),
                )
                .await
                .context("setting the outbound allow-list")?;
        }
    }
    if !plan.env_set.is_empty() || !plan.env_removed.is_empty() {
        let mut changes = serde_json::Map::new();
        for k in &plan.env_set {
            changes.insert(k.clone(), json!(m.env[k]));
        }
        for k in &plan.env_removed {
            changes.insert(k.clone(), serde_json::Value::Null);
        }
        let _: App = client
            .json(Method::PATCH, &format!("{app_path}/env"), &changes)
            .await
            .context("setting the environment")?;
    }
    if !plan.upload {
        return Ok(None);
    }
    upload(client, &m.name, Bytes::from(wasm), out)
        .await
        .map(Some)
}
