//! The `wasi:http` glue, compiled only for `wasm32` (a worker build):
//! `serve` turns the exported `incoming-handler` call into a [`Request`]
//! and the handler's [`Response`] back into an `outgoing-response`;
//! `WasiTransport` sends [`fetch`](crate::fetch)es through
//! `wasi:http/outgoing-handler`.
//!
//! Written against the `wasi` 0.14.7 crate (a facade over `wasip2` 1.x).
//! Resource rules this code keeps: a child resource (a stream of a body, the
//! headers of a request, a pollable) is dropped before its parent is
//! finished or dropped, and a response body is finished only after its
//! output stream is dropped.

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode as WasiErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingRequest,
    IncomingResponse, Method, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};
use wasi::io::streams::{InputStream, StreamError};

use crate::fetch::{ErrorCode, Transport};
use crate::{Handler, Headers, Request, Response};

/// How much to ask for per read of a body stream.
const READ_CHUNK: u64 = 64 * 1024;
/// `blocking-write-and-flush` accepts at most 4096 bytes per call.
const WRITE_CHUNK: usize = 4096;

/// Answers one incoming request with `H`. Called by the code that
/// [`export_handler!`](crate::export_handler) generates.
pub fn serve<H: Handler>(request: IncomingRequest, response_out: ResponseOutparam) {
    let response = match read_request(request) {
        Ok(request) => H::handle(request),
        Err(message) => Response::bad_request(message),
    };
    send_response(response_out, response);
}

fn read_request(request: IncomingRequest) -> Result<Request, String> {
    let method = method_name(&request.method());
    let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
    let scheme = request.scheme().map(|s| scheme_name(&s));
    let authority = request.authority();
    // The headers resource is a child of the request: read it and drop it.
    let headers = headers_from(request.headers().entries());
    let incoming = request
        .consume()
        .map_err(|()| "the request body was already taken".to_string())?;
    let body = read_body(&incoming);
    // Finishing the body (its stream is gone by now) yields a trailers
    // future, which the SDK does not use.
    drop(IncomingBody::finish(incoming));
    let body = body.map_err(|e| format!("could not read the request body: {e}"))?;

    Ok(Request::builder()
        .method(&method)
        .uri(&path_with_query)
        .origin(scheme.as_deref(), authority.as_deref())
        .headers(headers)
        .body(body)
        .build())
}

fn send_response(response_out: ResponseOutparam, response: Response) {
    let (status, headers, body) = response.into_parts();
    let fields = Fields::new();
    for (name, value) in headers.iter() {
        // A header the host refuses (a forbidden one such as `connection`,
        // or bad syntax) is left out rather than failing the whole answer;
        // the guest's stderr says so.
        if let Err(e) = fields.append(name, value.as_bytes()) {
            eprintln!("outpost-sdk: response header {name:?} dropped: {e:?}");
        }
    }
    let outgoing = OutgoingResponse::new(fields);
    if outgoing.set_status_code(status).is_err() {
        eprintln!("outpost-sdk: status {status} is not a valid HTTP status; answering 500");
        let _ = outgoing.set_status_code(500);
    }
    // The body handle has to be taken before the response goes to the host.
    let outgoing_body = outgoing.body();
    ResponseOutparam::set(response_out, Ok(outgoing));
    let Ok(outgoing_body) = outgoing_body else {
        return;
    };
    match write_body(&outgoing_body, &body) {
        Ok(()) => {
            if let Err(e) = OutgoingBody::finish(outgoing_body, None) {
                eprintln!("outpost-sdk: could not finish the response body: {e:?}");
            }
        }
        // Dropping an unfinished body tells the host the response is
        // incomplete, which is the truth.
        Err(e) => eprintln!("outpost-sdk: could not write the response body: {e}"),
    }
}

/// Sends requests through `wasi:http/outgoing-handler`.
pub(crate) struct WasiTransport;

impl Transport for WasiTransport {
    fn send(&self, request: &Request) -> Result<Response, ErrorCode> {
        let fields = Fields::new();
        for (name, value) in request.headers().iter() {
            fields
                .append(name, value.as_bytes())
                .map_err(|e| internal(format!("header {name:?} refused: {e:?}")))?;
        }
        let outgoing = OutgoingRequest::new(fields);
        outgoing
            .set_method(&wasi_method(request.method()))
            .map_err(|()| internal(format!("method {} refused", request.method())))?;
        let scheme = match request.scheme() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => Scheme::Other(other.to_string()),
            None => return Err(internal("the request has no scheme".to_string())),
        };
        outgoing
            .set_scheme(Some(&scheme))
            .map_err(|()| internal("scheme refused".to_string()))?;
        outgoing
            .set_authority(request.authority())
            .map_err(|()| internal("authority refused".to_string()))?;
        let path_with_query = request.path_with_query();
        outgoing
            .set_path_with_query(Some(path_with_query.as_str()))
            .map_err(|()| internal(format!("path {path_with_query:?} refused")))?;

