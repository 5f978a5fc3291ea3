//! Serving the API: one accept loop, each connection in its own task under
//! the same defences as the edge node's client listeners
//! ([`outpost_serve`]): a connection cap where a new connection takes an
//! idle one's place, handshake, header-read and idle timeouts, head and
//! target caps, HTTP/2 stream caps, and a bounded grace period at
//! shutdown. With a certificate ([`crate::tls`]) every connection is TLS;
//! the handshake runs in the connection's task, never in the accept loop.

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
use outpost_serve::{Admitted, Http, Seat, Tracked};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::api::error::ApiError;
use crate::api::{self, ApiState};
use crate::config::ServerConfig;

/// The API's bound listener and how it serves.
pub struct Listener {
    /// The bound socket.
    pub tcp: TcpListener,
    /// TLS on every connection, when configured.
    pub tls: Option<TlsAcceptor>,
    /// The cap, timeouts and head caps.
    pub config: ServerConfig,
}

/// Serves the API on `listener` until `shutdown` completes; then watch
/// and log-follow streams end, and requests in flight get
/// `shutdown_grace` to finish.
pub async fn run(
    listener: Listener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Listener { tcp, tls, config } = listener;
    let router = api::router(state.clone());
    let limiter = outpost_serve::Limiter::new(&config);
    // Log follow streams may be quiet for longer than the idle timeout
    // while their app logs nothing; they are bounded by the per-tenant
    // follow slots and end at shutdown, so they count as in flight until
    // their last byte rather than only until their head.
    let http = Arc::new(Http::new(&config).busy_through_body(true));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = outpost_serve::accept(&tcp) => accepted,
            () = &mut shutdown => break,
        };
        // Over the cap with nothing idle: close at once rather than let
        // it queue.
        let Some(admitted) = limiter.admit() else {
            drop(stream);
            continue;
        };
        let task = Connection {
            peer,
            router: router.clone(),
            http: http.clone(),
            watcher: graceful.watcher(),
            tls: tls.clone(),
            handshake_timeout: config.handshake_timeout,
            state: state.clone(),
        };
        tokio::spawn(task.start(stream, admitted));
    }
    drop(tcp);
    // Watch and follow streams never end by themselves, and graceful
    // shutdown waits for open responses: end them first.
    state.close();
    outpost_serve::drain(graceful, config.shutdown_grace).await;
    Ok(())
}

/// Everything one connection's task needs.
struct Connection {
    peer: SocketAddr,
    router: Router,
    http: Arc<Http>,
    watcher: Watcher,
    tls: Option<TlsAcceptor>,
    handshake_timeout: std::time::Duration,
    state: Arc<ApiState>,
}

impl Connection {
    /// Serves one connection while it holds its place under the cap,
    /// until it ends or is evicted to make room for a new one.
    async fn start(self, stream: TcpStream, admitted: Admitted) {
        let Some(seat) = admitted.seat().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let stream = seat.track(stream);
        tokio::select! {
            () = self.run(stream, &seat) => {}
            () = seat.evicted() => {
                tracing::debug!("closed an idle connection to make room for a new one");
            }
        }
    }

    async fn run(self, stream: Tracked<TcpStream>, seat: &Seat) {
        let peer = self.peer;
        let router = self.router;
        let service = service_fn(move |mut req: Request<Incoming>| {
            // The failed-authentication limiter keys on the peer address.
            req.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(req)
        });
        let Some(acceptor) = self.tls else {
            return self
                .http
                .serve(stream, seat, self.watcher, service, uri_too_long)
                .await;
        };
        let metrics = &self.state.metrics;
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                metrics.tls_handshake("ok");
                self.http
                    .serve(tls, seat, self.watcher, service, uri_too_long)
                    .await;
            }
            Ok(Err(e)) => {
                metrics.tls_handshake("error");
                tracing::debug!(error = %e, %peer, "TLS handshake failed");
            }
            Err(_) => metrics.tls_handshake("timeout"),
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
