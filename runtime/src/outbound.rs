//! Where a guest's outbound HTTP may go, and the client that takes it there.
//!
//! The app's allow-list ([`crate::host::OutboundPolicy`]) says which *names*
//! a guest may call; this module decides which *addresses*. The name is
//! resolved once, here; every resolved address is checked against the
//! special-purpose ranges (loopback, RFC 1918 and ULA, link-local with the
//! cloud metadata address, CGNAT, multicast, unspecified, broadcast,
//! reserved and documentation ranges, and their IPv4-mapped forms) and the
//! node's own listeners, and the connection goes to an address that passed
//! — never to a second lookup, so a name that changes its answer between
//! check and connect (DNS rebinding) gains nothing. The operator can open
//! ranges with `[outbound] allow_cidrs` (on-prem upstreams, tests on
//! loopback); the node's own listeners stay closed even then.
//!
//! What it deliberately is not: a general HTTP client. One HTTP/1.1
//! connection per call, no pooling, no redirects (the guest sees them),
//! TLS with rustls on ring and Mozilla's roots.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use hyper_util::rt::TokioIo;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

use crate::limits::MIB;

/// Node-wide outbound settings (the node config's `[outbound]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundConfig {
    /// Address ranges guests may reach although they are special-purpose
    /// (private, loopback, …). Default: none.
    pub allow_cidrs: Vec<IpNet>,
    /// Largest outbound response body a guest may read, in bytes; past it
    /// the body ends with `HTTP-response-body-size`.
    pub max_response_body_bytes: u64,
    /// Names the node resolves to a fixed address instead of asking DNS
    /// (origins on a private network, like `/etc/hosts`). The address is
    /// still checked: a private one must be in `allow_cidrs`. Lower case.
    pub hosts: std::collections::BTreeMap<String, IpAddr>,
}

impl OutboundConfig {
    /// 100 MiB, as the guest's own response cap.
    pub const DEFAULT_MAX_RESPONSE_BODY_BYTES: u64 = 100 * MIB;

    /// Parses one `allow_cidrs` entry: a CIDR (`10.0.0.0/8`, `fd00::/8`;
    /// host bits are cleared) or a single address.
    pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(net.trunc());
        }
        match text.parse::<IpAddr>() {
            Ok(ip) => Ok(IpNet::from(ip)),
            Err(_) => Err(format!(
                "{text:?} is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an IP address"
            )),
        }
    }
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            allow_cidrs: Vec::new(),
            max_response_body_bytes: Self::DEFAULT_MAX_RESPONSE_BODY_BYTES,
            hosts: Default::default(),
        }
    }
}

/// Why an address was refused. Logged; the metric counts them all as
/// `denied_address`, so its labels stay few.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16) and ULA (fc00::/7).
    Private,
    /// 169.254/16 (cloud metadata lives at 169.254.169.254), fe80::/10.
    LinkLocal,
    /// 100.64/10, carrier-grade NAT.
    SharedAddressSpace,
    /// 224/4, ff00::/8.
    Multicast,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// Reserved, documentation, benchmarking and transition ranges.
    Reserved,
    /// One of this node's own listeners (client HTTP/HTTPS, metrics).
    OwnListener,
    /// An address of this host (the connection's peer was its own source).
    OwnAddress,
    /// The name has no address at all.
    NoAddress,
}

impl Refusal {
    /// Its name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Loopback => "loopback",
            Refusal::Private => "private",
            Refusal::LinkLocal => "link_local",
            Refusal::SharedAddressSpace => "shared_address_space",
            Refusal::Multicast => "multicast",
            Refusal::Unspecified => "unspecified",
            Refusal::Broadcast => "broadcast",
            Refusal::Reserved => "reserved",
            Refusal::OwnListener => "own_listener",
            Refusal::OwnAddress => "own_address",
            Refusal::NoAddress => "no_address",
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len))
}

