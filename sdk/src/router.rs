//! `Router`: picks a handler by method and path, with `:name` parameters.

use std::collections::BTreeMap;
use std::fmt;

use crate::request::Request;
use crate::response::Response;
use crate::uri::percent_decode;

type BoxedHandler = Box<dyn Fn(&Request) -> Response>;

/// Dispatches a request to the first route whose method and path match.
///
/// - Patterns are paths whose segments are literals, `:name` (one segment,
///   read back with [`Request::param`]) or, last only, `*name` (the rest of
///   the path, at least one segment).
/// - A trailing slash is ignored on both sides: `/users/` matches `/users`.
///   A `:name` segment never matches an empty segment (`/users//`).
/// - Segments are percent-decoded before they are compared or captured.
/// - If the path matches some route but not with this method, the answer is
///   `405` with an `Allow` header; if it matches none, `404` (or the
///   [`fallback`](Router::fallback)).
/// - `HEAD` is served by the `GET` route when there is no `HEAD` route, with
///   the body dropped.
///
/// Routes are tried in the order they were added.
///
/// ```
/// use outpost_sdk::{Request, Response, Router};
///
/// fn show_user(req: &Request) -> Response {
///     Response::text(format!("user {}\n", req.param("id").unwrap_or("?")))
/// }
///
/// let router = Router::new()
///     .get("/", |_req| Response::text("home\n"))
///     .get("/users/:id", show_user);
///
/// let res = router.handle(Request::get("/users/42/"));
/// assert_eq!(res.body(), b"user 42\n");
/// assert_eq!(router.handle(Request::post("/", "")).status_code(), 405);
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    fallback: Option<BoxedHandler>,
    method_not_allowed: Option<BoxedHandler>,
}

struct Route {
    method: String,
    pattern: Pattern,
    handler: BoxedHandler,
}

impl Router {
    /// No routes: every request is a `404`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route for `method` (any case) and `path`.
    ///
    /// # Panics
    ///
    /// If `path` is not a valid pattern: a `:` or `*` segment without a name,
    /// a `*` segment that is not the last, or a parameter name used twice.
    /// Routes are built when the worker starts, so this fails on the first
    /// request of a test, not in production.
    pub fn route<H>(mut self, method: &str, path: &str, handler: H) -> Self
    where
        H: Fn(&Request) -> Response + 'static,
    {
        let pattern = Pattern::parse(path).unwrap_or_else(|e| panic!("{e}"));
        self.routes.push(Route {
            method: method.to_ascii_uppercase(),
            pattern,
            handler: Box::new(handler),
        });
        self
    }

    /// Adds a `GET` route (which also answers `HEAD`).
    pub fn get<H>(self, path: &str, handler: H) -> Self
    where
        H: Fn(&Request) -> Response + 'static,
    {
        self.route("GET", path, handler)
    }

    /// Adds a `POST` route.
    pub fn post<H>(self, path: &str, handler: H) -> Self
    where
        H: Fn(&Request) -> Response + 'static,
    {
        self.route("POST", path, handler)
    }

    /// Adds a `PUT` route.
    pub fn put<H>(self, path: &str, handler: H) -> Self
    where
        H: Fn(&Request) -> Response + 'static,
    {
        self.route("PUT", path, handler)
    }

    /// Adds a `PATCH` route.
    pub fn patch<H>(self, path: &str, handler: H) -> Self
    where
        H: Fn(&Request) -> Response + 'static,
    {
        self.route("PATCH", path, handler)
    }

    /// Adds a `DELETE` route.
    pub fn delete<H>(self, path: &str, handler: H) -> Self
    where
        H: Fn(&Request) -> Response + 'static,
    {
        self.route("DELETE", path, handler)
    }

    /// Answers requests whose path matches no route (instead of the default
    /// `404 not found`). Not used for `405`s.
    pub fn fallback<H>(mut self, handler: H) -> Self
    where
        H: Fn(&Request) -> Response + 'static,
    {
        self.fallback = Some(Box::new(handler));
        self
    }

    /// Answers requests whose path matches a route but not with their method
    /// (instead of the default `405` with an `Allow` header).
    pub fn method_not_allowed<H>(mut self, handler: H) -> Self
    where
        H: Fn(&Request) -> Response + 'static,
    {
        self.method_not_allowed = Some(Box::new(handler));
        self
    }

