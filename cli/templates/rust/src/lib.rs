//! {{name}}: an Outpost worker in Rust.
//!
//! Answers every request with 200 and the text below. The app is
//! [`handle`], plain Rust that `cargo test` runs natively. The `wasm`
//! module, compiled only for `wasm32-wasip2` (`outpost build`), turns it
//! into a component exporting `wasi:http/incoming-handler` (the
//! `wasi:http/proxy` world). `outpost dev --watch` rebuilds and serves it
//! again whenever `src/` changes.

/// What the app answers.
const BODY: &str = "Hello from {{name}}!\n";

/// An answer: its status, headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Answers one request (`path` is without its query). Every method and
/// path gets the greeting; match on them here to route.
pub fn handle(_method: &str, _path: &str) -> Response {
    Response {
        status: 200,
        headers: vec![("content-type".to_string(), "text/plain".to_string())],
        body: BODY.as_bytes().to_vec(),
    }
}

/// The `wasi:http` glue, compiled only for `wasm32` (`outpost build`, i.e.
/// `cargo build --target wasm32-wasip2`): native builds and tests never
/// see it. Written against the `wasi` crate 0.14.7 (`wasip2` 1.0.x).
#[cfg(target_arch = "wasm32")]
mod wasm {
    use wasi::exports::http::incoming_handler::Guest;
    use wasi::http::types::{
        Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
    };

    /// `blocking-write-and-flush` takes at most 4096 bytes per call.
    const WRITE_CHUNK: usize = 4096;

    struct App;

    impl Guest for App {
        fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
            let method = method_name(&request.method());
            let path_with_query = request.path_with_query().unwrap_or_default();
            let path = path_with_query.split('?').next().unwrap_or_default();
            let path = if path.is_empty() { "/" } else { path };
            let answer = super::handle(&method, path);
            drop(request);

            let headers = Fields::new();
            for (name, value) in &answer.headers {
                // A header the host refuses (a forbidden one such as
                // `connection`, or bad syntax) is left out.
                if let Err(e) = headers.append(name, value.as_bytes()) {
                    eprintln!("response header {name:?} dropped: {e:?}");
                }
            }
            let response = OutgoingResponse::new(headers);
            if response.set_status_code(answer.status).is_err() {
                eprintln!("status {} is not valid; answering 500", answer.status);
                let _ = response.set_status_code(500);
            }
            // Take the body before handing the response over: after `set`
            // the response belongs to the host.
            let body = response.body().expect("a new response's body is there");
            ResponseOutparam::set(response_out, Ok(response));

            let stream = body.write().expect("a new body's stream is there");
            for chunk in answer.body.chunks(WRITE_CHUNK) {
                if let Err(e) = stream.blocking_write_and_flush(chunk) {
                    // The client went away: dropping the unfinished body
                    // tells the host the response is incomplete.
                    eprintln!("writing the response body: {e:?}");
                    return;
                }
            }
            // The stream must be gone before `finish`, and `finish` (not a
            // drop) marks the body complete.
            drop(stream);
            if let Err(e) = OutgoingBody::finish(body, None) {
                eprintln!("finishing the response body: {e:?}");
            }
        }
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
            Method::Other(other) => other.as_str(),
        }
        .to_string()
    }

    wasi::http::proxy::export!(App);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_gets_the_greeting_as_plain_text() {
        for (method, path) in [("GET", "/"), ("POST", "/anything/else"), ("HEAD", "/x")] {
            let response = handle(method, path);
            assert_eq!(response.status, 200, "{method} {path}");
            assert_eq!(
                response.headers,
                [("content-type".to_string(), "text/plain".to_string())],
                "{method} {path}"
            );
            assert_eq!(
                String::from_utf8(response.body).unwrap(),
                "Hello from {{name}}!\n",
                "{method} {path}"
            );
        }
    }
}
