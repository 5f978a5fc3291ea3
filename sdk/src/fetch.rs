//! Outbound HTTP from a worker: [`fetch`].
//!
//! Inside a worker, `fetch` goes through `wasi:http/outgoing-handler`. The
//! platform only lets a request through to hosts on the app's outbound
//! allow-list, and caps how many subrequests one incoming request may make;
//! both refusals come back as their own [`FetchError`] cases so a worker can
//! tell them apart from a network failure.
//!
//! The SDK's logic around the host call (checking the URL, turning the
//! host's `error-code` into a `FetchError`) is reached through the
//! [`Transport`] trait, so it can be tested natively with a fake transport
//! via [`fetch_with`].

use std::fmt;

use crate::request::Request;
use crate::response::Response;

/// Sends `request` (something that converts into a [`Request`] with an
/// absolute `http://` or `https://` URL, such as a `&str`) and returns the
/// whole response.
///
/// Any status, including `4xx`/`5xx`, is an `Ok` response: an `Err` means
/// no response was received.
///
/// ```no_run
/// use outpost_sdk::{fetch, FetchError, Request};
///
/// match fetch("https://api.example.com/v1/status") {
///     Ok(res) => println!("{}", res.status_code()),
///     Err(FetchError::Denied { host }) => eprintln!("add {host} to the app's allow-list"),
///     Err(e) => eprintln!("{e}"),
/// }
/// let res = fetch(
///     Request::builder()
///         .method("POST")
///         .uri("https://api.example.com/v1/items")
///         .header("content-type", "application/json")
///         .body(r#"{"name":"x"}"#),
/// );
/// ```
///
/// On a native (non-wasm32) build there is no platform to send through:
/// after checking the URL, `fetch` returns [`FetchError::NotInWorker`].
pub fn fetch(request: impl Into<Request>) -> Result<Response, FetchError> {
    #[cfg(target_arch = "wasm32")]
    {
        fetch_with(&crate::wasi_glue::WasiTransport, request)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        target_host(&request.into())?;
        Err(FetchError::NotInWorker)
    }
}

/// [`fetch`] through a given transport: checks the request, sends it, and
/// maps the transport's [`ErrorCode`] to a [`FetchError`].
pub fn fetch_with<T>(transport: &T, request: impl Into<Request>) -> Result<Response, FetchError>
where
    T: Transport + ?Sized,
{
    let request = request.into();
    let host = target_host(&request)?;
    transport
        .send(&request)
        .map_err(|code| FetchError::from_error_code(code, host))
}

/// Something that can deliver an outbound request: `wasi:http` inside a
/// worker, or a fake in tests.
pub trait Transport {
    /// Sends `request`, whose scheme (`http`/`https`) and authority are set,
    /// and returns the whole response, or the `error-code` the host answered
    /// with.
    fn send(&self, request: &Request) -> Result<Response, ErrorCode>;
}

impl<T: Transport + ?Sized> Transport for &T {
    fn send(&self, request: &Request) -> Result<Response, ErrorCode> {
        (**self).send(request)
    }
}

/// The `wasi:http` `error-code` an outbound request failed with, reduced to
/// the cases the SDK tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `HTTP-request-denied`: the platform refused to send the request (on
    /// Outpost: the host is not on the app's outbound allow-list).
    HttpRequestDenied,
    /// `connection-limit-reached`: on Outpost, this incoming request has used
    /// up its subrequest cap.
    ConnectionLimitReached,
    /// `internal-error`, with the host's message if it gave one. The SDK
    /// also reports its own failures to hand a request over or read a
    /// response this way.
    InternalError(Option<String>),
    /// Any other `error-code` (DNS, connection, TLS, timeouts, protocol),
    /// described by the host's bindings.
    Other(String),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::HttpRequestDenied => f.write_str("HTTP-request-denied"),
            ErrorCode::ConnectionLimitReached => f.write_str("connection-limit-reached"),
            ErrorCode::InternalError(None) => f.write_str("internal-error"),
            ErrorCode::InternalError(Some(message)) => write!(f, "internal-error: {message}"),
            ErrorCode::Other(description) => f.write_str(description),
        }
    }
}