    /// Answers `req`: the matching route's handler, a `405`, or a `404`.
    pub fn handle(&self, mut req: Request) -> Response {
        let segments = path_segments(req.path());

        let mut allowed: Vec<&str> = Vec::new();
        let mut get_route = None;
        for route in &self.routes {
            let Some(params) = route.pattern.matches(&segments) else {
                continue;
            };
            if route.method == req.method() {
                req.set_params(params);
                return (route.handler)(&req);
            }
            if route.method == "GET" && req.method() == "HEAD" && get_route.is_none() {
                get_route = Some((route, params));
            }
            allowed.push(&route.method);
        }

        if let Some((route, params)) = get_route {
            req.set_params(params);
            return (route.handler)(&req).with_body(Vec::new());
        }

        if allowed.is_empty() {
            return match &self.fallback {
                Some(fallback) => fallback(&req),
                None => Response::not_found(),
            };
        }
        if let Some(handler) = &self.method_not_allowed {
            return handler(&req);
        }
        if allowed.contains(&"GET") {
            allowed.push("HEAD");
        }
        allowed.sort_unstable();
        allowed.dedup();
        Response::method_not_allowed().with_header("allow", allowed.join(", "))
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.pattern.source))
                    .collect::<Vec<_>>(),
            )
            .field("fallback", &self.fallback.is_some())
            .field("method_not_allowed", &self.method_not_allowed.is_some())
            .finish()
    }
}

/// The raw segments of `path`: no leading slash, and a trailing slash
/// ignored, so `/` has none and `/a/b/` has `a`, `b`.
fn path_segments(path: &str) -> Vec<&str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    }
}

#[derive(Debug)]
struct Pattern {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, PartialEq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

impl Pattern {
    fn parse(source: &str) -> Result<Self, String> {
        let raw = path_segments(source);
        let mut segments = Vec::with_capacity(raw.len());
        for (i, seg) in raw.iter().enumerate() {
            let segment = if let Some(name) = seg.strip_prefix(':') {
                Segment::Param(name.to_string())
            } else if let Some(name) = seg.strip_prefix('*') {
                if i + 1 != raw.len() {
                    return Err(format!(
                        "route {source:?}: `*{name}` must be the last segment"
                    ));
                }
                Segment::Rest(name.to_string())
            } else {
                Segment::Literal(percent_decode(seg, false))
            };
            if let Segment::Param(name) | Segment::Rest(name) = &segment {
                if name.is_empty() {
                    return Err(format!("route {source:?}: a parameter needs a name"));
                }
                let taken = segments
                    .iter()
                    .any(|s| matches!(s, Segment::Param(n) | Segment::Rest(n) if n == name));
                if taken {
                    return Err(format!(
                        "route {source:?}: parameter `{name}` is used twice"
                    ));
                }
            }
            segments.push(segment);
        }
        Ok(Self {
            source: source.to_string(),
            segments,
        })
    }

