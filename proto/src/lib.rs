//! Wire types shared by Outpost's control plane, edge nodes and CLI.
//!
//! Serde only (plus OpenAPI schemas behind the `openapi` feature), no I/O. Every type here is part of the versioned `v1`
//! contract: fields are added (optional, with defaults), never renamed or
//! removed; maps are `BTreeMap`s so serialized output is deterministic.
//! Golden JSON fixtures in `tests/golden/` pin the exact shapes.
//!
//! Other crates convert to and from these types explicitly; nothing here
//! knows about storage, HTTP or wasmtime.

pub mod manifest;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The API version these types belong to (the `/v1/` in every path).
pub const API_VERSION: &str = "v1";

/// The body of every error response: `{"error": {"code": …, "message": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A machine-readable code plus a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable, snake_case code (`bad_wasm`, `unknown_tenant`, …).
    pub code: String,
    /// Human-readable explanation; may change between releases.
    pub message: String,
}

impl ErrorBody {
    /// An error body with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// Per-request limits. Every field is optional: an absent field means
/// "inherit" (app → tenant → node default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Fuel (≈ wasm instructions) per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Linear memory per instance, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Wall-clock deadline per request, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Instances running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// `POST /v1/tenants` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Tenant name: lower-case letters, digits and `-`.
    pub name: String,
    /// Domains granted at creation (see [`SetDomains`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
}

/// `PUT /v1/tenants/{tenant}/domains` (admin): the domains a tenant may
/// route, each with every name under it. Replaces the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetDomains {
    /// `example.com`: the tenant may route `example.com` and `*.example.com`.
    pub domains: Vec<String>,
}

/// Per-tenant quota overrides (`PUT /v1/tenants/{tenant}/quotas`, admin).
/// An absent field means the operator's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantQuotas {
    /// Apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<u64>,
    /// Routes in one app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes_per_app: Option<u64>,
    /// Distinct hosts routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<u64>,
    /// Bytes of environment (names and values) in one app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_bytes_per_app: Option<u64>,
    /// Certificates installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<u64>,
    /// MiB of components kept (every version kept counts its size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_mib: Option<u64>,
    /// Versions kept per app; older inactive ones are pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions_per_app: Option<u64>,
}

/// What a tenant holds, as `GET /v1/tenants` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantUsage {
    /// Distinct hosts routed.
    pub hosts: u64,
    /// Certificates installed.
    pub certificates: u64,
    /// Bytes of the component versions kept.
    pub stored_bytes: u64,
}

/// `POST /v1/tokens` (tenant) or `POST /v1/tenants/{tenant}/tokens` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A name for the token, unique within the tenant (`ci`, `laptop`).
    pub name: String,
}

/// The answer to [`CreateToken`]: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenCreated {
    /// Its name.
    pub name: String,
    /// The bearer token. Stored hashed.
    pub token: String,
}

/// A token as `GET /v1/tokens` lists it: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// Prefix of a per-node identity token: `opn_<name>_<64 hex>`. The name
/// is in the clear so that the control plane finds the identity without
/// trying every stored hash, and so that a node can take its id from its
/// token; the 256 random bits after it are what authenticates.
pub const NODE_TOKEN_PREFIX: &str = "opn_";

/// Whether `name` may name a node: 1-63 characters of `a-z`, `0-9` and
/// `-`, not starting with `-` (the control plane's rule for every name).
pub fn is_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The node name a per-node identity token carries, if `token` has the
/// shape `opn_<name>_<64 lower-case hex>`. The shape says nothing about
/// whether the token is valid: only the control plane knows that.
pub fn node_token_name(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(NODE_TOKEN_PREFIX)?;
    // Names hold no `_`, so the last one separates name and secret.
    let (name, secret) = rest.rsplit_once('_')?;
    let secret_ok = secret.len() == 64
        && secret
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (secret_ok && is_node_name(name)).then_some(name)
}

/// `POST /v1/nodes/identities` (admin): a per-node credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateNodeIdentity {
    /// The node's name, which becomes its id in the fleet (`edge-1`).
    pub name: String,
}

/// The answer to [`CreateNodeIdentity`]: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeIdentityCreated {
    /// The node's name.
    pub name: String,
    /// The node's bearer token (`opn_<name>_<64 hex>`). Stored hashed.
    pub token: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// A node identity as `GET /v1/nodes/identities` lists it: never the