/// Why [`fetch`] returned no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The platform refused to send the request: `host` is not on this
    /// app's outbound allow-list.
    #[error(
        "outbound request to {host} was denied: {host} is not on this app's outbound allow-list"
    )]
    Denied {
        /// The authority (`host[:port]`) that was refused.
        host: String,
    },
    /// This incoming request has already made as many subrequests as the
    /// platform allows.
    #[error(
        "outbound request to {host} was refused: this request has used up its subrequest limit"
    )]
    TooManySubrequests {
        /// The authority the refused request was for.
        host: String,
    },
    /// The request cannot be sent as it is (not an absolute http(s) URL, a
    /// bad method); it never left the worker.
    #[error("invalid outbound request: {0}")]
    InvalidRequest(String),
    /// The request was attempted and failed: DNS, connection, TLS, timeout,
    /// protocol error, …
    #[error("outbound request to {host} failed: {code}")]
    Failed {
        /// The authority the request was for.
        host: String,
        /// What the host reported.
        code: ErrorCode,
    },
    /// `fetch` was called in a native build, outside any worker: there is
    /// no platform to send the request through.
    #[error(
        "fetch only works inside an Outpost worker (a wasm32-wasip2 build); \
         in native tests, use fetch_with and a fake Transport"
    )]
    NotInWorker,
}

impl FetchError {
    /// The error for a request to `host` that the transport answered with
    /// `code`.
    ///
    /// Besides `connection-limit-reached`, an `internal-error` whose message
    /// mentions "subrequest" is read as the subrequest cap, so the mapping
    /// holds whichever of the two the platform uses.
    pub fn from_error_code(code: ErrorCode, host: impl Into<String>) -> Self {
        let host = host.into();
        match code {
            ErrorCode::HttpRequestDenied => FetchError::Denied { host },
            ErrorCode::ConnectionLimitReached => FetchError::TooManySubrequests { host },
            ErrorCode::InternalError(Some(ref message))
                if message.to_ascii_lowercase().contains("subrequest") =>
            {
                FetchError::TooManySubrequests { host }
            }
            code => FetchError::Failed { host, code },
        }
    }
}

/// The authority `request` goes to, after checking it can be sent at all.
fn target_host(request: &Request) -> Result<String, FetchError> {
    let method = request.method();
    if method.is_empty() || !method.bytes().all(is_token_char) {
        return Err(FetchError::InvalidRequest(format!(
            "{method:?} is not an HTTP method"
        )));
    }
    let (Some(scheme), Some(authority)) = (request.scheme(), request.authority()) else {
        return Err(FetchError::InvalidRequest(format!(
            "fetch needs an absolute URL such as https://api.example.com/path, got {:?}",
            request.path_with_query()
        )));
    };
    if scheme != "http" && scheme != "https" {
        return Err(FetchError::InvalidRequest(format!(
            "fetch sends http:// and https:// URLs only, not {scheme}://"
        )));
    }
    if authority.is_empty() || authority.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(FetchError::InvalidRequest(format!(
            "{authority:?} is not a host[:port] to send a request to"
        )));
    }
    Ok(authority.to_string())
}

