//! Listeners: client traffic (HTTP/1.1 and cleartext HTTP/2; HTTPS with
//! ALPN h2 and http/1.1) and the admin listener with `/metrics` and
//! `/healthz`.
//!
//! Each connection is served in its own task — the TLS handshake included,
//! under a timeout — so the accept loop only accepts and a client that
//! stalls its handshake blocks nobody. A connection cap (shared by HTTP and
//! HTTPS) bounds the node's memory under a connection flood, and a
//! header-read timeout stops clients that trickle their request head.
//!
//! At the cap, a new connection takes the place of an idle one (no request
//! in a guest, nothing sent or received for a second), as nginx reuses idle
//! keep-alive connections: otherwise a few thousand sockets that never say
//! anything would lock every real client out until the idle timeout. If no
//! idle connection turns up among a small sample, the new one is closed at
//! once (the client sees its socket closed, never a queue), so the accept
//! loop keeps draining the backlog whatever the load. An idle timeout closes any
//! connection on which no byte has moved for a while and no request is being
//! handled: idle keep-alive, sockets that never speak, clients that stop
//! reading their response. HTTP/2 caps the streams open per connection and
//! the streams a client may reset before they are accepted (rapid reset).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use outpost_runtime::body::{Body, ErrorCode, error_response, full};

use crate::config::{Config, ServerConfig};
use crate::error::{Error, Result};
use crate::metrics::Metrics as NodeMetrics;
use crate::node::{Conn, Node};

pub mod config;
mod idle;
pub mod metrics;
mod tls;

use idle::{Activity, Slots, Tracked};
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

/// Connections the kernel may hold for the accept loop. tokio's default
/// of 1024 overflows under a connection flood, and a client whose handshake
/// lands in a full queue waits seconds for SYN-ACK retransmits; the kernel
/// still caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    let bound = || -> std::io::Result<TcpListener> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As std and tokio do, so a restarted node can rebind at once.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bound().map_err(|source| Error::Bind { what, addr, source })
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
    // One cap for both client listeners: it bounds what the node holds.
    let connections = Arc::new(Semaphore::new(server.max_connections));
    let slots = Arc::new(Slots::default());
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
            connections.clone(),
            slots.clone(),
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
        connections,
        slots,
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
    connections: Arc<Semaphore>,
    slots: Arc<Slots>,
    mut stop: watch::Receiver<bool>,
) {
    // A connection quiet for this long may be closed to make room at the
    // cap: long enough for a new client to send its request.
    let evictable_after = server.idle_timeout.min(Duration::from_secs(1));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        // hyper answers a head that does not fit with 431.
        .max_buf_size(server.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(server.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(server.h2_max_pending_accept_reset_streams)
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);

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
        let task = Connection {
            node: node.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            handshake_timeout: server.handshake_timeout,
            idle_timeout: server.idle_timeout,
            max_uri_bytes: server.max_uri_bytes,
        };
        let kind = kind.clone();
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(task.start(stream, kind, permit, slots.clone()));
            }
            Err(_) if slots.evict_one(evictable_after) => {
                // The evicted connection's task hands its permit back as it
                // ends; waiters are served first, so this one gets it.
                let connections = connections.clone();
                let slots = slots.clone();
                tokio::spawn(async move {
                    let permit =
                        tokio::time::timeout(Duration::from_secs(1), connections.acquire_owned())
                            .await;
                    if let Ok(Ok(permit)) = permit {
                        task.start(stream, kind, permit, slots).await;
                    }
                });
            }
            // Over the cap with nothing idle: close at once rather than
            // let it queue.
            Err(_) => drop(stream),
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(server.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; dropping connections still open");
        }
    }
}

/// Everything one connection's task needs.
struct Connection {
    node: Arc<Node>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    max_uri_bytes: usize,
}

impl Connection {
    /// Serves the connection while holding one of the cap's permits, until
    /// it ends or is evicted to make room for a new one.
    async fn start(
        self,
        stream: TcpStream,
        kind: Kind,
        _permit: OwnedSemaphorePermit,
        slots: Arc<Slots>,
    ) {
        let _ = stream.set_nodelay(true);
        let gauge = self.node.metrics().server.connections_open(kind.listener());
        gauge.inc();
        let _open = Open(gauge);
        let activity = Arc::new(Activity::new());
        let slot = slots.register(activity.clone());
        tokio::select! {
            () = self.run(stream, kind, activity) => {}
            () = slot.evicted() => {
                tracing::debug!("closed an idle connection to make room for a new one");
            }
        }
    }

    async fn run(self, stream: TcpStream, kind: Kind, activity: Arc<Activity>) {
        // Track the raw socket, under TLS: a client that stops reading stalls
        // the TCP stream whatever runs on top of it.
        let stream = Tracked {
            inner: stream,
            activity: activity.clone(),
        };
        match kind {
            Kind::Http => {
                self.serve(TokioIo::new(stream), Conn::default(), None, activity)
                    .await
            }
            Kind::Redirect(port) => {
                self.serve(TokioIo::new(stream), Conn::default(), Some(port), activity)
                    .await
            }
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
                self.serve(TokioIo::new(tls), conn, None, activity).await;
            }
        }
    }

    /// Serves requests until the client leaves, the node shuts down or the
    /// connection has been idle for `idle_timeout`. With `redirect`, every
    /// request is answered with a 308 to that HTTPS port instead.
    async fn serve<I>(
        self,
        io: TokioIo<I>,
        conn: Conn,
        redirect_to: Option<u16>,
        activity: Arc<Activity>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let node = self.node;
        let conn = Arc::new(conn);
        let max_uri_bytes = self.max_uri_bytes;
        let busy = activity.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let node = node.clone();
            let conn = conn.clone();
            let busy = busy.clone();
            async move {
                if let Some(port) = redirect_to {
                    return Ok::<_, Infallible>(redirect(&req, port));
                }
                // hyper itself only refuses targets over 64 KiB; a far
                // shorter cap keeps paths that no app routes on out of the
                // guests and the logs.
                let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
                if target > max_uri_bytes {
                    return Ok(error_response(
                        ErrorCode::UriTooLong,
                        "the request target is too long",
                    ));
                }
                let _busy = busy.busy();
                Ok(node.handle(req, &conn).await)
            }
        });
        let served = self.builder.serve_connection(io, service).into_owned();
        tokio::select! {
            result = self.watcher.watch(served) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            // Dropping the connection closes the socket. That is what an
            // idle keep-alive connection expects; a client that stopped
            // reading its response loses it, as it would on any proxy.
            () = activity.idle(self.idle_timeout) => {
                tracing::debug!("closing an idle connection");
            }
        }
    }
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
