//! `Response`: what a handler returns, and what [`fetch`](crate::fetch)
//! gives back.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::headers::Headers;

/// The `content-type` of [`Response::text`].
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
/// The `content-type` of [`Response::json`].
pub const APPLICATION_JSON: &str = "application/json";

/// An HTTP response with its whole body in memory.
///
/// ```
/// use outpost_sdk::Response;
///
/// let res = Response::text("created\n")
///     .with_status(201)
///     .with_header("Location", "/items/7");
/// assert_eq!(res.status_code(), 201);
/// assert_eq!(res.header("location"), Some("/items/7"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a response does nothing unless it is returned"]
pub struct Response {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

impl Default for Response {
    /// `200` with no headers and an empty body.
    fn default() -> Self {
        Response::status(200)
    }
}

impl Response {
    /// A response with this status, no headers and an empty body.
    pub fn status(code: u16) -> Self {
        Self {
            status: code,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// `200`, `content-type: text/plain; charset=utf-8`, body `text`.
    pub fn text(text: impl Into<String>) -> Self {
        Response::status(200)
            .with_header("content-type", TEXT_PLAIN)
            .with_body(text.into())
    }

    /// `200`, `content-type: application/json`, body `value` serialized.
    ///
    /// If `value` cannot be serialized (a map with non-string keys, a
    /// failing `Serialize` impl), the answer is a `500` saying so: that is a
    /// bug in the worker, and the client should see a server error.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::status(200)
                .with_header("content-type", APPLICATION_JSON)
                .with_body(body),
            Err(e) => Response::text(format!("could not serialize the response as JSON: {e}\n"))
                .with_status(500),
        }
    }

    /// `404 Not Found` with a short text body.
    pub fn not_found() -> Self {
        Response::text("not found\n").with_status(404)
    }

    /// `400 Bad Request` with `message` as the text body.
    pub fn bad_request(message: impl Into<String>) -> Self {
        let mut message = message.into();
        if !message.ends_with('\n') {
            message.push('\n');
        }
        Response::text(message).with_status(400)
    }

    /// `405 Method Not Allowed` with a short text body. The
    /// [`Router`](crate::Router) adds the `Allow` header; a hand-written
    /// handler should add it too (`.with_header("allow", "GET, POST")`).
    pub fn method_not_allowed() -> Self {
        Response::text("method not allowed\n").with_status(405)
    }

    /// The same response with another status.
    pub fn with_status(mut self, code: u16) -> Self {
        self.status = code;
        self
    }

    /// The same response with header `name` set to `value`, replacing any
    /// earlier value (use [`Response::headers_mut`] and
    /// [`Headers::append`] for repeated fields such as `set-cookie`).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The same response with another body (headers unchanged).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The status code.
    pub fn status_code(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// All headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, to change in place.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text (e.g. of a [`fetch`](crate::fetch)ed response).
    pub fn text_body(&self) -> Result<&str> {
        Ok(std::str::from_utf8(&self.body)?)
    }

    /// The body parsed as JSON into `T`.
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// A response from its parts (the inverse of [`Response::into_parts`]).
    pub fn from_parts(status: u16, headers: Headers, body: Vec<u8>) -> Self {
        Self {
            status,
            headers,
            body,
        }
    }

    /// Status, headers and body, taken apart (the glue uses this to hand the
    /// response to the host without copying the body).
    pub fn into_parts(self) -> (u16, Headers, Vec<u8>) {
        (self.status, self.headers, self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn text_sets_status_type_and_body() {
        let res = Response::text("hi\n");
        assert_eq!(res.status_code(), 200);
        assert_eq!(res.header("Content-Type"), Some(TEXT_PLAIN));
        assert_eq!(res.body(), b"hi\n");
        assert_eq!(res.text_body().unwrap(), "hi\n");
    }

    #[test]
    fn json_sets_content_type_and_serializes() {
        #[derive(serde::Serialize)]
        struct User<'a> {
            id: u32,
            name: &'a str,
        }
        let res = Response::json(&User { id: 7, name: "Ada" });
        assert_eq!(res.status_code(), 200);
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert_eq!(res.body(), br#"{"id":7,"name":"Ada"}"#);
        let back: serde_json::Value = res.json_body().unwrap();
        assert_eq!(back["name"], "Ada");

        let res = Response::json(&serde_json::json!({"ok": true})).with_status(201);
        assert_eq!(res.status_code(), 201);
        assert_eq!(res.body(), br#"{"ok":true}"#);
    }

    #[test]
    fn json_that_cannot_serialize_is_a_500() {
        let mut map = BTreeMap::new();
        map.insert(vec![1u8], "tuple keys are not JSON object keys");
        let res = Response::json(&map);
        assert_eq!(res.status_code(), 500);
        assert!(
            res.text_body()
                .unwrap()
                .starts_with("could not serialize the response as JSON")
        );
    }

    #[test]
    fn canned_responses() {
        assert_eq!(Response::status(204).status_code(), 204);
        assert!(Response::status(204).body().is_empty());
        assert!(Response::status(204).headers().is_empty());
        assert_eq!(Response::default().status_code(), 200);

        let res = Response::not_found();
        assert_eq!(res.status_code(), 404);
        assert_eq!(res.body(), b"not found\n");

        let res = Response::bad_request("missing field `name`");
        assert_eq!(res.status_code(), 400);
        assert_eq!(res.body(), b"missing field `name`\n");
        assert_eq!(res.header("content-type"), Some(TEXT_PLAIN));

        assert_eq!(Response::method_not_allowed().status_code(), 405);
    }

    #[test]
    fn with_header_replaces_case_insensitively() {
        let res = Response::text("x")
            .with_header("Content-Type", "text/html")
            .with_header("X-A", "1");
        assert_eq!(res.header("content-type"), Some("text/html"));
        assert_eq!(res.headers().get_all("content-type").count(), 1);

        let mut res = res;
        res.headers_mut().append("set-cookie", "a=1");
        res.headers_mut().append("Set-Cookie", "b=2");
        assert_eq!(res.headers().get_all("set-cookie").count(), 2);

        let (status, headers, body) = res.clone().into_parts();
        assert_eq!(status, 200);
        assert_eq!(headers.get("x-a"), Some("1"));
        assert_eq!(body, b"x");
        assert_eq!(Response::from_parts(status, headers, body), res);
    }
}
