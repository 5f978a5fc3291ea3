//! Listeners: client traffic (HTTP/1.1 and cleartext HTTP/2) and the admin
//! listener with `/metrics` and `/healthz`.
//!
//! Each connection is served in its own task; the accept loop only accepts.
//! A connection cap bounds the node's memory under a connection flood, and a
//! header-read timeout stops clients that trickle their request head.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::body::{Body, error_response, full};
use crate::config::{Config, ServerConfig};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::node::Node;

/// The node's bound sockets.
pub struct Listeners {
    /// Client HTTP traffic.
    pub http: TcpListener,
    /// `/metrics` and `/healthz`.
    pub metrics: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config` (port 0 picks a free port).
    pub async fn bind(config: &Config) -> Result<Listeners> {
        Ok(Listeners {
            http: bind("HTTP", config.http).await?,
            metrics: bind("metrics", config.metrics).await?,
        })
    }

    /// The lines scripts and tests wait for, with the bound addresses.
    pub fn banner(&self) -> std::io::Result<String> {
        Ok(format!(
            "Listening on http://{}/\nMetrics on http://{}/metrics",
            self.http.local_addr()?,
            self.metrics.local_addr()?
        ))
    }
}

/// Completes on Ctrl-C or (on Unix) SIGTERM: what the binaries stop on.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

/// Serves until `shutdown` completes, then stops accepting and gives
/// in-flight requests `server.shutdown_grace` to finish.
pub async fn run(
    node: Arc<Node>,
    listeners: Listeners,
    server: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = node.metrics().clone();
    let http = tokio::spawn(serve_http(listeners.http, node, server, stop_rx.clone()));
    let admin = tokio::spawn(serve_metrics(listeners.metrics, metrics, stop_rx));
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = http.await;
    let _ = admin.await;
    Ok(())
}

async fn serve_http(
    listener: TcpListener,
    node: Arc<Node>,
    server: ServerConfig,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(server.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout);
    builder.http2().timer(TokioTimer::new());

    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of
                    // spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // Over the cap: close at once rather than let it queue.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let node = node.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let node = node.clone();
            async move { Ok::<_, Infallible>(node.handle(req, Scheme::Http).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(server.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; dropping connections still open");
        }
    }
}

async fn serve_metrics(listener: TcpListener, metrics: Metrics, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let metrics = metrics.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let metrics = metrics.clone();
            async move { Ok::<_, Infallible>(admin_response(&req, &metrics)) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn admin_response<B>(req: &Request<B>, metrics: &Metrics) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "only GET is served here",
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut resp = Response::new(full(metrics.render().into()));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/healthz" => Response::new(full("ok\n".into())),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "try /metrics or /healthz",
        ),
    }
}
