//! Saved logins: `outpost login`, `logout`, `whoami` and `profiles`.

use anyhow::{Context as _, bail};
use outpost_proto::{CallerKind, Rollout, Whoami};
use serde_json::json;

use super::{Out, table};
use crate::args::Profiles;
use crate::client::Client;
use crate::config::{self, ConfigFile};

/// `outpost login`: checks the token against the control plane, then saves
/// URL and token under `profile` (which becomes the current one if none
/// was chosen yet).
pub async fn login(
    client: &Client,
    token: Option<String>,
    ca_file: Option<std::path::PathBuf>,
    mut file: ConfigFile,
    profile: &str,
    out: Out,
) -> anyhow::Result<()> {
    let Some(token) = token else {
        bail!("give the token with --token or OUTPOST_TOKEN");
    };
    // Any admin or tenant token may read the rollout; it proves both the
    // URL and the token.
    let rollout: Rollout = client
        .get("/v1/rollout")
        .await
        .context("checking the token")?;
    let who: Whoami = client.get("/v1/whoami").await?;
    // Saved absolute: later commands run from other directories.
    let ca_file = ca_file
        .map(|f| std::path::absolute(&f).with_context(|| format!("resolving {}", f.display())))
        .transpose()?;
    file.profiles.insert(
        profile.to_string(),
        config::Saved {
            url: Some(client.url().to_string()),
            token: Some(token),
            ca_file,
        },
    );
    file.current.get_or_insert_with(|| profile.to_string());
    let path = config::save(&file)?;
    let who_text = describe(&who);
    out.show(
        &json!({"url": client.url(), "profile": profile, "whoami": who, "config": path, "revision": rollout.revision}),
        || {
            println!(
                "Logged in to {} as {who_text} (profile {profile}, saved in {}).",
                client.url(),
                path.display()
            )
        },
    );
    Ok(())
}

/// `outpost logout`: forgets the profile's login. The token itself stays
/// valid (the control plane cannot tell a copy elsewhere from this one).
pub fn logout(mut file: ConfigFile, profile: &str, out: Out) -> anyhow::Result<()> {
    let Some(saved) = file.profiles.remove(profile) else {
        out.show(&json!({"profile": profile, "removed": false}), || {
            println!("No login is saved under profile {profile}; nothing to forget.")
        });
        return Ok(());
    };
    if file.current.as_deref() == Some(profile) {
        file.current = None;
    }
    let path = config::save(&file)?;
    let url = saved.url.unwrap_or_default();
    out.show(
        &json!({"profile": profile, "removed": true, "url": url, "config": path}),
        || {
            println!("Forgot the login to {url} (profile {profile}).");
            println!(
                "The token still works where it is kept elsewhere; revoke it with `outpost tokens revoke NAME`."
            );
        },
    );
    Ok(())
}

/// Where the token in use came from, for `outpost whoami`.
pub enum TokenSource {
    /// `--token` or `OUTPOST_TOKEN`.
    Given,
    /// The profile's saved login.
    Saved(String),
}

/// `outpost whoami`: asks the control plane who the token is.
pub async fn whoami(client: &Client, source: Option<TokenSource>, out: Out) -> anyhow::Result<()> {
    let Some(source) = source else {
        bail!(
            "not logged in to {}: give --token (or OUTPOST_TOKEN), or run `outpost login`",
            client.url()
        );
    };
    let who: Whoami = client.get("/v1/whoami").await?;
    let from = match &source {
        TokenSource::Given => "--token / OUTPOST_TOKEN".to_string(),
        TokenSource::Saved(profile) => format!("profile {profile}"),
    };
    out.show(&who, || {
        println!("{} at {} (token from {from})", describe(&who), client.url());
        if let Some(limits) = &who.limits {
            println!("Limits per app: {}", super::fleet::limits(limits));
        }
        if let Some(t) = &who.tenant {
            println!("Apps: {}", t.apps);
            if !t.domains.is_empty() {
                println!("Domains: {}", t.domains.join(", "));
            }
            if t.disabled {
                println!("This tenant is disabled: its hosts answer 403 and changes are refused.");
            }
        }
    });
    Ok(())
}

fn describe(who: &Whoami) -> String {
    match (who.kind, &who.tenant) {
        (CallerKind::Tenant, Some(t)) => format!("tenant {}", t.name),
        (CallerKind::Tenant, None) => "a tenant".into(),
        (CallerKind::Admin, _) => "the admin".into(),
    }
}

/// `outpost profiles list|use`.
pub fn profiles(mut file: ConfigFile, cmd: Profiles, out: Out) -> anyhow::Result<()> {
    match cmd {
        Profiles::List => {
            let current = file.profile_name(None);
            let list: Vec<_> = file
                .profiles
                .iter()
                .map(|(name, saved)| {
                    json!({"name": name, "url": saved.url, "current": *name == current, "ca_file": saved.ca_file})
                })
                .collect();
            out.show(&list, || {
                let rows: Vec<Vec<String>> = file
                    .profiles
                    .iter()
                    .map(|(name, saved)| {
                        vec![
                            if *name == current { "*" } else { "" }.into(),
                            name.clone(),
                            saved.url.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("No saved logins; `outpost login --url URL --token TOKEN` saves one.");
                } else {
                    table(&["", "profile", "url"], &rows);
                }
            });
        }
        Profiles::Use { name } => {
            config::check_profile_name(&name)?;
            if file.get(&name).is_none() {
                bail!(
                    "no login is saved under profile {name}; `outpost login --profile {name}` saves one"
                );
            }
            file.current = Some(name.clone());
            config::save(&file)?;
            out.show(&json!({"current": name}), || {
                println!("Commands now use profile {name} unless --profile says otherwise.")
            });
        }
    }
    Ok(())
}