/// token nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeIdentity {
    /// The node's name.
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// The answer to [`CreateTenant`]: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantCreated {
    /// Tenant name.
    pub name: String,
    /// Bearer token for the tenant's own API calls. Stored hashed.
    pub token: String,
}

/// A tenant as listed by `GET /v1/tenants` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Tenant name.
    pub name: String,
    /// Limit overrides for all of the tenant's apps.
    #[serde(default)]
    pub limits: Limits,
    /// Number of apps it owns.
    #[serde(default)]
    pub apps: u64,
    /// Domains it may route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Disabled: its hosts answer 403 and its API refuses writes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Quota overrides.
    #[serde(default)]
    pub quotas: TenantQuotas,
    /// What it holds besides its apps.
    #[serde(default)]
    pub usage: TenantUsage,
}

/// Which kind of token called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CallerKind {
    /// The operator's admin token.
    Admin,
    /// A tenant's token.
    Tenant,
}

/// `GET /v1/whoami` (admin or tenant token): who the token belongs to
/// and, for a tenant, what its apps may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Whoami {
    /// Admin or tenant.
    pub kind: CallerKind,
    /// The tenant (tenant token only): its overrides, domains, quotas and
    /// usage, as the admin sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Tenant>,
    /// The limits each of the tenant's apps runs with: its overrides over
    /// the platform's defaults, every field set (tenant token only). An
    /// app's `outpost.toml` may ask for at most these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// `POST /v1/apps` (tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    /// App name, unique within the tenant.
    pub name: String,
    /// Routes: `HOST` or `HOST/PATH-PREFIX`.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Hosts (`host` or `host:port`) the worker may call; empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_outbound: Vec<String>,
}

/// `POST /v1/apps/{app}/env/compare`: how the app's stored environment
/// differs from the values the caller holds (`outpost deploy` plans with
/// it). The answer names variables only, never a value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnvComparison {
    /// Given, and stored with this same value.
    pub same: Vec<String>,
    /// Given, and stored with another value.
    pub changed: Vec<String>,
    /// Given, not stored.
    pub missing: Vec<String>,
    /// Stored, not given.
    pub others: Vec<String>,
}

/// An app as `GET /v1/apps[/{app}]` shows it. Environment values are never
/// echoed back, only their keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct App {
    /// App name.
    pub name: String,
    /// Its routes.
    pub routes: Vec<String>,
    /// The deployment version serving traffic, if any.
    pub active_version: Option<u64>,
    /// Names of its environment variables.
    pub env_keys: Vec<String>,
    /// Number of deployments made.
    #[serde(default)]
    pub versions: u64,
    /// Hosts the worker may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_outbound: Vec<String>,
}

/// `PUT /v1/apps/{app}/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetRoutes {
    /// The app's complete new route list.
    pub routes: Vec<String>,
}

/// `PUT /v1/apps/{app}/env`: the complete new environment.
pub type SetEnv = BTreeMap<String, String>;

/// One deployment of an app (`POST /v1/apps/{app}/deployments` answers
/// with it; `GET` lists them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// 1, 2, 3, … per app.
    pub version: u64,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    /// Component size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Unix time (seconds) of the upload.
    #[serde(default)]
    pub created_at: u64,
}

/// One line a worker wrote to stdout or stderr: what nodes send in
/// `POST /v1/nodes/{id}/logs` and what `GET /v1/apps/{app}/logs` streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GuestLogLine {
    /// Owning tenant.
    pub tenant: String,
    /// App.
    pub app: String,
    /// The node that ran the request (filled in by the control plane).
    #[serde(default)]
    pub node: String,
    /// The node-unique id of the request that wrote it.
    pub request_id: u64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line, without its newline.
    pub text: String,
    /// Unix time in milliseconds, when the node saw it.
    pub time_ms: u64,
}

/// `PUT /v1/apps/{app}/outbound`: the hosts the worker may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetOutbound {
    /// `host` or `host:port` each; empty denies all outbound HTTP.
    pub hosts: Vec<String>,
}

/// `POST /v1/apps/{app}/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// An earlier version to make active.
    pub version: u64,
}

