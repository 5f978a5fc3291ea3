//! Connection handling for Outpost's HTTP listeners, shared by the edge
//! node's client listeners and the control plane's API, so that both stand
//! up to hostile clients the same way:
//!
//! - a connection cap ([`Limiter`]); at the cap a new connection takes the
//!   place of an idle one (sampled), as nginx reuses idle keep-alive
//!   connections, or is closed at once if none turns up, so the accept
//!   loop keeps draining the backlog whatever the load;
//! - a header-read timeout (slowloris; it also ends idle HTTP/1.1
//!   keep-alive) and caps on the request head and target (431, 414);
//! - an idle timeout: a connection on which no byte has moved for a while
//!   and no request is being handled is closed ([`Http::serve`]);
//! - HTTP/2 stream caps and the rapid-reset defence;
//! - graceful shutdown with a bounded grace period ([`drain`]).
//!
//! It deliberately is not a server: it knows no routes, no TLS and no
//! metrics, and owns no accept loop. Each binary keeps its own (the node
//! runs two listeners under one cap and a TLS handshake in each
//! connection's task; the control plane one plain listener) and calls in
//! here for every decision that must be the same on both.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub mod config;
mod idle;

pub use config::Config;
pub use idle::Tracked;
use idle::{Activity, Busy, Registered, Slots};

/// Connections the kernel may hold for the accept loop. tokio's default
/// of 1024 overflows under a connection flood, and a client whose handshake
/// lands in a full queue waits seconds for SYN-ACK retransmits; the kernel
/// still caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (port 0 picks a free port) with a backlog sized for a
/// connection flood.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std and tokio do, so a restarted server can rebind at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The next connection on `listener`. Errors are logged and retried after
/// a pause: they are mostly running out of file descriptors, and spinning
/// on them would starve the connections that are being closed to free
/// some. Cancel-safe, so it can race a shutdown signal.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The connection cap and the open connections under it, shared by every
/// listener that counts against the same cap.
pub struct Limiter {
    permits: Arc<Semaphore>,
    slots: Arc<Slots>,
    /// A connection quiet for this long may be closed to make room at the
    /// cap: long enough for a new client to send its request.
    evictable_after: Duration,
}

impl Limiter {
    /// A cap of `config.max_connections`.
    pub fn new(config: &Config) -> Limiter {
        Limiter {
            permits: Arc::new(Semaphore::new(config.max_connections)),
            slots: Arc::new(Slots::default()),
            evictable_after: config.idle_timeout.min(Duration::from_secs(1)),
        }
    }

    /// Decides, in the accept loop and without waiting, whether a new
    /// connection may be served: under the cap, or at the cap once an idle
    /// connection was told to make room. `None`: drop it at once rather
    /// than let it queue.
    pub fn admit(&self) -> Option<Admitted> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(Admitted {
                permit: Some(permit),
                permits: self.permits.clone(),
                slots: self.slots.clone(),
            }),
            Err(_) if self.slots.evict_one(self.evictable_after) => Some(Admitted {
                permit: None,
                permits: self.permits.clone(),
                slots: self.slots.clone(),
            }),
            Err(_) => None,
        }
    }
}

/// A connection let in by [`Limiter::admit`], not yet holding its place.
pub struct Admitted {
    permit: Option<OwnedSemaphorePermit>,
    permits: Arc<Semaphore>,
    slots: Arc<Slots>,
}

impl Admitted {
    /// Takes the connection's place under the cap; call it in the
    /// connection's own task. After an eviction, the evicted connection's
    /// task hands its permit back as it ends and waiters are served first,
    /// so this one gets it; `None` if that has not happened within a
    /// second (the connection is then dropped).
    pub async fn seat(self) -> Option<Seat> {
        let permit = match self.permit {
            Some(permit) => permit,
            None => tokio::time::timeout(Duration::from_secs(1), self.permits.acquire_owned())
                .await
                .ok()?
                .ok()?,
        };
        let activity = Arc::new(Activity::new());
        let slot = self.slots.register(activity.clone());
        Some(Seat {
            activity,
            slot,
            _permit: permit,
        })
    }
}

/// A connection's place under the cap, given back when dropped.
pub struct Seat {
    activity: Arc<Activity>,
    slot: Registered,
    _permit: OwnedSemaphorePermit,
}

