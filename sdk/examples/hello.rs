//! The hello worker, in Rust: the same contract the other languages'
//! examples implement.
//!
//! - `GET /`      → `200 text/plain`, `Hello from Rust!\n`
//! - `GET /env`   → `200 application/json`, `{"GREETING":<env GREETING or null>}`
//! - `POST /echo` → `200 application/json`,
//!   `{"method":"POST","path":"/echo","body":<the body parsed as JSON>}`,
//!   or `400` if the body is not JSON
//! - anything else (wrong method included) → `404`, `not found\n`
//!
//! Text answers carry `text/plain; charset=utf-8` (the SDK's
//! `Response::text`), the same media type as the bare `text/plain` of the
//! C, JavaScript and Python examples in `examples/`. One difference from
//! them: the router ignores a trailing slash, so `/echo/` is `/echo`.
//!
//! Built for `wasm32-wasip2` (as a `cdylib`, see `sdk/README.md`),
//! `export_handler!` makes `Hello` the component's `wasi:http` handler.
//! Natively, `cargo run --example hello -p outpost-sdk` sends it a few
//! requests and prints the answers (`GREETING=hi cargo run …` to see
//! `/env` pick it up).

use outpost_sdk::env::{Env, ProcessEnv};
use outpost_sdk::{Handler, Request, Response, Router};
use serde::Serialize;
use serde_json::{Value, json};

/// The worker.
pub struct Hello;

impl Handler for Hello {
    fn handle(req: Request) -> Response {
        app(ProcessEnv).handle(req)
    }
}

outpost_sdk::export_handler!(Hello);

/// The routes, reading variables from `env` (the app's environment in the
/// worker, a fixed map in tests).
fn app(env: impl Env + 'static) -> Router {
    Router::new()
        .get("/", |_req| Response::text("Hello from Rust!\n"))
        .get("/env", move |_req| {
            Response::json(&json!({ "GREETING": env.var("GREETING") }))
        })
        .post("/echo", echo)
        // The contract answers 404 to anything it does not serve, including
        // a known path with another method (the router's default is 405).
        .method_not_allowed(|_req| Response::not_found())
}

/// The echo answer; a struct rather than `json!` so the keys keep this
/// order (`serde_json` maps sort theirs).
#[derive(Serialize)]
struct Echo<'a> {
    method: &'a str,
    path: &'a str,
    body: Value,
}

fn echo(req: &Request) -> Response {
    match req.json::<Value>() {
        Ok(body) => Response::json(&Echo {
            method: req.method(),
            path: req.path(),
            body,
        }),
        // "body is not the expected JSON: expected value at line 1 column 1"
        Err(e) => Response::bad_request(e.to_string()),
    }
}

fn main() {
    let requests = [
        Request::get("/"),
        Request::get("/env"),
        Request::builder()
            .method("POST")
            .uri("/echo")
            .header("content-type", "application/json")
            .body(r#"{"hello": "world", "n": [1, 2, 3]}"#)
            .build(),
        Request::post("/echo", "this is not JSON"),
        Request::get("/echo"),
        Request::get("/missing"),
    ];
    for req in requests {
        println!("> {} {}", req.method(), req.path_with_query());
        let res = Hello::handle(req);
        println!("< {}", res.status_code());
        for (name, value) in res.headers().iter() {
            println!("< {name}: {value}");
        }
        println!("{}", String::from_utf8_lossy(res.body()).trim_end());
        println!();
    }
}

#[cfg(test)]
mod tests {
    use outpost_sdk::env::MapEnv;

    use super::*;

    fn call(env: MapEnv, req: Request) -> Response {
        app(env).handle(req)
    }

    #[test]
    fn root_says_hello_in_plain_text() {
        let res = call(MapEnv::new(), Request::get("/"));
        assert_eq!(res.status_code(), 200);
        assert_eq!(
            res.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(res.body(), b"Hello from Rust!\n");
    }

    #[test]
    fn env_reports_greeting_or_null() {
        let res = call(
            MapEnv::from([("GREETING", "hi there")]),
            Request::get("/env"),
        );
        assert_eq!(res.status_code(), 200);
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert_eq!(res.body(), br#"{"GREETING":"hi there"}"#);

        let res = call(MapEnv::new(), Request::get("/env"));
        assert_eq!(res.status_code(), 200);
        assert_eq!(res.body(), br#"{"GREETING":null}"#);
    }

    #[test]
    fn echo_returns_method_path_and_parsed_body() {
        let res = call(
            MapEnv::new(),
            Request::post("/echo", r#"{ "b": [1, 2], "a": "x" }"#),
        );
        assert_eq!(res.status_code(), 200);
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert_eq!(
            res.body(),
            br#"{"method":"POST","path":"/echo","body":{"a":"x","b":[1,2]}}"#
        );

        let res = call(MapEnv::new(), Request::post("/echo", "42"));
        assert_eq!(res.body(), br#"{"method":"POST","path":"/echo","body":42}"#);
    }

    #[test]
    fn echo_rejects_a_body_that_is_not_json() {
        for body in ["not json", "", "{"] {
            let res = call(MapEnv::new(), Request::post("/echo", body));
            assert_eq!(res.status_code(), 400, "{body:?}");
            assert!(
                res.header("content-type")
                    .unwrap()
                    .starts_with("text/plain"),
                "{body:?}"
            );
        }
    }

    #[test]
    fn everything_else_is_404() {
        for req in [
            Request::get("/missing"),
            Request::get("/echo"),
            Request::post("/", "{}"),
            Request::post("/env", "{}"),
            Request::builder().method("DELETE").uri("/").build(),
            Request::get("/env/extra"),
        ] {
            let line = format!("{} {}", req.method(), req.path());
            let res = call(MapEnv::new(), req);
            assert_eq!(res.status_code(), 404, "{line}");
            assert_eq!(res.body(), b"not found\n", "{line}");
        }
    }

    #[test]
    fn the_exported_handler_uses_the_same_routes() {
        assert_eq!(
            Hello::handle(Request::get("/")).body(),
            b"Hello from Rust!\n"
        );
        assert_eq!(Hello::handle(Request::get("/nope")).status_code(), 404);
    }
}
