//! `Request`: an HTTP request as a worker sees it (incoming) or sends it
//! (outbound, through [`fetch`](crate::fetch)).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::headers::Headers;
use crate::uri;

/// An HTTP request with its whole body in memory.
///
/// Incoming requests are built by the SDK's `wasi:http` glue; tests and
/// outbound calls build them with [`Request::builder`]. The path is kept as
/// it arrived (percent-encoded); [`Request::query`] and [`Request::param`]
/// return decoded values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    scheme: Option<String>,
    authority: Option<String>,
    path: String,
    query: Option<String>,
    headers: Headers,
    body: Vec<u8>,
    params: BTreeMap<String, String>,
}

impl Request {
    /// A builder for a `GET /` request, to be filled in.
    pub fn builder() -> RequestBuilder {
        RequestBuilder::default()
    }

    /// A `GET` request for `uri` (a path, or an absolute URL for
    /// [`fetch`](crate::fetch)).
    pub fn get(uri: &str) -> Request {
        Request::builder().uri(uri).build()
    }

    /// A `POST` request for `uri` carrying `body`.
    pub fn post(uri: &str, body: impl Into<Vec<u8>>) -> Request {
        Request::builder()
            .method("POST")
            .uri(uri)
            .body(body)
            .build()
    }

    /// The method, upper-case (`GET`, `POST`, …).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path, without the query string, as sent (percent-encoded).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string (after `?`, still encoded), if there was a `?`.
    pub fn query_string(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The path followed by `?query` when there is one, as on the request line.
    pub fn path_with_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// The first value of query parameter `name`, percent-decoded (`+` is a
    /// space). `?flag` gives `Some("")`.
    pub fn query(&self, name: &str) -> Option<String> {
        self.query_all(name).into_iter().next()
    }

    /// Every value of query parameter `name`, decoded, in order.
    pub fn query_all(&self, name: &str) -> Vec<String> {
        let Some(query) = &self.query else {
            return Vec::new();
        };
        uri::query_pairs(query)
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect()
    }

    /// The scheme (`http`/`https`) when known: always for outbound requests,
    /// and for incoming ones when the host reports it.
    pub fn scheme(&self) -> Option<&str> {
        self.scheme.as_deref()
    }

    /// The authority (`host[:port]`) when known.
    pub fn authority(&self) -> Option<&str> {
        self.authority.as_deref()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// All headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, to change before sending the request on.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str> {
        Ok(std::str::from_utf8(&self.body)?)
    }

    /// The body parsed as JSON into `T` (any `serde` type, including
    /// `serde_json::Value`). The `content-type` is not checked.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The path parameter `name` captured by the [`Router`](crate::Router)
    /// (`/users/:id` → `param("id")`), percent-decoded.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// Every path parameter captured by the router.
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }

    pub(crate) fn set_params(&mut self, params: BTreeMap<String, String>) {
        self.params = params;
    }
}

impl From<&str> for Request {
    /// A `GET` for this URL, so that `fetch("https://…")` works.
    fn from(uri: &str) -> Self {
        Request::get(uri)
    }
}

impl From<String> for Request {
    fn from(uri: String) -> Self {
        Request::get(&uri)
    }
}

impl From<RequestBuilder> for Request {
    fn from(builder: RequestBuilder) -> Self {
        builder.build()
    }
}

/// Builds a [`Request`]: for tests of a handler, and for outbound calls.
///
/// ```
/// use outpost_sdk::Request;
///
/// let req = Request::builder()
///     .method("post")
///     .uri("/echo?lang=en")
///     .header("Content-Type", "application/json")
///     .body(r#"{"hi":1}"#)
///     .build();
/// assert_eq!(req.method(), "POST");
/// assert_eq!(req.query("lang").as_deref(), Some("en"));
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .build()"]
pub struct RequestBuilder {
    request: Request,
}

impl Default for RequestBuilder {
    fn default() -> Self {
        Self {
            request: Request {
                method: "GET".to_string(),
                scheme: None,
                authority: None,
                path: "/".to_string(),
                query: None,
                headers: Headers::new(),
                body: Vec::new(),
                params: BTreeMap::new(),
            },
        }
    }
}

