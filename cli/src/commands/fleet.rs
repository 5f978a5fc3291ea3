//! Operator commands: tenants, nodes and their identities.

use anyhow::bail;
use http::Method;
use outpost_proto::{
    Limits, NodeIdentity, NodeIdentityCreated, NodeStatus, Rollout, Tenant, TenantCreated,
    TenantQuotas, TokenCreated, TokenInfo,
};
use serde_json::{Value, json};

use super::{Out, ago, table};
use crate::args::{Nodes, Tenants, Tokens};
use crate::client::{Client, segment};

/// `outpost tenants …`.
pub async fn tenants(client: &Client, cmd: Tenants, out: Out) -> anyhow::Result<()> {
    match cmd {
        Tenants::Create { name, domains } => {
            let created: TenantCreated = client
                .json(
                    Method::POST,
                    "/v1/tenants",
                    &json!({"name": name, "domains": domains}),
                )
                .await?;
            out.show(&created, || {
                println!(
                    "Created tenant {}. Its token (shown only once):",
                    created.name
                );
                println!("{}", created.token);
            });
        }
        Tenants::List => {
            let list: Vec<Tenant> = client.get("/v1/tenants").await?;
            out.show(&list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            if t.disabled { "disabled" } else { "active" }.into(),
                            t.apps.to_string(),
                            t.usage.hosts.to_string(),
                            format!("{:.1}", t.usage.stored_bytes as f64 / 1048576.0),
                            if t.domains.is_empty() {
                                "-".into()
                            } else {
                                t.domains.join(",")
                            },
                            limits(&t.limits),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "tenant",
                        "state",
                        "apps",
                        "hosts",
                        "stored MiB",
                        "domains",
                        "limits",
                    ],
                    &rows,
                );
            });
        }
        Tenants::Limits(l) => {
            let body = Limits {
                fuel: l.fuel,
                memory_mib: l.memory_mib,
                timeout_ms: l.timeout_ms,
                max_concurrency: l.max_concurrency,
            };
            let path = format!("/v1/tenants/{}/limits", segment(&l.name));
            let answer: Value = client.json(Method::PUT, &path, &body).await?;
            out.show(&answer, || {
                println!("Limits of {}: {}", l.name, limits(&body));
            });
        }
        Tenants::Domains { name, domains } => {
            let path = format!("/v1/tenants/{}/domains", segment(&name));
            let answer: Tenant = client
                .json(Method::PUT, &path, &json!({"domains": domains}))
                .await?;
            out.show(&answer, || {
                if answer.domains.is_empty() {
                    println!("{name} may route no domain (only its platform zone, if any).");
                } else {
                    println!("{name} may route: {}", answer.domains.join(", "));
                }
            });
        }
        Tenants::Quotas(q) => {
            let body = TenantQuotas {
                apps: q.apps,
                routes_per_app: q.routes_per_app,
                hosts: q.hosts,
                env_bytes_per_app: q.env_bytes_per_app,
                certificates: q.certificates,
                stored_mib: q.stored_mib,
                versions_per_app: q.versions_per_app,
            };
            let path = format!("/v1/tenants/{}/quotas", segment(&q.name));
            let answer: Tenant = client.json(Method::PUT, &path, &body).await?;
            out.show(&answer, || {
                println!(
                    "Quota overrides of {}: {}",
                    q.name,
                    serde_json::to_string(&answer.quotas).unwrap_or_default()
                );
            });
        }
        Tenants::Disable { name } => {
            let path = format!("/v1/tenants/{}/disable", segment(&name));
            let answer: Tenant = client.json(Method::POST, &path, &json!({})).await?;
            out.show(&answer, || {
                println!("Disabled {name}: its hosts answer 403 and its token is read-only.")
            });
        }
        Tenants::Enable { name } => {
            let path = format!("/v1/tenants/{}/enable", segment(&name));
            let answer: Tenant = client.json(Method::POST, &path, &json!({})).await?;
            out.show(&answer, || println!("Enabled {name}."));
        }
        Tenants::Delete { name, yes } => {
            if !yes {
                bail!(
                    "deleting {name} removes all its apps, versions, certificates and tokens \
                     for good; run again with --yes"
                );
            }
            client
                .delete(&format!("/v1/tenants/{}", segment(&name)))
                .await?;
            out.show(&json!({"deleted": name}), || {
                println!("Deleted tenant {name}.")
            });
        }
    }
    Ok(())
}

