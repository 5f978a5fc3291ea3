//! `outpost cache purge`: removes the tenant's objects from every edge
//! node's cache.

use anyhow::bail;
use http::Method;
use outpost_proto::{CachePurge, PurgeResult};

use super::Out;
use crate::args::Purge;
use crate::client::Client;

/// The API waits for the nodes at most this long.
const MAX_WAIT_S: u64 = 60;

/// `outpost cache purge URL | --key KEY | --all`.
pub async fn purge(client: &Client, cmd: Purge, out: Out) -> anyhow::Result<()> {
    let (purge, what) = match (cmd.target, cmd.key, cmd.all) {
        (Some(url), None, false) => (CachePurge::Url { url: url.clone() }, url),
        (None, Some(key), false) => (
            CachePurge::SurrogateKey { key: key.clone() },
            format!("surrogate key {key}"),
        ),
        (None, None, true) => (CachePurge::All {}, "everything".to_string()),
        _ => bail!("give exactly one of URL, --key or --all"),
    };
    let wait_ms = if cmd.wait.no_wait {
        0
    } else {
        cmd.wait.wait_timeout.min(MAX_WAIT_S) * 1000
    };
    let result: PurgeResult = client
        .json(
            Method::POST,
            &format!("/v1/cache/purge?wait_ms={wait_ms}"),
            &purge,
        )
        .await?;
    let rollout = &result.rollout;
    out.show(&result, || {
        if wait_ms == 0 {
            println!(
                "Purge of {what} recorded (revision {}); nodes apply it as they reach that revision.",
                result.revision
            );
        } else {
            println!(
                "Purged {what} on {}/{} node(s), {} ms after it was recorded (revision {}).",
                rollout.applied, rollout.nodes, result.waited_ms, result.revision
            );
        }
    });
    if wait_ms > 0 && !rollout.lagging.is_empty() {
        bail!(
            "not yet applied on {} (the purge is recorded; those nodes apply it when they catch up, and a node that misses it empties its cache)",
            rollout.lagging.join(", ")
        );
    }
    Ok(())
}