impl RequestBuilder {
    /// The method; upper-cased (`"post"` becomes `POST`).
    pub fn method(mut self, method: &str) -> Self {
        self.request.method = method.to_ascii_uppercase();
        self
    }

    /// The target: a path with an optional query (`/search?q=x`), or an
    /// absolute URL (`https://api.example.com/v1?q=x`), which also sets the
    /// scheme and authority.
    pub fn uri(mut self, uri: &str) -> Self {
        let target = uri::split(uri);
        self.request.scheme = target.scheme;
        self.request.authority = target.authority;
        self.request.path = target.path;
        self.request.query = target.query;
        self
    }

    /// Adds a header (a repeated name keeps every value).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.headers.append(name, value);
        self
    }

    /// Replaces all headers.
    pub fn headers(mut self, headers: Headers) -> Self {
        self.request.headers = headers;
        self
    }

    /// The body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.request.body = body.into();
        self
    }

    /// Sets the scheme and authority separately (the glue uses this for
    /// incoming requests, whose target is origin-form).
    pub fn origin(mut self, scheme: Option<&str>, authority: Option<&str>) -> Self {
        self.request.scheme = scheme.map(str::to_ascii_lowercase);
        self.request.authority = authority.map(str::to_string);
        self
    }

    /// The request.
    pub fn build(self) -> Request {
        self.request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_defaults_and_parts() {
        let req = Request::builder().build();
        assert_eq!(req.method(), "GET");
        assert_eq!(req.path(), "/");
        assert_eq!(req.query_string(), None);
        assert!(req.body().is_empty());

        let req = Request::builder()
            .method("delete")
            .uri("/items/9?force=1")
            .header("X-Trace", "abc")
            .build();
        assert_eq!(req.method(), "DELETE");
        assert_eq!(req.path(), "/items/9");
        assert_eq!(req.query_string(), Some("force=1"));
        assert_eq!(req.path_with_query(), "/items/9?force=1");
        assert_eq!(req.header("x-trace"), Some("abc"));
        assert_eq!(req.scheme(), None);
    }

    #[test]
    fn query_values_are_decoded() {
        let req = Request::get("/search?q=hello+world&tag=a%26b&tag=c&empty=&flag");
        assert_eq!(req.query("q").as_deref(), Some("hello world"));
        assert_eq!(req.query("tag").as_deref(), Some("a&b"));
        assert_eq!(req.query_all("tag"), ["a&b", "c"]);
        assert_eq!(req.query("empty").as_deref(), Some(""));
        assert_eq!(req.query("flag").as_deref(), Some(""));
        assert_eq!(req.query("missing"), None);
        assert_eq!(Request::get("/").query("q"), None);
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let req = Request::builder()
            .header("Content-Type", "application/json")
            .build();
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.header("CONTENT-TYPE"), Some("application/json"));
    }

    #[test]
    fn text_and_json_bodies() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Greeting {
            name: String,
            times: u32,
        }

        let req = Request::post("/", r#"{"name":"Ada","times":2}"#);
        assert_eq!(req.text().unwrap(), r#"{"name":"Ada","times":2}"#);
        assert_eq!(
            req.json::<Greeting>().unwrap(),
            Greeting {
                name: "Ada".into(),
                times: 2
            }
        );
        let value: serde_json::Value = req.json().unwrap();
        assert_eq!(value["times"], 2);

        let bad = Request::post("/", "not json");
        let err = bad.json::<serde_json::Value>().unwrap_err();
        assert!(err.to_string().starts_with("body is not the expected JSON"));

        let wrong_shape = Request::post("/", r#"{"name":"Ada"}"#);
        assert!(wrong_shape.json::<Greeting>().is_err());

        let binary = Request::post("/", vec![0xff, 0xfe]);
        assert!(binary.text().is_err());
    }

    #[test]
    fn absolute_urls_set_scheme_and_authority() {
        let req: Request = "https://api.example.com/v1/items?page=2".into();
        assert_eq!(req.method(), "GET");
        assert_eq!(req.scheme(), Some("https"));
        assert_eq!(req.authority(), Some("api.example.com"));
        assert_eq!(req.path_with_query(), "/v1/items?page=2");
    }
}