/// What an edge node needs to serve one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Owning tenant.
    pub tenant: String,
    /// App name.
    pub name: String,
    /// Routes.
    pub routes: Vec<String>,
    /// Active version.
    pub version: u64,
    /// `sha256:<hex>` of the component to fetch from `/v1/modules/{digest}`.
    pub digest: String,
    /// Environment for the guest.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Limits, tenant and app overrides merged (node defaults fill the rest).
    #[serde(default)]
    pub limits: Limits,
    /// Hosts (`host` or `host:port`) the worker may call; empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_outbound: Vec<String>,
    /// The tenant is disabled: its routes answer 403 `tenant_disabled`
    /// and nothing of it is loaded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// Body of `PUT /v1/certificates/{hostname}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CertUpload {
    /// PEM certificate chain, leaf first.
    pub cert_chain_pem: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key_pem: String,
}

impl std::fmt::Debug for CertUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertUpload").finish_non_exhaustive()
    }
}

/// A certificate as the API shows it (never its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CertInfo {
    /// The hostname it is served for.
    pub hostname: String,
    /// The DNS names it covers.
    pub names: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// Expiry, Unix seconds.
    pub not_after: i64,
    /// Upload time, Unix seconds.
    pub created_at: u64,
}

/// Everything a node serves at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Monotonic revision of the control plane's state.
    pub revision: u64,
    /// Every app with an active version, keyed `tenant/app`.
    pub apps: BTreeMap<String, AppSpec>,
    /// Tenants' TLS certificates, keyed by the hostname they are served
    /// for (`a.example.com` or `*.example.com`).
    #[serde(default)]
    pub certificates: BTreeMap<String, CertSpec>,
    /// The most recent edge-cache purges.
    #[serde(default, skip_serializing_if = "RecentPurges::is_empty")]
    pub purges: RecentPurges,
}

/// A tenant's certificate as nodes receive it. The key travels in clear
/// inside the node-token-authenticated watch stream; run that link over
/// TLS or a private network.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CertSpec {
    /// Owning tenant.
    pub tenant: String,
    /// PEM chain, leaf first.
    pub cert_chain_pem: String,
    /// PEM private key.
    pub private_key_pem: String,
}

impl std::fmt::Debug for CertSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach logs.
        f.debug_struct("CertSpec")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// The difference between two snapshots: apply it to the snapshot at
/// `base` to get the one at `revision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Delta {
    /// The revision this delta applies to.
    pub base: u64,
    /// The revision after it.
    pub revision: u64,
    /// Apps added or changed, whole, keyed `tenant/app`.
    #[serde(default)]
    pub upsert: BTreeMap<String, AppSpec>,
    /// Apps removed, as `tenant/app` keys.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Certificates added or replaced, by hostname.
    #[serde(default)]
    pub certificates: BTreeMap<String, CertSpec>,
    /// Hostnames whose certificate was removed.
    #[serde(default)]
    pub removed_certificates: Vec<String>,
    /// Edge-cache purges made since `base`, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purges: Vec<PurgeRecord>,
}

/// What a purge of the edge cache removes, within one tenant's partition
/// (`POST /v1/cache/purge`, tenant token; nodes get it in a [`Delta`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum CachePurge {
    /// Every stored response for this absolute URL (`http://` or
    /// `https://`, as the worker fetched it; GET and HEAD, every variant).
    Url {
        /// The URL.
        url: String,
    },
    /// Every stored response whose `Surrogate-Key` header named this key.
    SurrogateKey {
        /// The key.
        key: String,
    },
    /// Everything the tenant has stored. (A struct variant, so a field
    /// beside `"by": "all"` is refused like anywhere else.)
    All {},
}

/// `POST /v1/cache/purge`'s answer: the purge's revision and how far the
/// fleet got with it before the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PurgeResult {
    /// What was purged.
    pub purge: CachePurge,
    /// The revision the purge made: a node at it or later has applied it.
    pub revision: u64,
    /// The live nodes at that revision and those lagging behind it.
    pub rollout: Rollout,
    /// Milliseconds from the purge's record until every live node had it
    /// (or until the answer, if some lag).
    pub waited_ms: u64,
}

/// One tenant's purge, as nodes receive it: it took effect at
/// `revision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PurgeRecord {
    /// The revision the purge made.
    pub revision: u64,
    /// Whose partition.
    pub tenant: String,
    /// What goes.
    pub purge: CachePurge,
}