/// `outpost tokens …`.
pub async fn tokens(client: &Client, cmd: Tokens, out: Out) -> anyhow::Result<()> {
    match cmd {
        Tokens::Create { name } => {
            let created: TokenCreated = client
                .json(Method::POST, "/v1/tokens", &json!({"name": name}))
                .await?;
            out.show(&created, || {
                println!("Created token {}. It is shown only once:", created.name);
                println!("{}", created.token);
            });
        }
        Tokens::List => {
            let list: Vec<TokenInfo> = client.get("/v1/tokens").await?;
            out.show(&list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| vec![t.name.clone(), ago(t.created_at as i64)])
                    .collect();
                table(&["token", "created"], &rows);
            });
        }
        Tokens::Revoke { name } => {
            client
                .delete(&format!("/v1/tokens/{}", segment(&name)))
                .await?;
            out.show(&json!({"revoked": name}), || {
                println!("Revoked token {name}: requests with it are refused from now on.")
            });
        }
    }
    Ok(())
}

pub(super) fn limits(l: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(v) = l.fuel {
        parts.push(format!("fuel={v}"));
    }
    if let Some(v) = l.memory_mib {
        parts.push(format!("memory={v}MiB"));
    }
    if let Some(v) = l.timeout_ms {
        parts.push(format!("timeout={v}ms"));
    }
    if let Some(v) = l.max_concurrency {
        parts.push(format!("concurrency={v}"));
    }
    if parts.is_empty() {
        "defaults".into()
    } else {
        parts.join(" ")
    }
}

/// `outpost nodes …`: the fleet list without a subcommand.
pub async fn nodes(client: &Client, cmd: Option<Nodes>, out: Out) -> anyhow::Result<()> {
    match cmd {
        None => fleet(client, out).await?,
        Some(Nodes::Add { name }) => {
            let created: NodeIdentityCreated = client
                .json(Method::POST, "/v1/nodes/identities", &json!({"name": name}))
                .await?;
            out.show(&created, || {
                println!("{}", created.token);
                println!(
                    "Give this token (shown only once) to node {} as --node-token or OUTPOST_NODE_TOKEN; its node id is {}.",
                    created.name, created.name
                );
            });
        }
        Some(Nodes::Revoke { name }) => {
            client
                .delete(&format!("/v1/nodes/identities/{}", segment(&name)))
                .await?;
            out.show(&json!({"revoked": name}), || {
                println!(
                    "Revoked node identity {name}: its token is refused from now on and its stream ends."
                )
            });
        }
        Some(Nodes::Identities) => {
            let list: Vec<NodeIdentity> = client.get("/v1/nodes/identities").await?;
            out.show(&list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|n| vec![n.name.clone(), ago(n.created_at as i64)])
                    .collect();
                table(&["node", "created"], &rows);
            });
        }
    }
    Ok(())
}

/// `outpost nodes`: every node heard from, with the credential it used.
async fn fleet(client: &Client, out: Out) -> anyhow::Result<()> {
    let nodes: Vec<NodeStatus> = client.get("/v1/nodes").await?;
    let rollout: Rollout = client.get("/v1/rollout").await?;
    out.show(
        &json!({"revision": rollout.revision, "nodes": nodes}),
        || {
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    vec![
                        n.id.clone(),
                        n.applied_revision.to_string(),
                        rollout
                            .revision
                            .saturating_sub(n.applied_revision)
                            .to_string(),
                        ago(n.last_contact as i64),
                        n.identity.clone().unwrap_or_else(|| "shared token".into()),
                    ]
                })
                .collect();
            println!("Control plane revision {}", rollout.revision);
            table(
                &["node", "revision", "lag", "last contact (UTC)", "identity"],
                &rows,
            );
        },
    );
    Ok(())
}
