//! Listeners: client traffic (HTTP/1.1 and cleartext HTTP/2; HTTPS with
//! ALPN h2 and http/1.1) and the admin listener with `/metrics` and
//! `/healthz`.
//!
//! Each connection is served in its own task — the TLS handshake included,
//! under a timeout — so the accept loop only accepts and a client that
//! stalls its handshake blocks nobody. The defences against hostile
//! clients (the connection cap shared by HTTP and HTTPS, where a new
//! connection takes an idle one's place; the header-read and idle
//! timeouts; head and target caps; HTTP/2 stream caps and rapid reset) are
//! [`outpost_serve`]'s, shared with the control plane; a request counts as
//! being handled while it is in a guest, so the idle timeout never cuts it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use outpost_serve::{Http, Limiter, Seat, Tracked};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use outpost_runtime::body::{Body, ErrorCode, error_response, full};

use crate::config::{Config, ServerConfig};
use crate::error::{Error, Result};
use crate::metrics::Metrics as NodeMetrics;
use crate::node::{Conn, Node};

pub mod config;
pub mod metrics;
mod tls;

pub use metrics::{Metrics, UnroutedReason};

/// The node's bound sockets.
pub struct Listeners {
    /// Client HTTP traffic.
    pub http: TcpListener,
    /// Client HTTPS traffic, if configured.
    pub https: Option<TcpListener>,
    /// `/metrics` and `/healthz`.
    pub metrics: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config` (port 0 picks a free port).
    pub async fn bind(config: &Config) -> Result<Listeners> {
        let https = match config.https {
            Some(addr) => Some(bind("HTTPS", addr).await?),
            None => None,
        };
        Ok(Listeners {
            http: bind("HTTP", config.http).await?,
            https,
            metrics: bind("metrics", config.metrics).await?,
        })
    }
}

pub use outpost_runtime::signal::shutdown_signal;

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    outpost_serve::bind(addr).map_err(|source| Error::Bind { what, addr, source })
}

/// Serves until `shutdown` completes, then stops accepting and gives
/// in-flight requests `the shutdown grace period` to finish.
pub async fn run(
    node: Arc<Node>,
    listeners: Listeners,
    server: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = node.metrics().clone();
    // One cap for both client listeners: it bounds what the node holds.
    let limiter = Arc::new(Limiter::new(&server.connections));
    let http = Arc::new(Http::new(&server.connections));
    let https_port = match &listeners.https {
        Some(l) => Some(l.local_addr()?.port()),
        None => None,
    };
    let mut clients = Vec::new();
    if let Some(https) = listeners.https {
        let acceptor = TlsAcceptor::from(tls::server_config(node.clone())?);
        clients.push(tokio::spawn(serve_clients(
            https,
            Kind::Https(acceptor),
            node.clone(),
            server.clone(),
            limiter.clone(),
            http.clone(),
            stop_rx.clone(),
        )));
    }
    let plain = match https_port {
        Some(port) if server.redirect_http => Kind::Redirect(port),
        _ => Kind::Http,
    };
    clients.push(tokio::spawn(serve_clients(
        listeners.http,
        plain,
        node,
        server,
        limiter,
        http,
        stop_rx.clone(),
    )));
    let admin = tokio::spawn(serve_metrics(listeners.metrics, metrics, stop_rx));
    shutdown.await;
    let _ = stop_tx.send(true);
    for task in clients {
        let _ = task.await;
    }
    let _ = admin.await;
    Ok(())
}

/// What a client listener speaks.
#[derive(Clone)]
enum Kind {
    /// Cleartext HTTP/1.1 and h2c, routed to apps.
    Http,
    /// Cleartext, answered with 308 to `https://` on this port.
    Redirect(u16),
    /// TLS, then HTTP/1.1 or h2 by ALPN.
    Https(TlsAcceptor),
}

impl Kind {
    fn listener(&self) -> &'static str {
        match self {
            Kind::Http | Kind::Redirect(_) => "http",
            Kind::Https(_) => "https",
        }
    }
}