/// How many purges a snapshot carries at most: the most recent ones.
/// A node further behind than that empties its cache instead.
pub const RECENT_PURGES: usize = 1024;

/// The most recent edge-cache purges, for nodes catching up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecentPurges {
    /// Every purge made after this revision is in `list`; older ones may
    /// have been dropped (0: none ever was).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub since: u64,
    /// Oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub list: Vec<PurgeRecord>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RecentPurges {
    /// Nothing to say.
    pub fn is_empty(&self) -> bool {
        self.since == 0 && self.list.is_empty()
    }

    /// The purges a node that applied revision `have` has not seen, or
    /// `None` if some of them may have been dropped already (the node
    /// must then assume anything may have been purged).
    pub fn after(&self, have: u64) -> Option<impl Iterator<Item = &PurgeRecord>> {
        (have >= self.since).then(|| self.list.iter().filter(move |p| p.revision > have))
    }

    /// Adds `newer` (in revision order) and drops the oldest past
    /// [`RECENT_PURGES`].
    pub fn extend(&mut self, newer: &[PurgeRecord]) {
        self.list.extend_from_slice(newer);
        if self.list.len() > RECENT_PURGES {
            let dropped = self.list.len() - RECENT_PURGES;
            self.since = self.list[dropped - 1].revision.max(self.since);
            self.list.drain(..dropped);
        }
    }
}

/// A delta that does not start where the snapshot is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleDelta {
    /// The snapshot's revision.
    pub have: u64,
    /// The delta's base.
    pub base: u64,
}

impl std::fmt::Display for StaleDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a delta from revision {} cannot apply to revision {}",
            self.base, self.have
        )
    }
}

impl std::error::Error for StaleDelta {}

impl Snapshot {
    /// What turns `self` into `newer`.
    pub fn delta_to(&self, newer: &Snapshot) -> Delta {
        let upsert = newer
            .apps
            .iter()
            .filter(|(key, app)| self.apps.get(*key) != Some(*app))
            .map(|(key, app)| (key.clone(), app.clone()))
            .collect();
        let remove = self
            .apps
            .keys()
            .filter(|key| !newer.apps.contains_key(*key))
            .cloned()
            .collect();
        let certificates = newer
            .certificates
            .iter()
            .filter(|(host, cert)| self.certificates.get(*host) != Some(*cert))
            .map(|(host, cert)| (host.clone(), cert.clone()))
            .collect();
        let removed_certificates = self
            .certificates
            .keys()
            .filter(|host| !newer.certificates.contains_key(*host))
            .cloned()
            .collect();
        let purges = newer
            .purges
            .list
            .iter()
            .filter(|p| p.revision > self.revision)
            .cloned()
            .collect();
        Delta {
            base: self.revision,
            revision: newer.revision,
            upsert,
            remove,
            certificates,
            removed_certificates,
            purges,
        }
    }

    /// Applies `delta`, which must start at this snapshot's revision.
    pub fn apply(&mut self, delta: &Delta) -> Result<(), StaleDelta> {
        if delta.base != self.revision {
            return Err(StaleDelta {
                have: self.revision,
                base: delta.base,
            });
        }
        for key in &delta.remove {
            self.apps.remove(key);
        }
        for (key, app) in &delta.upsert {
            self.apps.insert(key.clone(), app.clone());
        }
        for host in &delta.removed_certificates {
            self.certificates.remove(host);
        }
        for (host, cert) in &delta.certificates {
            self.certificates.insert(host.clone(), cert.clone());
        }
        self.purges.extend(&delta.purges);
        self.revision = delta.revision;
        Ok(())
    }
}

