//! The `outpost` CLI's integration tests: one test binary, a module per
//! topic, the shared harness in [`support`] (the real `outpost` binary,
//! `outpost dev` on free ports under a temp dir).

mod cli;
mod examples;
mod manifest;
mod project;
mod support;
mod usability;