const fn v6(segments: [u16; 8], len: u8) -> IpNet {
    let [a, b, c, d, e, f, g, h] = segments;
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(a, b, c, d, e, f, g, h),
        len,
    ))
}

/// The special-purpose ranges (IANA's registries), first match wins.
const SPECIAL: &[(IpNet, Refusal)] = &[
    (v4(0, 0, 0, 0, 8), Refusal::Unspecified),
    (v4(10, 0, 0, 0, 8), Refusal::Private),
    (v4(100, 64, 0, 0, 10), Refusal::SharedAddressSpace),
    (v4(127, 0, 0, 0, 8), Refusal::Loopback),
    (v4(169, 254, 0, 0, 16), Refusal::LinkLocal),
    (v4(172, 16, 0, 0, 12), Refusal::Private),
    (v4(192, 0, 0, 0, 24), Refusal::Reserved),
    (v4(192, 0, 2, 0, 24), Refusal::Reserved),
    (v4(192, 88, 99, 0, 24), Refusal::Reserved),
    (v4(192, 168, 0, 0, 16), Refusal::Private),
    (v4(198, 18, 0, 0, 15), Refusal::Reserved),
    (v4(198, 51, 100, 0, 24), Refusal::Reserved),
    (v4(203, 0, 113, 0, 24), Refusal::Reserved),
    (v4(224, 0, 0, 0, 4), Refusal::Multicast),
    (v4(255, 255, 255, 255, 32), Refusal::Broadcast),
    (v4(240, 0, 0, 0, 4), Refusal::Reserved),
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), Refusal::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), Refusal::Loopback),
    // IPv4-compatible (deprecated) addresses.
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 96), Refusal::Reserved),
    // Local-use NAT64 (RFC 8215): translated to whatever the site maps.
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), Refusal::Reserved),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), Refusal::Reserved),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), Refusal::Reserved),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Refusal::Private),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Refusal::LinkLocal),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Refusal::Reserved),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Refusal::Multicast),
];

/// The address as the kernel would reach it: an IPv4-mapped IPv6 address
/// (`::ffff:127.0.0.1`) and a well-known-prefix NAT64 address
/// (`64:ff9b::7f00:1`, which a NAT64 gateway forwards to 127.0.0.1) as
/// their IPv4 address.
fn effective(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [_, _, _, _, _, _, hi, lo] = s;
                return IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
            }
            ip
        }
        IpAddr::V4(_) => ip,
    }
}

/// Why `ip` is special-purpose, if it is; `None` for a public unicast
/// address.
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    let ip = effective(ip);
    SPECIAL
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, why)| *why)
}

/// The node's outbound network policy: the operator's settings and the
/// node's own listeners. One per runtime, shared by every app; settings
/// may change after apps load (listeners are known only once bound).
#[derive(Debug, Default)]
pub struct Network {
    config: RwLock<OutboundConfig>,
    listeners: RwLock<Vec<SocketAddr>>,
}

impl Network {
    /// Uses `config` from now on.
    pub fn configure(&self, config: OutboundConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The node's own listening addresses, never reachable from guests.
    pub fn set_own_listeners(&self, addrs: Vec<SocketAddr>) {
        *self.listeners.write().unwrap_or_else(|e| e.into_inner()) = addrs;
    }

    fn config(&self) -> OutboundConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The operator's fixed address for `host`, if any.
    fn pinned(&self, host: &str) -> Option<IpAddr> {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        config.hosts.get(host).copied()
    }

    fn allowed_by_operator(&self, ip: IpAddr) -> bool {
        let ip = effective(ip);
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        config.allow_cidrs.iter().any(|net| net.contains(&ip))
    }

    /// Whether a guest may connect to `addr`, before connecting.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        let ip = effective(addr.ip());
        let listeners = self.listeners.read().unwrap_or_else(|e| e.into_inner());
        if listeners
            .iter()
            .any(|l| l.port() == addr.port() && effective(l.ip()) == ip)
        {
            return Err(Refusal::OwnListener);
        }
        drop(listeners);
        if self.allowed_by_operator(ip) {
            return Ok(());
        }
        classify(ip).map_or(Ok(()), Err)
    }

