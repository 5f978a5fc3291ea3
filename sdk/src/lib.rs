//! Outpost guest SDK for Rust workers.
//!
//! A worker is a WebAssembly component exporting `wasi:http/incoming-handler`
//! (the `wasi:http/proxy` world), built with
//! `cargo build --target wasm32-wasip2`. This crate is a thin, synchronous
//! layer over that interface:
//!
//! - [`Request`] / [`Response`] with the helpers a handler needs (query and
//!   path parameters, headers, text and JSON bodies);
//! - a small [`Router`] (methods, `:param` segments, `404`/`405`);
//! - [`env::var`] for the app's environment variables;
//! - [`fetch`] for outbound HTTP, with the platform's refusals (host not on
//!   the allow-list, subrequest cap) as distinct [`FetchError`]s;
//! - the [`Handler`] trait and [`export_handler!`], which generate the
//!   `wasi:http` export.
//!
//! ```
//! use outpost_sdk::{Handler, Request, Response, Router};
//!
//! struct Worker;
//!
//! impl Handler for Worker {
//!     fn handle(req: Request) -> Response {
//!         Router::new()
//!             .get("/", |_req| Response::text("Hello!\n"))
//!             .get("/users/:id", |req| {
//!                 Response::json(&serde_json::json!({ "id": req.param("id") }))
//!             })
//!             .handle(req)
//!     }
//! }
//!
//! outpost_sdk::export_handler!(Worker);
//!
//! // The same handler runs natively, which is how it is tested:
//! let res = Worker::handle(Request::get("/users/7"));
//! assert_eq!(res.body(), br#"{"id":"7"}"#);
//! ```
//!
//! What it deliberately is not: an async runtime or a streaming API. Bodies
//! are read whole into memory (the platform caps them: 10 MiB in, 100 MiB
//! out), and `fetch` blocks, which is what a fresh instance per request
//! makes cheap and simple.
//!
//! Only the `wasi:http` glue (`export_handler!`'s expansion and the
//! transport behind `fetch`) depends on `wasm32`; everything else is plain
//! Rust and is unit-tested natively.

mod error;
mod fetch;
mod headers;
mod request;
mod response;
mod router;
mod uri;
#[cfg(target_arch = "wasm32")]
mod wasi_glue;

pub mod env;

pub use error::{Error, Result};
pub use fetch::{ErrorCode, FetchError, Transport, fetch, fetch_with};
pub use headers::Headers;
pub use request::{Request, RequestBuilder};
pub use response::{APPLICATION_JSON, Response, TEXT_PLAIN};
pub use router::Router;

/// A worker: answers each incoming request.
///
/// Every request runs in a fresh instance, so there is no `self` and no
/// state carried from one request to the next. Register the type with
/// [`export_handler!`].
pub trait Handler {
    /// The response to `req`.
    fn handle(req: Request) -> Response;
}

/// Exports a [`Handler`] as the worker's `wasi:http/incoming-handler`.
///
/// Use it once, at the crate root of the worker (a `cdylib`):
///
/// ```
/// # use outpost_sdk::{Handler, Request, Response};
/// struct Worker;
/// impl Handler for Worker {
///     fn handle(_req: Request) -> Response {
///         Response::text("hi\n")
///     }
/// }
/// outpost_sdk::export_handler!(Worker);
/// ```
///
/// On `wasm32` it expands to the `wasi:http` export, which reads the
/// incoming request into a [`Request`], calls `Worker::handle`, and writes
/// the [`Response`] back. On any other target it only checks that the type
/// implements `Handler`, so the same crate builds and tests natively.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __OutpostSdkGuest;

            impl $crate::__private::wasi::exports::http::incoming_handler::Guest for __OutpostSdkGuest {
                fn handle(
                    request: $crate::__private::wasi::http::types::IncomingRequest,
                    response_out: $crate::__private::wasi::http::types::ResponseOutparam,
                ) {
                    $crate::__private::serve::<$handler>(request, response_out)
                }
            }

            // `with_types_in` points the generated export at the SDK's copy
            // of the bindings, so the worker need not depend on `wasi`.
            $crate::__private::wasi::http::proxy::export!(
                __OutpostSdkGuest with_types_in $crate::__private::wasi
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: fn($crate::Request) -> $crate::Response = <$handler as $crate::Handler>::handle;
    };
}

/// What [`export_handler!`] expands to needs; not part of the API.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod __private {
    pub use crate::wasi_glue::serve;
    pub use ::wasi;
}