/// Keeps a gauge up for as long as it lives.
struct Open(prometheus::IntGauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn serve_clients(
    listener: TcpListener,
    kind: Kind,
    node: Arc<Node>,
    server: ServerConfig,
    limiter: Arc<Limiter>,
    http: Arc<Http>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = outpost_serve::accept(&listener) => accepted,
            _ = stop.changed() => break,
        };
        // Over the cap with nothing idle: close at once rather than let
        // it queue.
        let Some(admitted) = limiter.admit() else {
            drop(stream);
            continue;
        };
        let task = Connection {
            node: node.clone(),
            http: http.clone(),
            watcher: graceful.watcher(),
            handshake_timeout: server.connections.handshake_timeout,
        };
        let kind = kind.clone();
        tokio::spawn(async move {
            if let Some(seat) = admitted.seat().await {
                task.start(stream, kind, seat).await;
            }
        });
    }
    drop(listener);
    outpost_serve::drain(graceful, server.connections.shutdown_grace).await;
}

/// Everything one connection's task needs.
struct Connection {
    node: Arc<Node>,
    http: Arc<Http>,
    watcher: Watcher,
    handshake_timeout: Duration,
}

impl Connection {
    /// Serves the connection while holding its place under the cap, until
    /// it ends or is evicted to make room for a new one.
    async fn start(self, stream: TcpStream, kind: Kind, seat: Seat) {
        let _ = stream.set_nodelay(true);
        let gauge = self.node.metrics().server.connections_open(kind.listener());
        gauge.inc();
        let _open = Open(gauge);
        let stream = seat.track(stream);
        tokio::select! {
            () = self.run(stream, kind, &seat) => {}
            () = seat.evicted() => {
                tracing::debug!("closed an idle connection to make room for a new one");
            }
        }
    }

    async fn run(self, stream: Tracked<TcpStream>, kind: Kind, seat: &Seat) {
        match kind {
            Kind::Http => self.serve(stream, Conn::default(), None, seat).await,
            Kind::Redirect(port) => self.serve(stream, Conn::default(), Some(port), seat).await,
            Kind::Https(acceptor) => {
                let metrics = self.node.metrics().tls.clone();
                let started = Instant::now();
                let tls =
                    match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            metrics.handshake("error", "none", None);
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            metrics.handshake("timeout", "none", None);
                            return;
                        }
                    };
                let session = tls.get_ref().1;
                let version = match session.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1_3",
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1_2",
                    _ => "other",
                };
                metrics.handshake("ok", version, Some(started.elapsed().as_secs_f64()));
                let conn = Conn {
                    tls: true,
                    sni: session
                        .server_name()
                        .map(|name| Arc::from(name.to_ascii_lowercase())),
                };
                self.serve(tls, conn, None, seat).await;
            }
        }
    }

    /// Serves requests until the client leaves, the node shuts down or the
    /// connection has been idle for the idle timeout. With `redirect_to`,
    /// every request is answered with a 308 to that HTTPS port instead.
    async fn serve<I>(self, io: I, conn: Conn, redirect_to: Option<u16>, seat: &Seat)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let node = self.node;
        let conn = Arc::new(conn);
        let service = service_fn(move |req: Request<Incoming>| {
            let node = node.clone();
            let conn = conn.clone();
            async move {
                if let Some(port) = redirect_to {
                    return Ok::<_, Infallible>(redirect(&req, port));
                }
                Ok(node.handle(req, &conn).await)
            }
        });
        self.http
            .serve(io, seat, self.watcher, service, uri_too_long)
            .await;
    }
}

fn uri_too_long() -> Response<Body> {
    error_response(ErrorCode::UriTooLong, "the request target is too long")
}

/// 308 to the same host and path on the HTTPS port.
fn redirect<B>(req: &Request<B>, https_port: u16) -> Response<Body> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(outpost_runtime::router::normalize_host);
    let Some(host) = host else {
        return error_response(ErrorCode::MissingHost, "the request has no Host header");
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    match http::HeaderValue::try_from(location) {
        Ok(value) => {
            resp.headers_mut().insert(http::header::LOCATION, value);
            resp
        }
        Err(_) => error_response(ErrorCode::BadHost, "malformed Host header"),
    }
}

async fn serve_metrics(
    listener: TcpListener,
    metrics: NodeMetrics,
    mut stop: watch::Receiver<bool>,
) {
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

fn admin_response<B>(req: &Request<B>, metrics: &NodeMetrics) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error_response(ErrorCode::MethodNotAllowed, "only GET is served here");
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
        _ => error_response(ErrorCode::NotFound, "try /metrics or /healthz"),
    }
}
