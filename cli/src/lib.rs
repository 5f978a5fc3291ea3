//! The `outpost` command-line tool (placeholder).
//!
//! Will drive the control plane's REST API (deploy, rollback, logs, …) and
//! run `outpost dev`. Nothing is implemented yet.