        // Only a request with a body gets a body resource: without one the
        // host sends no body at all (no chunked encoding on a GET).
        let body = if request.body().is_empty() {
            None
        } else {
            Some(
                outgoing
                    .body()
                    .map_err(|()| internal("request body already taken".to_string()))?,
            )
        };

        // Hand the request over first and stream the body after, so a large
        // body never waits on a host that has not started sending.
        let future = outgoing_handler::handle(outgoing, None).map_err(from_wasi)?;
        let written = match body {
            None => Ok(()),
            Some(body) => match write_body(&body, request.body()) {
                Ok(()) => OutgoingBody::finish(body, None).map_err(from_wasi),
                Err(e) => Err(internal(format!("could not write the request body: {e}"))),
            },
        };
        // A refused request (denied host, subrequest cap) usually fails the
        // body write too; the host's reason is the one to report, so the
        // response future is read first.
        let incoming = wait_for(&future);
        drop(future);
        let incoming = incoming?;
        if let Err(e) = written {
            // The far side answered anyway (e.g. 413 before reading it all);
            // that answer is more useful than the write error.
            eprintln!("outpost-sdk: {e}; returning the response that arrived");
        }
        read_response(incoming)
    }
}

fn wait_for(future: &FutureIncomingResponse) -> Result<IncomingResponse, ErrorCode> {
    loop {
        match future.get() {
            Some(Ok(result)) => return result.map_err(from_wasi),
            Some(Err(())) => return Err(internal("the response was already taken".to_string())),
            // The pollable is a child of the future; it is dropped at the end
            // of this statement.
            None => future.subscribe().block(),
        }
    }
}

fn read_response(incoming: IncomingResponse) -> Result<Response, ErrorCode> {
    let status = incoming.status();
    let headers = headers_from(incoming.headers().entries());
    let body = incoming
        .consume()
        .map_err(|()| internal("response body already taken".to_string()))?;
    let bytes = read_body(&body);
    drop(IncomingBody::finish(body));
    drop(incoming);
    let bytes = bytes.map_err(|e| internal(format!("could not read the response body: {e}")))?;
    Ok(Response::from_parts(status, headers, bytes))
}

/// Reads a whole incoming body. Its stream is dropped on return, so the
/// caller can finish the body.
fn read_body(body: &IncomingBody) -> Result<Vec<u8>, String> {
    let stream = body
        .stream()
        .map_err(|()| "body stream already taken".to_string())?;
    read_stream(&stream)
}

fn read_stream(stream: &InputStream) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
        }
    }
}

/// Writes `bytes` to an outgoing body. The stream is dropped on return, so
/// the caller can finish the body.
fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    let stream = body
        .write()
        .map_err(|()| "body stream already taken".to_string())?;
    for chunk in bytes.chunks(WRITE_CHUNK) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|e| match e {
                StreamError::Closed => "the stream was closed".to_string(),
                StreamError::LastOperationFailed(e) => e.to_debug_string(),
            })?;
    }
    Ok(())
}

fn headers_from(entries: Vec<(String, Vec<u8>)>) -> Headers {
    entries
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect()
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => return other.clone(),
    }
    .to_string()
}

fn wasi_method(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    }
}

fn scheme_name(scheme: &Scheme) -> String {
    match scheme {
        Scheme::Http => "http".to_string(),
        Scheme::Https => "https".to_string(),
        Scheme::Other(other) => other.clone(),
    }
}

fn from_wasi(code: WasiErrorCode) -> ErrorCode {
    match code {
        WasiErrorCode::HttpRequestDenied => ErrorCode::HttpRequestDenied,
        WasiErrorCode::ConnectionLimitReached => ErrorCode::ConnectionLimitReached,
        WasiErrorCode::InternalError(message) => ErrorCode::InternalError(message),
        other => ErrorCode::Other(format!("{other:?}")),
    }
}

fn internal(message: String) -> ErrorCode {
    ErrorCode::InternalError(Some(message))
}