    /// The captured parameters if `path` (raw segments) matches.
    fn matches(&self, path: &[&str]) -> Option<BTreeMap<String, String>> {
        let mut params = BTreeMap::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(literal) => {
                    let raw = path.get(i)?;
                    if percent_decode(raw, false) != *literal {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let raw = path.get(i).filter(|raw| !raw.is_empty())?;
                    params.insert(name.clone(), percent_decode(raw, false));
                }
                Segment::Rest(name) => {
                    let rest = path.get(i..).filter(|rest| !rest.is_empty())?;
                    let decoded: Vec<String> =
                        rest.iter().map(|s| percent_decode(s, false)).collect();
                    params.insert(name.clone(), decoded.join("/"));
                    return Some(params);
                }
            }
        }
        (path.len() == self.segments.len()).then_some(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_params(req: &Request) -> Response {
        let params: Vec<String> = req
            .params()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        Response::text(format!("{} {}", req.method(), params.join(",")))
    }

    fn body(res: &Response) -> &str {
        res.text_body().unwrap()
    }

    fn app() -> Router {
        Router::new()
            .get("/", |_req| Response::text("root"))
            .post("/echo", |req| Response::text(req.text().unwrap_or("")))
            .get("/users/:id", echo_params)
            .delete("/users/:id", echo_params)
            .get("/users/:id/posts/:post", echo_params)
            .get("/files/*path", echo_params)
            .get("/users/me", |_req| {
                Response::text("unreachable: added after :id")
            })
    }

    #[test]
    fn matches_literal_routes_by_method() {
        let app = app();
        let res = app.handle(Request::get("/"));
        assert_eq!(res.status_code(), 200);
        assert_eq!(body(&res), "root");

        let res = app.handle(Request::post("/echo", "ping"));
        assert_eq!(res.status_code(), 200);
        assert_eq!(body(&res), "ping");
    }

    #[test]
    fn captures_path_params() {
        let app = app();
        assert_eq!(body(&app.handle(Request::get("/users/42"))), "GET id=42");
        assert_eq!(
            body(&app.handle(Request::get("/users/7/posts/hello"))),
            "GET id=7,post=hello"
        );
        let del = Request::builder().method("DELETE").uri("/users/9").build();
        assert_eq!(body(&app.handle(del)), "DELETE id=9");

        // Parameters are percent-decoded, and the query is not part of them.
        assert_eq!(
            body(&app.handle(Request::get("/users/ada%20lovelace?x=1"))),
            "GET id=ada lovelace"
        );
        // Routes are tried in order: `:id` was added before `me`.
        assert_eq!(body(&app.handle(Request::get("/users/me"))), "GET id=me");
    }

    #[test]
    fn param_accessor() {
        let router = Router::new().get("/users/:id", |req| {
            Response::text(req.param("id").unwrap_or("none").to_string())
        });
        let res = router.handle(Request::get("/users/abc"));
        assert_eq!(body(&res), "abc");
    }

    #[test]
    fn rest_segment_captures_the_remainder() {
        let app = app();
        assert_eq!(
            body(&app.handle(Request::get("/files/a/b%2Fc/d.txt"))),
            "GET path=a/b/c/d.txt"
        );
        // `*name` needs at least one segment.
        assert_eq!(app.handle(Request::get("/files")).status_code(), 404);
        assert_eq!(app.handle(Request::get("/files/")).status_code(), 404);
    }

    #[test]
    fn tolerates_trailing_slashes() {
        let app = app();
        assert_eq!(body(&app.handle(Request::get("/users/42/"))), "GET id=42");
        assert_eq!(app.handle(Request::post("/echo/", "x")).status_code(), 200);
        let router = Router::new().get("/about/", |_req| Response::text("about"));
        assert_eq!(body(&router.handle(Request::get("/about"))), "about");
        assert_eq!(body(&router.handle(Request::get("/about/"))), "about");
    }

    #[test]
    fn unknown_path_is_404() {
        let app = app();
        // An empty segment is no value for a parameter.
        for path in ["/nope", "/users", "/users/1/2", "/echo/extra", "/users//"] {
            let res = app.handle(Request::get(path));
            assert_eq!(res.status_code(), 404, "{path}");
            assert_eq!(res.header("allow"), None, "{path}");
        }
    }

    #[test]
    fn known_path_wrong_method_is_405_with_allow() {
        let app = app();
        let res = app.handle(Request::get("/echo"));
        assert_eq!(res.status_code(), 405);
        assert_eq!(res.header("allow"), Some("POST"));

        let put = Request::builder().method("PUT").uri("/users/1").build();
        let res = app.handle(put);
        assert_eq!(res.status_code(), 405);
        assert_eq!(res.header("Allow"), Some("DELETE, GET, HEAD"));

        let res = app.handle(Request::post("/", ""));
        assert_eq!(res.status_code(), 405);
        assert_eq!(res.header("allow"), Some("GET, HEAD"));
    }

    #[test]
    fn head_uses_the_get_route_without_a_body() {
        let app = app();
        let head = Request::builder().method("HEAD").uri("/users/5").build();
        let res = app.handle(head);
        assert_eq!(res.status_code(), 200);
        assert!(res.body().is_empty());
        assert_eq!(
            res.header("content-type"),
            Some(crate::response::TEXT_PLAIN)
        );
    }

    #[test]
    fn methods_are_case_insensitive_when_registered() {
        let router = Router::new().route("options", "/x", |_req| Response::status(204));
        let req = Request::builder().method("OPTIONS").uri("/x").build();
        assert_eq!(router.handle(req).status_code(), 204);
    }

    #[test]
    fn fallback_replaces_404_but_not_405() {
        let router = Router::new()
            .post("/submit", |_req| Response::status(202))
            .fallback(|req| Response::text(format!("no {}", req.path())).with_status(404));
        let res = router.handle(Request::get("/missing"));
        assert_eq!(res.status_code(), 404);
        assert_eq!(body(&res), "no /missing");
        assert_eq!(router.handle(Request::get("/submit")).status_code(), 405);
    }

    #[test]
    fn method_not_allowed_handler_replaces_405() {
        let router = Router::new()
            .get("/", |_req| Response::text("home"))
            .method_not_allowed(|_req| Response::not_found());
        let res = router.handle(Request::post("/", ""));
        assert_eq!(res.status_code(), 404);
        assert_eq!(res.header("allow"), None);
        assert_eq!(router.handle(Request::get("/")).status_code(), 200);
    }

    #[test]
    fn closures_can_capture_state() {
        let greeting = String::from("hello");
        let router = Router::new().get("/", move |_req| Response::text(greeting.clone()));
        assert_eq!(body(&router.handle(Request::get("/"))), "hello");
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert!(Pattern::parse("/users/:").is_err());
        assert!(Pattern::parse("/files/*").is_err());
        assert!(Pattern::parse("/files/*rest/more").is_err());
        assert!(Pattern::parse("/a/:id/b/:id").is_err());
        assert_eq!(
            Pattern::parse("/a/:id/").unwrap().segments,
            [Segment::Literal("a".into()), Segment::Param("id".into())]
        );
    }

    #[test]
    #[should_panic(expected = "a parameter needs a name")]
    fn route_panics_on_a_bad_pattern() {
        let _ = Router::new().get("/users/:", |_req| Response::status(200));
    }

    #[test]
    fn debug_lists_routes() {
        let router = Router::new().get("/a", |_req| Response::status(200));
        assert!(format!("{router:?}").contains("GET /a"));
    }
}
