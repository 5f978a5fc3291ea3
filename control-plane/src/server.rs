//! Binding and serving the API.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{self, ApiState};

/// Serves the API on `listener` until `shutdown` completes; requests in
/// flight finish (watch streams are cut).
pub async fn run(
    listener: TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
