//! `outpost.toml`: an app as its tenant describes it, beside its source.
//!
//! `outpost deploy` brings the app on the control plane to this state;
//! `outpost build` runs [`Build::command`]; `outpost dev` serves it. The
//! control plane serves this file's JSON Schema at
//! `GET /v1/manifest.schema.json`, beside the OpenAPI document.
//!
//! Values are checked where they are used (the control plane decides what
//! a route or an outbound host may be); here only their shape is fixed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The manifest format this build reads and writes.
pub const MANIFEST_VERSION: u32 = 1;

/// The file name the CLI looks for.
pub const MANIFEST_FILE: &str = "outpost.toml";

/// A whole `outpost.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The format's version: 1.
    pub manifest_version: u32,
    /// The app.
    pub app: ManifestApp,
    /// How to build the component (`outpost build`); none: it is built
    /// some other way and `app.component` is already there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
}

/// `[app]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ManifestApp {
    /// The app's name (a-z, 0-9, '-'), unique within the tenant.
    pub name: String,
    /// Where it is served: `HOST` or `HOST/PATH-PREFIX`. Under
    /// `outpost dev`, hosts ending in `.localhost` work as they are.
    pub routes: Vec<String>,
    /// The component, relative to this file: what `outpost build` makes
    /// and `outpost deploy` uploads.
    pub component: String,
    /// Hosts (`host` or `host:port`) the worker may call over outbound
    /// HTTP; none: no outbound calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_outbound: Vec<String>,
    /// Environment variables with their values, kept in this file (so in
    /// version control): nothing secret here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of secret environment variables. Their values are never in
    /// this file: `outpost secrets set APP NAME` sends them (from stdin),
    /// and `outpost dev` reads them from `.dev.vars` beside this file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Limits the app needs. `outpost dev` applies them; `outpost deploy`
    /// checks them against the tenant's limits and refuses to deploy an
    /// app that would not get them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::Limits>,
}

/// `[build]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// A shell command run in this file's directory (`sh -c`); it must
    /// leave the component at `app.component`.
    pub command: String,
    /// Files and directories (relative to this file) whose changes make
    /// `outpost dev --watch` build again; none: this file's directory,
    /// without the component itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<String>,
}
