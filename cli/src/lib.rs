//! The `outpost` command: what a tenant or operator types.
//!
//! Every command but `dev` is a thin client of the control plane's REST
//! API ([`client`]); `outpost dev` runs a control plane and an edge node in
//! this process ([`dev`]). Output is a table for people or, with `--json`,
//! the API's JSON for scripts; failures are one line on stderr and a
//! non-zero exit.
//!
//! Not here: anything the API can't do — the CLI holds no state but the
//! saved login.

pub mod args;
pub mod client;
pub mod commands;
pub mod config;
pub mod dev;
pub mod dev_projects;
pub mod manifest;
pub mod project;