    /// Whether a connection from `local` to `peer` may be used. A
    /// connection whose peer is its own source address went to this host
    /// (its public address, say): to a listener of the node's bound to a
    /// wildcard address if the port is one of theirs, else to something
    /// else running here. Only the operator's ranges open the latter.
    pub fn check_connected(&self, local: SocketAddr, peer: SocketAddr) -> Result<(), Refusal> {
        if effective(local.ip()) != effective(peer.ip()) {
            return Ok(());
        }
        let listeners = self.listeners.read().unwrap_or_else(|e| e.into_inner());
        if listeners.iter().any(|l| l.port() == peer.port()) {
            return Err(Refusal::OwnListener);
        }
        drop(listeners);
        if self.allowed_by_operator(peer.ip()) {
            Ok(())
        } else {
            Err(Refusal::OwnAddress)
        }
    }
}

/// Why an outbound call failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Every address the name has is refused (the guest gets
    /// `HTTP-request-denied`).
    Refused(Refusal),
    /// Anything else, as the guest sees it.
    Http(HttpError),
}

impl From<HttpError> for Failure {
    fn from(e: HttpError) -> Self {
        Failure::Http(e)
    }
}

/// A connected, checked stream, TLS or not.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T> Stream for T where T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

/// The timeouts of one call: the guest's request options, else the
/// request's own deadline (`default`), so no call outlives its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl Timeouts {
    pub(crate) fn new(options: Option<RequestOptions>, default: Duration) -> Timeouts {
        let pick = |t: Option<Duration>| t.unwrap_or(default).min(default);
        Timeouts {
            connect: pick(options.and_then(|o| o.connect_timeout)),
            first_byte: pick(options.and_then(|o| o.first_byte_timeout)),
            // Tokio's interval panics on zero.
            between_bytes: pick(options.and_then(|o| o.between_bytes_timeout))
                .max(Duration::from_nanos(1)),
        }
    }
}

/// The host and port a request goes to (the port from its scheme if it
/// names none), and whether it uses TLS.
pub(crate) fn destination(uri: &http::Uri) -> Result<(String, u16, bool), HttpError> {
    let authority = uri.authority().ok_or(HttpError::HttpRequestUriInvalid)?;
    let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    Ok((host, port, tls))
}

/// Resolves `host` once, connects to the first of its addresses that
/// `net` allows and that answers, and (for `tls`) shakes hands with SNI
/// `host`. Nothing is resolved again after the check.
pub(crate) async fn connect(
    net: &Network,
    host: &str,
    port: u16,
    tls: bool,
    timeouts: Timeouts,
) -> Result<Box<dyn Stream>, Failure> {
    let deadline = Instant::now() + timeouts.connect;
    let addrs: Vec<SocketAddr> = match net.pinned(host) {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => {
            match tokio::time::timeout_at(deadline.into(), tokio::net::lookup_host((host, port)))
                .await
            {
                Err(_) => return Err(HttpError::DnsTimeout.into()),
                Ok(Err(e)) => {
                    return Err(HttpError::DnsError {
                        rcode: Some(e.to_string()),
                        info_code: None,
                    }
                    .into());
                }
                Ok(Ok(addrs)) => addrs.collect(),
            }
        }
    };
    let mut refused = Refusal::NoAddress;
    let mut failed = None;
    for addr in addrs {
        if let Err(why) = net.check(addr) {
            refused = why;
            continue;
        }
        let stream = match tokio::time::timeout_at(deadline.into(), TcpStream::connect(addr)).await
        {
            Err(_) => return Err(HttpError::ConnectionTimeout.into()),
            Ok(Err(e)) => {
                failed = Some(e);
                continue;
            }
            Ok(Ok(stream)) => stream,
        };
        let (local, peer) = (stream.local_addr(), stream.peer_addr());
        if let (Ok(local), Ok(peer)) = (local, peer)
            && let Err(why) = net.check_connected(local, peer)
        {
            refused = why;
            continue;
        }
        if !tls {
            return Ok(Box::new(stream));
        }
        let name = server_name(host)?;
        let connector = tokio_rustls::TlsConnector::from(tls_config());
        return match tokio::time::timeout_at(deadline.into(), connector.connect(name, stream)).await
        {
            Err(_) => Err(HttpError::ConnectionTimeout.into()),
            Ok(Err(e)) => Err(HttpError::Tls(e).into()),
            Ok(Ok(stream)) => Ok(Box::new(stream)),
        };
    }
    match failed {
        // Some address was allowed but none answered.
        Some(e) => Err(HttpError::Connect(e).into()),
        None => Err(Failure::Refused(refused)),
    }
}

fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, HttpError> {
    use rustls::pki_types::ServerName;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(host.to_string()).map_err(|_| HttpError::HttpRequestUriInvalid)
}

/// One client config for every call: ring, Mozilla's roots, HTTP/1.1.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// The outcome of [`exchange`]: the response, and the connection's I/O
/// to drive while its body is read.
pub(crate) type Exchanged = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
);

/// Sends `request` over `stream` (HTTP/1.1) and returns its response,
/// its body capped at `max_body` bytes and timed by `timeouts`. As
/// wasmtime-wasi-http's `default_send_request`, which it replaces.
pub(crate) async fn exchange(
    stream: Box<dyn Stream>,
    mut request: http::Request<WasiBody>,
    timeouts: Timeouts,
    max_body: u64,
) -> Result<Exchanged, HttpError> {
    use http_body_util::BodyExt;

    let (mut sender, conn) = tokio::time::timeout(
        timeouts.connect,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;

    // The request line carries only the path: the scheme and authority are
    // for proxies (the Host header is set by wasmtime-wasi-http).
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(request.uri().path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;

    let send = async move {
        let response = tokio::time::timeout(timeouts.first_byte, sender.send_request(request))
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)??;
        if let Some(len) = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            && len > max_body
        {
            return Err(HttpError::HttpResponseBodySize(Some(len)));
        }
        let mut timer = tokio::time::interval(timeouts.between_bytes);
        timer.reset();
        Ok(response.map(|incoming| {
            CappedIncoming {
                incoming,
                timer,
                left: max_body,
                max: max_body,
            }
            .boxed_unsync()
        }))
    };

    // Drive the connection while waiting for the response head.
    let mut send = std::pin::pin!(send);
    let mut conn = Some(conn);
    let response = std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(c) = conn.as_mut() else {
                return Poll::Pending;
            };
            let done = ready!(Pin::new(c).poll(cx));
            conn = None;
            match done {
                Ok(()) => send.as_mut().poll(cx),
                Err(e) => Poll::Ready(Err(HttpError::from(e))),
            }
        }
    })
    .await?;
    let io = async move {
        let Some(conn) = conn else {
            return Ok(());
        };
        conn.await.map_err(|e| {
            if e.is_timeout() {
                HttpError::HttpResponseTimeout
            } else {
                HttpError::from(e)
            }
        })
    };
    Ok((response, Box::new(io)))
}

/// A response body with a byte cap and a between-bytes timeout.
struct CappedIncoming {
    incoming: hyper::body::Incoming,
    timer: tokio::time::Interval,
    left: u64,
    max: u64,
}

impl http_body::Body for CappedIncoming {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() {
                HttpError::HttpResponseTimeout
            } else {
                HttpError::from(e)
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timer.reset();
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.left {
                        self.left = 0;
                        return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(
                            self.max,
                        )))));
                    }
                    self.left -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timer.poll_tick(cx));
                Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