/// One event of `GET /v1/nodes/watch` (newline-delimited JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WatchEvent {
    /// The whole state; sent first, and whenever the node is too far behind.
    Snapshot {
        /// The state.
        snapshot: Snapshot,
    },
    /// What changed since `delta.base`; sent to a node that already has
    /// that revision, instead of the whole state.
    Delta {
        /// The change.
        delta: Delta,
    },
    /// Nothing changed; keeps idle connections alive.
    Heartbeat {
        /// The current revision.
        revision: u64,
    },
    /// The first line of a snapshot sent in parts: `snapshot_part` lines
    /// follow, then `snapshot_end`. The control plane sends every snapshot
    /// this way ([`Snapshot::in_parts`]), so no line grows with the
    /// number of apps in the fleet.
    SnapshotBegin {
        /// The snapshot's revision.
        revision: u64,
        /// The snapshot's recent edge-cache purges.
        #[serde(default, skip_serializing_if = "RecentPurges::is_empty")]
        purges: RecentPurges,
    },
    /// Some of the snapshot's apps and certificates.
    SnapshotPart {
        /// Apps, keyed `tenant/app`.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        apps: BTreeMap<String, AppSpec>,
        /// Certificates, keyed by hostname.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        certificates: BTreeMap<String, CertSpec>,
    },
    /// The snapshot is complete: apply it.
    SnapshotEnd {
        /// The snapshot's revision (as in its `snapshot_begin`).
        revision: u64,
    },
}

/// Bytes of apps and certificates one `snapshot_part` line carries, about:
/// a part closes once it reaches this, so a line is at most this plus one
/// app or certificate (each bounded by the API: at most ~2.5 MiB).
pub const SNAPSHOT_PART_BYTES: usize = 1024 * 1024;

impl Snapshot {
    /// This snapshot as `snapshot_begin`, `snapshot_part`s of about
    /// `part_bytes` of JSON each, and `snapshot_end`.
    pub fn in_parts(&self, part_bytes: usize) -> Vec<WatchEvent> {
        let mut out = vec![WatchEvent::SnapshotBegin {
            revision: self.revision,
            purges: self.purges.clone(),
        }];
        let mut apps = BTreeMap::new();
        let mut certificates = BTreeMap::new();
        let mut size = 0;
        let mut flush =
            |apps: &mut BTreeMap<_, _>, certificates: &mut BTreeMap<_, _>, size: &mut usize| {
                if !apps.is_empty() || !certificates.is_empty() {
                    out.push(WatchEvent::SnapshotPart {
                        apps: std::mem::take(apps),
                        certificates: std::mem::take(certificates),
                    });
                }
                *size = 0;
            };
        for (key, app) in &self.apps {
            size += key.len() + app.json_bytes_at_most();
            apps.insert(key.clone(), app.clone());
            if size >= part_bytes {
                flush(&mut apps, &mut certificates, &mut size);
            }
        }
        for (host, cert) in &self.certificates {
            // PEM is base64 and newlines: escaping adds one byte a line.
            size += host.len() + 2 * (cert.cert_chain_pem.len() + cert.private_key_pem.len()) + 64;
            certificates.insert(host.clone(), cert.clone());
            if size >= part_bytes {
                flush(&mut apps, &mut certificates, &mut size);
            }
        }
        flush(&mut apps, &mut certificates, &mut size);
        out.push(WatchEvent::SnapshotEnd {
            revision: self.revision,
        });
        out
    }
}

impl AppSpec {
    /// An upper bound of its JSON's size: every string at its longest
    /// escaping (6 bytes a character) plus the punctuation.
    fn json_bytes_at_most(&self) -> usize {
        let strings = self.tenant.len()
            + self.name.len()
            + self.digest.len()
            + self.routes.iter().map(String::len).sum::<usize>()
            + self.allow_outbound.iter().map(String::len).sum::<usize>()
            + self
                .env
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        let items = self.routes.len() + self.allow_outbound.len() + 2 * self.env.len();
        6 * strings + 4 * items + 256
    }
}

/// Puts a snapshot sent in parts back together.
#[derive(Debug, Default)]
pub struct SnapshotAssembly {
    building: Option<Snapshot>,
}

/// A part of a snapshot arrived out of order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfOrder(pub &'static str);

impl std::fmt::Display for OutOfOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for OutOfOrder {}

impl SnapshotAssembly {
    /// Takes one of the three snapshot events; returns the snapshot when
    /// `event` completes it. Any other event is refused.
    pub fn take(&mut self, event: WatchEvent) -> Result<Option<Snapshot>, OutOfOrder> {
        match event {
            WatchEvent::SnapshotBegin { revision, purges } => {
                self.building = Some(Snapshot {
                    revision,
                    apps: BTreeMap::new(),
                    certificates: BTreeMap::new(),
                    purges,
                });
                Ok(None)
            }
            WatchEvent::SnapshotPart { apps, certificates } => {
                let building = self
                    .building
                    .as_mut()
                    .ok_or(OutOfOrder("a snapshot part arrived before its beginning"))?;
                building.apps.extend(apps);
                building.certificates.extend(certificates);
                Ok(None)
            }
            WatchEvent::SnapshotEnd { revision } => {
                let done = self
                    .building
                    .take()
                    .ok_or(OutOfOrder("a snapshot ended before it began"))?;
                if done.revision != revision {
                    return Err(OutOfOrder(
                        "a snapshot ended with another revision than it began",
                    ));
                }
                Ok(Some(done))
            }
            _ => Err(OutOfOrder("not a snapshot part")),
        }
    }

