//! The edge node's integration tests: one test binary (one link of
//! wasmtime), a module per topic, the shared harness in [`support`]. Each
//! test starts a real node in-process on `127.0.0.1:0` (or the real
//! binary) and talks real HTTP/TLS to it.

mod binary;
mod cache;
mod cancel;
mod density;
mod hostile;
mod limits;
mod outbound;
mod polyglot;
mod routing;
mod serving;
mod share;
mod support;
mod tls;