impl Seat {
    /// `io`, recording every byte that moves on it as activity. Wrap the
    /// raw socket, under TLS: a client that stops reading stalls the TCP
    /// stream whatever runs on top of it.
    pub fn track<I>(&self, io: I) -> Tracked<I> {
        Tracked {
            inner: io,
            activity: self.activity.clone(),
        }
    }

    /// Completes once this connection was picked to make room for a new
    /// one; the caller then drops it (which closes the socket).
    pub async fn evicted(&self) {
        self.slot.evicted().await;
    }
}

/// Serves HTTP/1.1 and HTTP/2 on accepted connections under a
/// [`Config`]'s limits.
pub struct Http {
    builder: auto::Builder<TokioExecutor>,
    idle_timeout: Duration,
    max_uri_bytes: usize,
    busy_through_body: bool,
}

impl Http {
    /// hyper's auto builder set up with `config`'s limits.
    pub fn new(config: &Config) -> Http {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            // hyper answers a head that does not fit with 431.
            .max_buf_size(config.max_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.h2_max_concurrent_streams)
            .max_pending_accept_reset_streams(config.h2_max_pending_accept_reset_streams)
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
        Http {
            builder,
            idle_timeout: config.idle_timeout,
            max_uri_bytes: config.max_uri_bytes,
            busy_through_body: false,
        }
    }

    /// Counts a request as being handled until the last byte of its
    /// response body has gone, not only until its head: for servers whose
    /// long-lived responses may be quiet for longer than the idle timeout
    /// (the control plane's log follow streams) and whose handlers bound
    /// them themselves. Off by default: the node's guests stream under the
    /// app's deadline, and a stalled stream ends with its connection.
    pub fn busy_through_body(mut self, on: bool) -> Http {
        self.busy_through_body = on;
        self
    }

    /// Serves requests on `io` with `service` until the client leaves, the
    /// server shuts down (`watcher`), or the connection has been idle for
    /// the idle timeout. A request target longer than `max_uri_bytes` is
    /// answered with `uri_too_long()` without reaching `service`: hyper
    /// itself only refuses targets over 64 KiB, and a far shorter cap keeps
    /// paths that nothing routes on out of handlers and logs.
    ///
    /// Run it raced against [`Seat::evicted`].
    pub async fn serve<I, S, B>(
        &self,
        io: I,
        seat: &Seat,
        watcher: Watcher,
        service: S,
        uri_too_long: fn() -> Response<B>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let service = Guarded {
            inner: service,
            activity: seat.activity.clone(),
            max_uri_bytes: self.max_uri_bytes,
            uri_too_long,
            busy_through_body: self.busy_through_body,
        };
        let served = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        tokio::select! {
            result = watcher.watch(served) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            // Dropping the connection closes the socket. That is what an
            // idle keep-alive connection expects; a client that stopped
            // reading its response loses it, as it would on any proxy.
            () = seat.activity.idle(self.idle_timeout) => {
                tracing::debug!("closing an idle connection");
            }
        }
    }
}

/// Stops serving: tells every connection watched by `graceful` to finish
/// (HTTP/1.1 after the response in flight, h2 with GOAWAY), then waits at
/// most `grace` for them; connections still open after that are dropped
/// with the runtime.
pub async fn drain(graceful: GracefulShutdown, grace: Duration) {
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("shutdown grace period over; dropping connections still open");
        }
    }
}

/// The service a connection runs: the caller's, behind the target cap,
/// with every request counted as activity while it is handled.
struct Guarded<S, B> {
    inner: S,
    activity: Arc<Activity>,
    max_uri_bytes: usize,
    uri_too_long: fn() -> Response<B>,
    busy_through_body: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<Incoming>> for Guarded<S, B>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BusyBody<B>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if target > self.max_uri_bytes {
            let resp = (self.uri_too_long)().map(|body| BusyBody { body, busy: None });
            return Box::pin(std::future::ready(Ok(resp)));
        }
        let busy = self.activity.busy();
        let through_body = self.busy_through_body;
        let handled = self.inner.call(req);
        Box::pin(async move {
            let resp = handled.await?;
            // Without `busy_through_body` the request stops counting once
            // its head is ready; its body counts as bytes moving.
            let busy = through_body.then_some(busy);
            Ok(resp.map(|body| BusyBody { body, busy }))
        })
    }
}

/// A response body that keeps its request counted as being handled until
/// it ends or is dropped (when the client goes away).
pub struct BusyBody<B> {
    body: B,
    busy: Option<Busy>,
}

impl<B: Body + Unpin> Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