/// `tchar` of RFC 9110: what a method name may be made of.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records what it was asked to send and answers with a fixed result.
    struct FakeTransport {
        answer: Result<Response, ErrorCode>,
        sent: RefCell<Vec<Request>>,
    }

    impl FakeTransport {
        fn answering(answer: Result<Response, ErrorCode>) -> Self {
            Self {
                answer,
                sent: RefCell::new(Vec::new()),
            }
        }
    }

    impl Transport for FakeTransport {
        fn send(&self, request: &Request) -> Result<Response, ErrorCode> {
            self.sent.borrow_mut().push(request.clone());
            self.answer.clone()
        }
    }

    #[test]
    fn a_response_comes_back_whatever_its_status() {
        let fake = FakeTransport::answering(Ok(Response::text("teapot").with_status(418)));
        let res = fetch_with(
            &fake,
            Request::builder()
                .method("post")
                .uri("https://api.example.com/v1/brew?strength=2")
                .header("content-type", "application/json")
                .body("{}"),
        )
        .unwrap();
        assert_eq!(res.status_code(), 418);
        assert_eq!(res.body(), b"teapot");

        let sent = fake.sent.borrow();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].method(), "POST");
        assert_eq!(sent[0].scheme(), Some("https"));
        assert_eq!(sent[0].authority(), Some("api.example.com"));
        assert_eq!(sent[0].path_with_query(), "/v1/brew?strength=2");
        assert_eq!(sent[0].header("Content-Type"), Some("application/json"));
        assert_eq!(sent[0].body(), b"{}");
    }

    #[test]
    fn denied_host_is_its_own_error() {
        let fake = FakeTransport::answering(Err(ErrorCode::HttpRequestDenied));
        let err = fetch_with(&fake, "http://evil.example:8080/x").unwrap_err();
        assert_eq!(
            err,
            FetchError::Denied {
                host: "evil.example:8080".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "outbound request to evil.example:8080 was denied: \
             evil.example:8080 is not on this app's outbound allow-list"
        );
    }

    #[test]
    fn subrequest_cap_is_its_own_error() {
        let fake = FakeTransport::answering(Err(ErrorCode::ConnectionLimitReached));
        let err = fetch_with(&fake, "https://api.example.com/").unwrap_err();
        assert_eq!(
            err,
            FetchError::TooManySubrequests {
                host: "api.example.com".into()
            }
        );
        assert!(err.to_string().contains("subrequest limit"), "{err}");

        let fake = FakeTransport::answering(Err(ErrorCode::InternalError(Some(
            "Subrequest limit (50) reached".into(),
        ))));
        let err = fetch_with(&fake, "https://api.example.com/").unwrap_err();
        assert!(
            matches!(err, FetchError::TooManySubrequests { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn other_error_codes_are_failures_that_name_the_code() {
        let fake = FakeTransport::answering(Err(ErrorCode::Other("DNS-timeout".into())));
        let err = fetch_with(&fake, "https://slow.example/").unwrap_err();
        assert_eq!(
            err.to_string(),
            "outbound request to slow.example failed: DNS-timeout"
        );

        let fake =
            FakeTransport::answering(Err(ErrorCode::InternalError(Some("stream closed".into()))));
        let err = fetch_with(&fake, "https://x.example/").unwrap_err();
        assert_eq!(
            err,
            FetchError::Failed {
                host: "x.example".into(),
                code: ErrorCode::InternalError(Some("stream closed".into())),
            }
        );
        assert!(err.to_string().ends_with("internal-error: stream closed"));
    }

    #[test]
    fn requests_that_cannot_be_sent_never_reach_the_transport() {
        let fake = FakeTransport::answering(Ok(Response::status(200)));
        for (request, expected) in [
            (Request::get("/relative/path"), "needs an absolute URL"),
            (
                Request::get("ftp://files.example/x"),
                "http:// and https:// URLs only",
            ),
            (
                Request::get("https://user@host.example/"),
                "is not a host[:port]",
            ),
            (
                Request::builder()
                    .method("BAD METHOD")
                    .uri("https://ok.example/")
                    .build(),
                "is not an HTTP method",
            ),
        ] {
            let err = fetch_with(&fake, request).unwrap_err();
            assert!(matches!(err, FetchError::InvalidRequest(_)), "{err:?}");
            assert!(err.to_string().contains(expected), "{err}");
        }
        assert!(fake.sent.borrow().is_empty());
    }

    #[test]
    fn transport_by_reference_and_as_trait_object() {
        let fake = FakeTransport::answering(Ok(Response::status(204)));
        let dynamic: &dyn Transport = &fake;
        assert_eq!(
            fetch_with(dynamic, "http://a.example/")
                .unwrap()
                .status_code(),
            204
        );
        assert_eq!(
            fetch_with(&&fake, "http://a.example/")
                .unwrap()
                .status_code(),
            204
        );
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn native_fetch_says_it_needs_a_worker() {
        let err = fetch("https://api.example.com/").unwrap_err();
        assert_eq!(err, FetchError::NotInWorker);
        assert!(
            err.to_string()
                .contains("only works inside an Outpost worker")
        );
        // A bad URL is still reported as such.
        assert!(matches!(
            fetch("/relative").unwrap_err(),
            FetchError::InvalidRequest(_)
        ));
    }
}
