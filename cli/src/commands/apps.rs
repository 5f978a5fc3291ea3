//! Tenant commands: apps, env, certs.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};

use anyhow::{Context as _, bail};
use http::Method;
use outpost_proto::{App, CertInfo, CertUpload};
use serde_json::json;

use super::{Out, table, when};
use crate::args::{Apps, Certs, Env, Secrets};
use crate::client::{Client, segment};

/// The URLs an app is served on, by its routes.
pub fn urls(app: &App) -> Vec<String> {
    app.routes
        .iter()
        .map(|r| {
            let (host, path) = r.split_once('/').unwrap_or((r, ""));
            format!("https://{host}/{path}")
        })
        .collect()
}

fn show_app(app: &App) {
    println!("App:      {}", app.name);
    println!(
        "Version:  {}",
        app.active_version
            .map_or("none deployed yet".into(), |v| format!(
                "{v} of {}",
                app.versions
            ))
    );
    println!("Routes:   {}", app.routes.join(", "));
    println!("URLs:     {}", urls(app).join(", "));
    println!(
        "Outbound: {}",
        if app.allow_outbound.is_empty() {
            "none".into()
        } else {
            app.allow_outbound.join(", ")
        }
    );
    println!(
        "Env:      {}",
        if app.env_keys.is_empty() {
            "-".into()
        } else {
            app.env_keys.join(", ")
        }
    );
}

/// `outpost apps …`.
pub async fn apps(client: &Client, cmd: Apps, out: Out) -> anyhow::Result<()> {
    match cmd {
        Apps::Create {
            name,
            routes,
            allow_outbound,
        } => {
            let app: App = client
                .json(
                    Method::POST,
                    "/v1/apps",
                    &json!({"name": name, "routes": routes, "allow_outbound": allow_outbound}),
                )
                .await?;
            out.show(&app, || {
                println!("Created app {}.", app.name);
                show_app(&app);
            });
        }
        Apps::List => {
            let list: Vec<App> = client.get("/v1/apps").await?;
            out.show(&list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|a| {
                        vec![
                            a.name.clone(),
                            a.active_version.map_or("-".into(), |v| v.to_string()),
                            a.routes.join(", "),
                        ]
                    })
                    .collect();
                table(&["app", "version", "routes"], &rows);
            });
        }
        Apps::Show { name } => {
            let app: App = client.get(&format!("/v1/apps/{}", segment(&name))).await?;
            out.show(&app, || show_app(&app));
        }
        Apps::AllowOutbound { name, hosts } => {
            let path = format!("/v1/apps/{}/outbound", segment(&name));
            let app: App = client
                .json(Method::PUT, &path, &json!({"hosts": hosts}))
                .await?;
            out.show(&app, || show_app(&app));
        }
        Apps::Delete { name } => {
            client
                .delete(&format!("/v1/apps/{}", segment(&name)))
                .await?;
            out.show(&json!({"deleted": name}), || {
                println!("Deleted app {name}.")
            });
        }
    }
    Ok(())
}

/// `outpost env …`.
pub async fn env(client: &Client, cmd: Env, out: Out) -> anyhow::Result<()> {
    let (app, changes): (String, BTreeMap<String, Option<String>>) = match cmd {
        Env::List { app } => {
            let shown: App = client.get(&format!("/v1/apps/{}", segment(&app))).await?;
            out.show(&shown.env_keys, || {
                for key in &shown.env_keys {
                    println!("{key}");
                }
            });
            return Ok(());
        }
        Env::Set { app, vars } => {
            let mut changes = BTreeMap::new();
            for var in vars {
                let Some((k, v)) = var.split_once('=') else {
                    bail!("expected KEY=VALUE, got {var:?}");
                };
                changes.insert(k.to_string(), Some(v.to_string()));
            }
            (app, changes)
        }
        Env::Unset { app, keys } => (app, keys.into_iter().map(|k| (k, None)).collect()),
    };
    patch_env(client, &app, &changes, out).await
}

/// `outpost secrets …`.
pub async fn secrets(client: &Client, cmd: Secrets, out: Out) -> anyhow::Result<()> {
    let Secrets::Set { app, name, file } = cmd;
    let value = match &file {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None if std::io::stdin().is_terminal() => {
            rpassword::prompt_password(format!("Value of {name} for {app}: "))
                .context("reading the value from the terminal")?
                .into_bytes()
        }
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading the value from standard input")?;
            bytes
        }
    };
    let mut value = String::from_utf8(value).context("the value is not UTF-8 text")?;
    // `echo value |` and files saved by editors end with one newline that
    // is not part of the secret.
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        bail!("the value of {name} is empty; nothing was changed");
    }
    let changes = BTreeMap::from([(name, Some(value))]);
    patch_env(client, &app, &changes, out).await
}

/// Applies `changes` to `app`'s environment, waits for the nodes, and
/// shows the variable names it now has.
async fn patch_env(
    client: &Client,
    app: &str,
    changes: &BTreeMap<String, Option<String>>,
    out: Out,
) -> anyhow::Result<()> {
    let path = format!("/v1/apps/{}/env", segment(app));
    let shown: App = client.json(Method::PATCH, &path, changes).await?;
    // The new environment applies once nodes have the revision.
    super::deploy::wait_for_nodes(
        client,
        app,
        &crate::args::Wait {
            no_wait: false,
            wait_timeout: 60,
        },
        out,
    )
    .await?;
    out.show(&shown, || {
        println!(
            "Environment of {} now holds: {}",
            shown.name,
            if shown.env_keys.is_empty() {
                "nothing".into()
            } else {
                shown.env_keys.join(", ")
            }
        );
    });
    Ok(())
}

/// `outpost certs …`.
pub async fn certs(client: &Client, cmd: Certs, out: Out) -> anyhow::Result<()> {
    match cmd {
        Certs::Put { host, cert, key } => {
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            };
            let upload = CertUpload {
                cert_chain_pem: read(&cert)?,
                private_key_pem: read(&key)?,
            };
            let path = format!("/v1/certificates/{}", segment(&host));
            let info: CertInfo = client.json(Method::PUT, &path, &upload).await?;
            out.show(&info, || {
                println!(
                    "Installed the certificate for {} (names {}; expires {} UTC).",
                    info.hostname,
                    info.names.join(", "),
                    when(info.not_after)
                );
            });
        }
        Certs::List => {
            let list: Vec<CertInfo> = client.get("/v1/certificates").await?;
            out.show(&list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| vec![c.hostname.clone(), c.names.join(", "), when(c.not_after)])
                    .collect();
                table(&["hostname", "names", "expires (UTC)"], &rows);
            });
        }
        Certs::Delete { host } => {
            client
                .delete(&format!("/v1/certificates/{}", segment(&host)))
                .await?;
            out.show(&json!({"deleted": host}), || {
                println!("Removed the certificate for {host}.")
            });
        }
    }
    Ok(())
}
