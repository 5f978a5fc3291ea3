//! HTTP bodies the node sends and receives: size caps on both directions,
//! and the plain-text responses the node generates itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use prometheus::IntCounter;

/// The body of every response the node sends.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

/// A response body stream failed (or was cut off at its cap).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

/// Header naming the cause on every response the node generates itself.
pub const ERROR_HEADER: &str = "x-outpost-error";

/// Every value of [`ERROR_HEADER`]: why the node answered a request itself.
/// README's table of codes is checked against [`ErrorCode::ALL`] by a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 404: no app is routed at this host and path.
    UnknownHost,
    /// 400: the request names no host (no `Host` header, no authority).
    MissingHost,
    /// 400: the `Host` header is not a valid host.
    BadHost,
    /// 421: on HTTPS, the `Host` belongs to another tenant than the SNI name.
    Misdirected,
    /// 414: the request target is longer than the node accepts.
    UriTooLong,
    /// 503: the app routed there failed to load on this node.
    AppUnavailable,
    /// 403: the app's tenant is disabled by the operator.
    TenantDisabled,
    /// 503 + `Retry-After`: the app's requests kept hitting limits; it gets
    /// no instances for a while.
    AppThrottled,
    /// 503 + `Retry-After`: the app's tenant holds its share of the node's
    /// instance slots while other tenants want them.
    TenantShare,
    /// 503: the worker ran out of fuel.
    Fuel,
    /// 503: the worker exceeded its memory limit.
    Memory,
    /// 504: the worker did not finish within its deadline.
    Timeout,
    /// 503 + `Retry-After`: the app has as many requests in flight as it may.
    Concurrency,
    /// 413: the request body exceeds the app's limit.
    RequestBody,
    /// 502 (or a cut-off body): the response exceeds the app's limit.
    ResponseBody,
    /// 400: the request cannot be handed to a worker.
    BadRequest,
    /// 500: the worker answered with a wasi:http error code.
    GuestError,
    /// 500: the worker trapped.
    Trap,
    /// 500: the worker returned without sending a response.
    NoResponse,
    /// 500: the worker could not be run.
    Internal,
    /// 405 (metrics listener): only GET and HEAD are served there.
    MethodNotAllowed,
    /// 404 (metrics listener): only `/metrics` and `/healthz` exist there.
    NotFound,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::UnknownHost,
        ErrorCode::MissingHost,
        ErrorCode::BadHost,
        ErrorCode::Misdirected,
        ErrorCode::UriTooLong,
        ErrorCode::AppUnavailable,
        ErrorCode::TenantDisabled,
        ErrorCode::AppThrottled,
        ErrorCode::TenantShare,
        ErrorCode::Fuel,
        ErrorCode::Memory,
        ErrorCode::Timeout,
        ErrorCode::Concurrency,
        ErrorCode::RequestBody,
        ErrorCode::ResponseBody,
        ErrorCode::BadRequest,
        ErrorCode::GuestError,
        ErrorCode::Trap,
        ErrorCode::NoResponse,
        ErrorCode::Internal,
        ErrorCode::MethodNotAllowed,
        ErrorCode::NotFound,
    ];

    /// The status the node answers with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::UnknownHost | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MissingHost | ErrorCode::BadHost | ErrorCode::BadRequest => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::TenantDisabled => StatusCode::FORBIDDEN,
            ErrorCode::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorCode::Fuel
            | ErrorCode::Memory
            | ErrorCode::Concurrency
            | ErrorCode::AppUnavailable
            | ErrorCode::AppThrottled
            | ErrorCode::TenantShare => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::RequestBody => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ResponseBody => StatusCode::BAD_GATEWAY,
            ErrorCode::GuestError
            | ErrorCode::Trap
            | ErrorCode::NoResponse
            | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The header value (and metric label, where one is counted).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownHost => "unknown_host",
            ErrorCode::MissingHost => "missing_host",
            ErrorCode::BadHost => "bad_host",
            ErrorCode::Misdirected => "misdirected",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::AppUnavailable => "app_unavailable",
            ErrorCode::TenantDisabled => "tenant_disabled",
            ErrorCode::AppThrottled => "app_throttled",
            ErrorCode::TenantShare => "tenant_share",
            ErrorCode::Fuel => "fuel",
            ErrorCode::Memory => "memory",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Concurrency => "concurrency",
            ErrorCode::RequestBody => "request_body",
            ErrorCode::ResponseBody => "response_body",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::GuestError => "guest_error",
            ErrorCode::Trap => "trap",
            ErrorCode::NoResponse => "no_response",
            ErrorCode::Internal => "internal",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NotFound => "not_found",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A short plain-text response produced by the node, never by a guest:
/// `code` sets the status and goes in `x-outpost-error`, `message` in the
/// body.
pub fn error_response(code: ErrorCode, message: &str) -> Response<Body> {
    let mut text = String::with_capacity(message.len() + 1);
    text.push_str(message);
    text.push('\n');
    let mut resp = Response::new(full(Bytes::from(text)));
    *resp.status_mut() = code.status();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(ERROR_HEADER, HeaderValue::from_static(code.as_str()));
    resp
}

