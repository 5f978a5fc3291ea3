//! Serving the API: one accept loop, each connection in its own task under
//! the same defences as the edge node's client listeners
//! ([`outpost_serve`]): a connection cap where a new connection takes an
//! idle one's place, header-read and idle timeouts, head and target caps,
//! HTTP/2 stream caps, and a bounded grace period at shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use outpost_serve::{Admitted, Http};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt as _;

use crate::api::error::ApiError;
use crate::api::{self, ApiState};
use crate::config::ServerConfig;

/// Serves the API on `listener` until `shutdown` completes; then watch
/// and log-follow streams end, and requests in flight get
/// `server.shutdown_grace` to finish.
pub async fn run(
    listener: TcpListener,
    state: Arc<ApiState>,
    server: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = api::router(state.clone());
    let limiter = outpost_serve::Limiter::new(&server);
    // Log follow streams may be quiet for longer than the idle timeout
    // while their app logs nothing; they are bounded by the per-tenant
    // follow slots and end at shutdown, so they count as in flight until
    // their last byte rather than only until their head.
    let http = Arc::new(Http::new(&server).busy_through_body(true));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = outpost_serve::accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        // Over the cap with nothing idle: close at once rather than let
        // it queue.
        let Some(admitted) = limiter.admit() else {
            drop(stream);
            continue;
        };
        tokio::spawn(connection(
            stream,
            peer,
            admitted,
            router.clone(),
            http.clone(),
            graceful.watcher(),
        ));
    }
    drop(listener);
    // Watch and follow streams never end by themselves, and graceful
    // shutdown waits for open responses: end them first.
    state.close();
    outpost_serve::drain(graceful, server.shutdown_grace).await;
    Ok(())
}

/// Serves one connection while it holds its place under the cap, until it
/// ends or is evicted to make room for a new one.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    router: Router,
    http: Arc<Http>,
    watcher: Watcher,
) {
    let Some(seat) = admitted.seat().await else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let stream = seat.track(stream);
    let service = service_fn(move |mut req: Request<Incoming>| {
        // The failed-authentication limiter keys on the peer address.
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(req)
    });
    tokio::select! {
        () = http.serve(stream, &seat, watcher, service, uri_too_long) => {}
        () = seat.evicted() => {
            tracing::debug!("closed an idle connection to make room for a new one");
        }
    }
}

fn uri_too_long() -> Response<Body> {
    ApiError::new(
        StatusCode::URI_TOO_LONG,
        "uri_too_long",
        "the request target is too long",
    )
    .into_response()
}
