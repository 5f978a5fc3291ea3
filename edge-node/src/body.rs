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

/// A short plain-text response produced by the node, never by a guest:
/// `code` goes in `x-outpost-error`, `message` in the body.
pub fn error_response(status: StatusCode, code: &'static str, message: &str) -> Response<Body> {
    let mut text = String::with_capacity(message.len() + 1);
    text.push_str(message);
    text.push('\n');
    let mut resp = Response::new(full(Bytes::from(text)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(ERROR_HEADER, HeaderValue::from_static(code));
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

#[cfg(test)]
mod tests {
    use super::*;
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
        let resp = error_response(StatusCode::NOT_FOUND, "unknown_host", "no app for host x");
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()[ERROR_HEADER], "unknown_host");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"no app for host x\n");
    }
}
