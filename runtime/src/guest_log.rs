//! Capture of guests' stdout and stderr.
//!
//! A guest's output never goes to the node's own stdout unlabelled: each
//! complete line becomes a `tracing` event on target `outpost::guest` with
//! the tenant, app, request id and stream, and is kept in a small per-app
//! ring buffer (what `outpost logs` will read). Each request may write at
//! most [`Limits::max_log_bytes_per_request`](super::limits::Limits) bytes;
//! the rest is dropped and counted, so a guest printing in a loop costs the
//! node nothing but that counter.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use prometheus::IntCounter;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::log_ship::ShipQueue;

/// Lines kept per app.
const RING_LINES: usize = 256;
/// A line longer than this is split: a guest cannot make the node buffer
/// an unbounded line.
const MAX_LINE: usize = 4096;

/// Which of the guest's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `wasi:cli/stdout`.
    Stdout,
    /// `wasi:cli/stderr`.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of guest output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The node-unique id of the request that wrote it.
    pub request_id: u64,
    /// stdout or stderr.
    pub stream: Stream,
    /// The line, without its newline; invalid UTF-8 replaced.
    pub text: String,
}

/// One app's recent guest output.
#[derive(Debug)]
pub struct GuestLog {
    tenant: String,
    app: String,
    ring: Mutex<VecDeque<LogLine>>,
    dropped: IntCounter,
    /// Where lines are shipped to the control plane (sync mode), if anywhere.
    ship: Option<Shipping>,
}

/// Longest line text shipped to the control plane; the local log keeps all.
const MAX_SHIPPED_LINE: usize = 4096;

/// Where an app's lines are shipped to the control plane (sync mode).
#[derive(Debug)]
struct Shipping {
    queue: Arc<ShipQueue>,
    /// Lines of this app dropped from the queue before shipping.
    unshipped: IntCounter,
}

impl GuestLog {
    /// A log for one app; `dropped` counts bytes over the per-request cap.
    pub fn new(tenant: &str, app: &str, dropped: IntCounter) -> GuestLog {
        GuestLog {
            tenant: tenant.to_string(),
            app: app.to_string(),
            ring: Mutex::new(VecDeque::with_capacity(16)),
            dropped,
            ship: None,
        }
    }

    /// Also queues every line on `queue` for shipping; `unshipped` counts
    /// this app's lines the queue drops (see [`ShipQueue`]).
    pub fn shipping_to(mut self, queue: Arc<ShipQueue>, unshipped: IntCounter) -> GuestLog {
        self.ship = Some(Shipping { queue, unshipped });
        self
    }

    /// The most recent lines, oldest first.
    pub fn recent(&self) -> Vec<LogLine> {
        self.ring.lock().unwrap().iter().cloned().collect()
    }

    fn push(&self, line: LogLine) {
        tracing::info!(
            target: "outpost::guest",
            tenant = %self.tenant,
            app = %self.app,
            request_id = line.request_id,
            stream = line.stream.as_str(),
            "{}",
            line.text
        );
        if let Some(ship) = &self.ship {
            let time_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let mut text = line.text.clone();
            if text.len() > MAX_SHIPPED_LINE {
                let mut cut = MAX_SHIPPED_LINE;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push('…');
            }
            ship.queue.push(
                outpost_proto::GuestLogLine {
                    tenant: self.tenant.clone(),
                    app: self.app.clone(),
                    node: String::new(),
                    request_id: line.request_id,
                    stream: line.stream.as_str().to_string(),
                    text,
                    time_ms,
                },
                &ship.unshipped,
            );
        }
        let mut ring = self.ring.lock().unwrap();
        if ring.len() == RING_LINES {
            ring.pop_front();
        }
        ring.push_back(line);
    }
}

/// The output of one request: both streams share its byte budget.
#[derive(Debug)]
pub struct RequestOutput {
    log: Arc<GuestLog>,
    request_id: u64,
    state: Mutex<OutputState>,
}

#[derive(Debug)]
struct OutputState {
    budget: u64,
    partial: [Vec<u8>; 2],
}

impl RequestOutput {
    /// Output of request `request_id`, capped at `budget` bytes.
    pub fn new(log: Arc<GuestLog>, request_id: u64, budget: u64) -> Arc<RequestOutput> {
        Arc::new(RequestOutput {
            log,
            request_id,
            state: Mutex::new(OutputState {
                budget,
                partial: [Vec::new(), Vec::new()],
            }),
        })
    }

