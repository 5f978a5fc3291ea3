//! Binding and serving the API.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{self, ApiState};

/// Serves the API on `listener` until `shutdown` completes; requests in
/// flight finish and watch streams end.
pub async fn run(
    listener: TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = state.clone();
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Watch streams never end by themselves; graceful shutdown
            // waits for open responses, so end them first.
            closing.close();
        })
        .await
}