/// A complete in-memory body.
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A request body that fails once more than `limit` bytes have arrived.
///
/// The guest sees the failure as a stream error; `tripped` counts it once.
pub struct LimitedRequestBody<B> {
    inner: B,
    remaining: u64,
    tripped: Option<IntCounter>,
}

impl<B> LimitedRequestBody<B> {
    /// Wraps `inner`, counting a trip on `tripped`.
    pub fn new(inner: B, limit: u64, tripped: IntCounter) -> Self {
        LimitedRequestBody {
            inner,
            remaining: limit,
            tripped: Some(tripped),
        }
    }
}

impl<B> HttpBody for LimitedRequestBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.tripped.is_none() {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                None,
            ))));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                if let Some(counter) = self.tripped.take() {
                    counter.inc();
                }
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                    None,
                ))));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body cut off (with an error, so the client sees an
/// incomplete response rather than a silently short one) after `limit`
/// bytes.
pub struct CappedResponseBody<B> {
    inner: B,
    remaining: u64,
    tripped: Option<IntCounter>,
}

impl<B> CappedResponseBody<B> {
    /// Wraps `inner`, counting a cut on `tripped`.
    pub fn new(inner: B, limit: u64, tripped: IntCounter) -> Self {
        CappedResponseBody {
            inner,
            remaining: limit,
            tripped: Some(tripped),
        }
    }
}

impl<B> HttpBody for CappedResponseBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.tripped.is_none() {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(Some(Err(BodyError(format!("guest body failed: {e}")))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                if let Some(counter) = self.tripped.take() {
                    counter.inc();
                }
                return Poll::Ready(Some(Err(BodyError(
                    "response body exceeds the app's limit".into(),
                ))));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Cancels a running instance's task when dropped, unless disarmed first.
#[derive(Debug)]
pub struct CancelGuard(Option<tokio::task::AbortHandle>);

impl CancelGuard {
    /// A guard over the task behind `handle`.
    pub fn new(handle: tokio::task::AbortHandle) -> CancelGuard {
        CancelGuard(Some(handle))
    }

    /// Leaves the task running whatever happens to this guard.
    pub fn disarm(&mut self) {
        self.0 = None;
    }

    /// Hands the duty over: returns a guard armed as this one was (for
    /// whoever takes over, a response body) and disarms this one.
    pub fn hand_over(&mut self) -> CancelGuard {
        CancelGuard(self.0.take())
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// A response body streamed from a running instance: dropped before its
/// end (the client went away mid-body), it cancels the instance; read to
/// its end, it leaves the instance to finish (and be accounted) as usual.
pub struct CancelOnDropBody<B> {
    inner: B,
    cancel: CancelGuard,
}

impl<B> CancelOnDropBody<B> {
    /// `inner`, cancelling through `cancel` if dropped unfinished.
    pub fn new(inner: B, cancel: CancelGuard) -> CancelOnDropBody<B> {
        CancelOnDropBody { inner, cancel }
    }
}

impl<B> HttpBody for CancelOnDropBody<B>
where
    B: HttpBody + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        // The end: hyper may stop polling once `is_end_stream` says so.
        if matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.cancel.disarm();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README's table of codes lists exactly [`ErrorCode::ALL`], each with
    /// the status the node answers with.
    #[test]
    fn the_readme_table_lists_every_error_code_with_its_status() {
        let readme = include_str!("../../README.md");
        let table = readme
            .split("<!-- error-codes: begin -->")
            .nth(1)
            .and_then(|rest| rest.split("<!-- error-codes: end -->").next())
            .expect("README.md has the error-codes table between its markers");
        let rows: Vec<(String, u16)> = table
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let status = cells.get(2)?.parse().ok()?;
                Some((code.to_string(), status))
            })
            .collect();
        let want: Vec<(String, u16)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), c.status().as_u16()))
            .collect();
        assert_eq!(
            rows, want,
            "README.md's error-code table and ErrorCode differ"
        );
    }
    use http_body_util::StreamBody;

    fn counter() -> IntCounter {
        IntCounter::new("c", "c").unwrap()
    }

    type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BodyError>>>;

    fn chunks(parts: &[&'static [u8]]) -> StreamBody<Frames> {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn response_bodies_are_cut_at_the_cap() {
        let c = counter();
        let body = CappedResponseBody::new(chunks(&[b"1234", b"5678", b"9"]), 6, c.clone());
        let err = body.collect().await.unwrap_err();
        assert!(err.to_string().contains("exceeds"));
        assert_eq!(c.get(), 1);

        let c = counter();
        let body = CappedResponseBody::new(chunks(&[b"1234", b"56"]), 6, c.clone());
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"123456");
        assert_eq!(c.get(), 0);
    }

    #[tokio::test]
    async fn node_errors_name_their_cause() {
        let resp = error_response(ErrorCode::UnknownHost, "no app for host x");
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()[ERROR_HEADER], "unknown_host");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"no app for host x\n");
    }
}