    /// Whether a snapshot is being put together (parts must follow).
    pub fn in_progress(&self) -> bool {
        self.building.is_some()
    }
}

/// A node as `GET /v1/nodes` (admin) lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeStatus {
    /// The node's id: self-chosen on the shared node token, its identity's
    /// name with a per-node one.
    pub id: String,
    /// Highest revision it reported applied.
    pub applied_revision: u64,
    /// Unix time (seconds) it was last heard from.
    pub last_contact: u64,
    /// Apps it routes but could not load (`tenant/app` → why), as of its
    /// last report.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unavailable: BTreeMap<String, String>,
    /// The per-node identity it authenticated with (its id is then that
    /// identity's name); absent for a node on the shared node token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The control plane it follows (that control plane's name), as last
    /// heard: with several control planes, any of them lists every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<String>,
}

/// `GET /v1/rollout?revision=N`: how many live nodes serve revision `N`
/// (or newer) — what `outpost deploy` waits on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// The revision asked about (the current one if none was given).
    pub revision: u64,
    /// Nodes heard from in the last minute.
    pub nodes: u64,
    /// Of those, how many serve `revision` or newer.
    pub applied: u64,
    /// Apps live nodes could not load: the caller's own (a tenant sees
    /// only its apps; the admin sees every tenant's), one entry per node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<Unavailable>,
    /// Live nodes that do not serve `revision` yet, by id (what a CLI
    /// waiting on a rollout names after a few seconds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lagging: Vec<String>,
}

/// An app a node routes but could not load (its routes answer 503
/// `app_unavailable` there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Unavailable {
    /// The app, `tenant/app`.
    pub app: String,
    /// The node.
    pub node: String,
    /// Why it does not load there, as the node's runtime said it.
    pub reason: String,
}

/// `PUT /v1/nodes/{id}/status` (node): what the node now serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeReport {
    /// The revision the node has applied and serves.
    pub applied_revision: u64,
    /// Apps it routes but could not load (`tenant/app` → why); every other
    /// app of the revision serves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unavailable: BTreeMap<String, String>,
}

/// `tenant/app`, the key of an app across the fleet.
pub fn app_key(tenant: &str, app: &str) -> String {
    format!("{tenant}/{app}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_tokens_carry_their_name_only_in_the_exact_shape() {
        let secret = "0123456789abcdef".repeat(4);
        assert_eq!(
            node_token_name(&format!("opn_edge-1_{secret}")),
            Some("edge-1")
        );
        for bad in [
            format!("opt_edge-1_{secret}"),
            format!("opn__{secret}"),
            format!("opn_-edge_{secret}"),
            format!("opn_Edge_{secret}"),
            format!("opn_edge_1_{secret}"),
            format!("opn_edge-1_{}", secret.to_uppercase()),
            format!("opn_edge-1_{}", &secret[1..]),
            format!("opn_{}_{secret}", "a".repeat(64)),
            "opn_edge-1".into(),
        ] {
            assert_eq!(node_token_name(&bad), None, "{bad}");
        }
    }

    #[test]
    fn error_body_matches_its_golden_json() {
        let body = ErrorBody::new("bad_wasm", "not a component");
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(
            json,
            r#"{"error":{"code":"bad_wasm","message":"not a component"}}"#
        );
        assert_eq!(serde_json::from_str::<ErrorBody>(&json).unwrap(), body);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            serde_json::from_str::<ErrorBody>(r#"{"error":{"code":"x","message":"y","extra":1}}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn absent_limits_are_omitted_not_null() {
        let l = Limits {
            fuel: Some(5),
            ..Limits::default()
        };
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"fuel":5}"#);
        assert_eq!(
            serde_json::from_str::<Limits>("{}").unwrap(),
            Limits::default()
        );
    }
}