/// The node's outbound network settings in effect, for [`exchange`].
pub(crate) fn max_response_body(net: &Network) -> u64 {
    net.config().max_response_body_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_purpose_addresses_are_classified_and_public_ones_pass() {
        use Refusal::*;
        for (addr, want) in [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.255", Some(Loopback)),
            ("126.255.255.255", None),
            ("128.0.0.0", None),
            ("10.0.0.0", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.0", None),
            ("9.255.255.255", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.0", None),
            ("192.168.0.1", Some(Private)),
            ("192.169.0.1", None),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.0.0", Some(LinkLocal)),
            ("169.255.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("100.128.0.0", None),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.2.1", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("198.51.100.1", Some(Reserved)),
            ("203.0.113.1", Some(Reserved)),
            ("1.1.1.1", None),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::2", Some(Reserved)),
            ("::127.0.0.1", Some(Reserved)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fbff:ffff::1", None),
            ("fe80::1", Some(LinkLocal)),
            ("febf:ffff::1", Some(LinkLocal)),
            ("fec0::1", Some(Reserved)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001:80b::200e", None),
            // IPv4-mapped and NAT64 forms are judged by their IPv4 address.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:100.64.0.1", Some(SharedAddressSpace)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
            ("64:ff9b::808:808", None),
            ("64:ff9b:1::1", Some(Reserved)),
        ] {
            assert_eq!(classify(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn operator_ranges_open_addresses_but_never_the_nodes_listeners() {
        let net = Network::default();
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(net.check(sa("127.0.0.1:8080")), Err(Refusal::Loopback));
        assert_eq!(net.check(sa("93.184.216.34:443")), Ok(()));
        net.configure(OutboundConfig {
            allow_cidrs: vec![
                OutboundConfig::parse_cidr("127.0.0.0/8").unwrap(),
                OutboundConfig::parse_cidr("10.1.2.3").unwrap(),
            ],
            ..OutboundConfig::default()
        });
        net.set_own_listeners(vec![sa("127.0.0.1:9100"), sa("0.0.0.0:8080")]);
        assert_eq!(net.check(sa("127.0.0.1:8081")), Ok(()));
        assert_eq!(net.check(sa("[::ffff:127.0.0.1]:8081")), Ok(()));
        assert_eq!(net.check(sa("[::1]:8081")), Err(Refusal::Loopback));
        assert_eq!(net.check(sa("10.1.2.3:80")), Ok(()));
        assert_eq!(net.check(sa("10.1.2.4:80")), Err(Refusal::Private));
        assert_eq!(net.check(sa("127.0.0.1:9100")), Err(Refusal::OwnListener));
        assert_eq!(
            net.check(sa("[::ffff:127.0.0.1]:9100")),
            Err(Refusal::OwnListener)
        );
        // A connection to this host's own (public) address.
        let own = sa("203.0.114.7:8080");
        assert_eq!(
            net.check_connected(sa("203.0.114.7:40000"), own),
            Err(Refusal::OwnListener)
        );
        assert_eq!(
            net.check_connected(sa("203.0.114.7:40000"), sa("203.0.114.7:7070")),
            Err(Refusal::OwnAddress)
        );
        assert_eq!(
            net.check_connected(sa("127.0.0.1:40000"), sa("127.0.0.1:7070")),
            Ok(()),
            "inside the operator's ranges"
        );
        assert_eq!(
            net.check_connected(sa("192.0.2.1:40000"), sa("203.0.114.7:8080")),
            Ok(())
        );
    }

    #[test]
    fn cidrs_parse_with_host_bits_cleared_or_are_refused() {
        let p = OutboundConfig::parse_cidr;
        assert_eq!(p("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(p("fd00::1/8").unwrap().to_string(), "fd00::/8");
        assert_eq!(p("10.0.0.5").unwrap().to_string(), "10.0.0.5/32");
        assert!(p("10.0.0.0/33").is_err());
        assert!(p("localhost").is_err());
    }
}