    /// A `wasi:cli` stdout/stderr implementation writing here.
    pub fn stream(self: &Arc<Self>, stream: Stream) -> GuestStdio {
        GuestStdio {
            out: self.clone(),
            stream,
        }
    }

    fn write(&self, stream: Stream, mut bytes: &[u8]) {
        let mut state = self.state.lock().unwrap();
        let kept = bytes
            .len()
            .min(usize::try_from(state.budget).unwrap_or(usize::MAX));
        let over = bytes.len() - kept;
        if over > 0 {
            self.log.dropped.inc_by(over as u64);
        }
        bytes = &bytes[..kept];
        state.budget -= kept as u64;
        let partial = &mut state.partial[stream as usize];
        while !bytes.is_empty() {
            let room = MAX_LINE - partial.len();
            let take = match bytes.iter().position(|b| *b == b'\n') {
                Some(i) if i < room => i + 1,
                _ => room.min(bytes.len()),
            };
            partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if partial.last() == Some(&b'\n') || partial.len() >= MAX_LINE {
                let line = std::mem::take(partial);
                self.emit(stream, &line);
            }
        }
    }

    fn emit(&self, stream: Stream, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.log.push(LogLine {
            request_id: self.request_id,
            stream,
            text: String::from_utf8_lossy(line).into_owned(),
        });
    }
}

impl Drop for RequestOutput {
    fn drop(&mut self) {
        // A last line without its newline still belongs in the log.
        let state = self.state.get_mut().unwrap();
        let partials = std::mem::take(&mut state.partial);
        for (stream, partial) in [Stream::Stdout, Stream::Stderr].into_iter().zip(partials) {
            if !partial.is_empty() {
                self.emit(stream, &partial);
            }
        }
    }
}

/// What the guest sees as its stdout or stderr.
#[derive(Debug, Clone)]
pub struct GuestStdio {
    out: Arc<RequestOutput>,
    stream: Stream,
}

impl IsTerminal for GuestStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStdio {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

/// Writes never block and never fail: past the budget they are dropped.
const WRITE_PERMIT: usize = 64 * 1024;

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStdio {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestStdio {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.out.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for GuestStdio {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.out.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> Arc<GuestLog> {
        Arc::new(GuestLog::new(
            "t",
            "a",
            IntCounter::new("dropped", "dropped").unwrap(),
        ))
    }

    #[test]
    fn lines_are_split_tagged_and_flushed_on_drop() {
        let log = log();
        let out = RequestOutput::new(log.clone(), 7, 1024);
        out.write(Stream::Stdout, b"one\ntw");
        out.write(Stream::Stderr, b"err\r\n");
        out.write(Stream::Stdout, b"o\nthree");
        drop(out);
        let lines: Vec<_> = log
            .recent()
            .into_iter()
            .map(|l| (l.request_id, l.stream, l.text))
            .collect();
        assert_eq!(
            lines,
            vec![
                (7, Stream::Stdout, "one".to_string()),
                (7, Stream::Stderr, "err".to_string()),
                (7, Stream::Stdout, "two".to_string()),
                (7, Stream::Stdout, "three".to_string()),
            ]
        );
    }

    #[test]
    fn output_past_the_budget_is_dropped_and_counted() {
        let log = log();
        let out = RequestOutput::new(log.clone(), 1, 8);
        out.write(Stream::Stdout, b"12345\n");
        out.write(Stream::Stdout, b"6789\n");
        drop(out);
        let texts: Vec<_> = log.recent().into_iter().map(|l| l.text).collect();
        assert_eq!(texts, vec!["12345", "67"]);
        assert_eq!(log.dropped.get(), 3);
    }

    #[test]
    fn the_ring_keeps_only_recent_lines() {
        let log = log();
        let out = RequestOutput::new(log.clone(), 1, u64::MAX);
        for i in 0..(RING_LINES + 10) {
            out.write(Stream::Stdout, format!("{i}\n").as_bytes());
        }
        let recent = log.recent();
        assert_eq!(recent.len(), RING_LINES);
        assert_eq!(recent[0].text, "10");
    }

    #[test]
    fn endless_lines_are_split() {
        let log = log();
        let out = RequestOutput::new(log.clone(), 1, u64::MAX);
        out.write(Stream::Stdout, &vec![b'x'; MAX_LINE * 2 + 1]);
        drop(out);
        let lens: Vec<_> = log.recent().iter().map(|l| l.text.len()).collect();
        assert_eq!(lens, vec![MAX_LINE, MAX_LINE, 1]);
    }
}
