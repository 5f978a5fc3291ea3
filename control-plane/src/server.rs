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
    // Peer addresses feed the failed-authentication limiter.
    let app = api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Watch streams never end by themselves; graceful shutdown
            // waits for open responses, so end them first.
            closing.close();
        })
        .await
}
