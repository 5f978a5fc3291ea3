//! The control plane's integration tests: one test binary, a module per
//! topic, the shared harness in [`support`]. Tests drive the axum router
//! directly, a control plane started in-process on `127.0.0.1:0`, or the
//! real binary. Tests that need edge nodes too live in the `e2e` crate.

mod abuse;
mod api;
mod binary;
mod crash;
mod disk_full;
mod hostile;
mod logs;
mod nodes;
// The e2e crate's tests share this harness and use the parts these don't.
#[allow(dead_code)]
mod support;
mod tenancy;
mod tls;
