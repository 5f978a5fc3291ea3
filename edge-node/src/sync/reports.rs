//! What the node tells the control plane besides following it: the
//! revision it serves, and its guests' output for `outpost logs`. Both are
//! best effort: the next watch connection reports the revision again, and
//! the node's own log keeps every guest line.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use outpost_runtime::log_ship::ShipQueue;

use super::config::{HttpClient, SyncConfig};
use crate::node::Failed;

/// Lines sent in one batch at most.
const LOG_BATCH: usize = 500;
/// How long a batch waits to fill before it is sent.
const LOG_LINGER: Duration = Duration::from_millis(200);

/// Ships guest output lines to the control plane in batches, each taken
/// round-robin across tenants (see [`ShipQueue`]) so that one tenant's
/// flood delays another's lines by at most a batch. A batch the control
/// plane does not take is dropped.
pub(crate) async fn ship_logs(
    config: SyncConfig,
    base: Arc<super::upstream::Base>,
    client: HttpClient,
    lines: Arc<ShipQueue>,
) {
    loop {
        let url = format!("{}/v1/nodes/{}/logs", base.current(), config.node_id);
        lines.wait_for(1).await;
        // A batch waits a little to fill: fewer, larger posts.
        let _ = tokio::time::timeout(LOG_LINGER, lines.wait_for(LOG_BATCH)).await;
        let batch = lines.take_batch(LOG_BATCH);
        let body = serde_json::to_vec(&batch).expect("log lines serialize");
        let req = Request::post(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", config.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let Ok(req) = req else { return };
        match client.request(req).await {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => tracing::debug!(status = %resp.status(), "shipping guest logs failed"),
            Err(e) => tracing::debug!(error = %e, "shipping guest logs failed"),
        }
    }
}

/// Tells the control plane which revision this node now serves, and
/// which of its apps could not load here.
pub(crate) async fn report_applied(
    config: &SyncConfig,
    base: &str,
    client: &HttpClient,
    revision: u64,
    unavailable: &[Failed],
) {
    let url = format!("{base}/v1/nodes/{}/status", config.node_id);
    let body = serde_json::to_vec(&outpost_proto::NodeReport {
        applied_revision: revision,
        unavailable: unavailable
            .iter()
            .map(|f| (outpost_proto::app_key(&f.tenant, &f.name), f.reason.clone()))
            .collect(),
    })
    .expect("reports serialize");
    let req = Request::put(&url)
        .header(header::AUTHORIZATION, format!("Bearer {}", config.token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)));
    let outcome = match req {
        Ok(req) => client.request(req).await.map(|r| r.status()),
        Err(e) => {
            tracing::warn!(error = %e, "bad status URL");
            return;
        }
    };
    match outcome {
        Ok(status) if status.is_success() => {}
        Ok(status) => tracing::warn!(%status, "reporting the applied revision failed"),
        Err(e) => tracing::warn!(error = %e, "reporting the applied revision failed"),
    }
}
