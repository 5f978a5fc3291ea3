//! Bearer tokens: generated with the OS RNG, shown once, stored only as
//! sha256 (they carry 256 bits of entropy, so a fast hash is enough — a
//! password hash would add nothing), compared in constant time.
//!
//! Nodes present either the shared node token from the configuration or
//! their own identity's token (`opn_<name>_<hex>`, see
//! [`outpost_proto::node_token_name`]). An identity is looked up by the
//! name in its token on every request, so a revoked one is refused from
//! the next request on, on every control plane sharing the store.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::ApiState;
use super::error::ApiError;
use crate::store::TenantRecord;

/// 256 random bits from the OS, hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    hex(&bytes)
}

/// A new random token: `opt_` + 64 hex digits.
pub fn new_token() -> String {
    format!("opt_{}", random_hex())
}

/// A new random token for node identity `name`: `opn_<name>_` + 64 hex
/// digits. The name is not secret; the random part is.
pub fn new_node_token(name: &str) -> String {
    format!(
        "{}{name}_{}",
        outpost_proto::NODE_TOKEN_PREFIX,
        random_hex()
    )
}

/// sha256 of a token, hex.
pub fn token_sha256(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality that takes the same time wherever the first difference is
/// (`subtle`, not hand-written: timing is guarded by review of that crate,
/// not by a test here).
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Who a bearer token belongs to.
enum Caller {
    Admin,
    Node(NodeCredential),
    Tenant(Box<TenantRecord>),
}

/// Which credential a node presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCredential {
    /// The shared node token of the configuration: any node id not taken
    /// by an identity.
    Shared,
    /// A per-node identity: the node is `name` and nothing else.
    Identity {
        /// The identity's name, which is the node's id.
        name: String,
        /// The hash of the token it presented, to tell a revoked and
        /// re-issued identity from the one this caller holds.
        token_sha256: String,
    },
}

impl NodeCredential {
    /// Whether the credential still lets its node in: always for the
    /// shared token (it changes only with the configuration), and for an
    /// identity only while the store holds it with the same token hash.
    /// A store that cannot answer counts as a no: a stream on it ends and
    /// the node reconnects, which asks again.
    pub(crate) async fn still_valid(&self, state: &ApiState) -> bool {
        let NodeCredential::Identity { name, token_sha256 } = self else {
            return true;
        };
        let name = name.clone();
        match state.blocking(move |s| s.node_identity(&name)).await {
            Ok(Some(record)) => {
                constant_time_eq(record.token_sha256.as_bytes(), token_sha256.as_bytes())
            }
            _ => false,
        }
    }
}

/// The client's address, when the server recorded it (not in `oneshot`
/// tests, which all share one key).
fn peer_ip(parts: &Parts) -> std::net::IpAddr {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

/// Identifies the caller; no token or an unknown one is 401. An address
/// that presented too many unknown tokens lately gets 429 for further
/// unknown ones, but a valid token is always let in: the limiter slows
/// guessing, it never locks out a client that holds a token (also when
/// every client shares a proxy's address).
async fn caller(parts: &Parts, state: &ApiState) -> Result<Caller, ApiError> {
    // No token at all is a mistake, not a guess: only unknown tokens count.
    let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
    let hash = token_sha256(token);
    if constant_time_eq(hash.as_bytes(), state.admin_token_sha256.as_bytes()) {
        return Ok(Caller::Admin);
    }
    if let Some(shared) = &state.node_token_sha256
        && constant_time_eq(hash.as_bytes(), shared.as_bytes())
    {
        return Ok(Caller::Node(NodeCredential::Shared));
    }
    if let Some(name) = outpost_proto::node_token_name(token) {
        let wanted = name.to_string();
        let record = state.blocking(move |s| s.node_identity(&wanted)).await?;
        if let Some(record) = record
            && constant_time_eq(hash.as_bytes(), record.token_sha256.as_bytes())
        {
            return Ok(Caller::Node(NodeCredential::Identity {
                name: record.name,
                token_sha256: record.token_sha256,
            }));
        }
    }
    if let Some(tenant) = state.tenant_by_token_hash(hash).await? {
        return Ok(Caller::Tenant(Box::new(tenant)));
    }
    let ip = peer_ip(parts);
    let now = std::time::Instant::now();
    if let Err(wait) = state.auth_limiter.check(ip, now) {
        return Err(ApiError::too_many_attempts(wait));
    }
    state.auth_limiter.failed(ip, now);
    Err(ApiError::unauthorized())
}

/// The caller presented the admin token.
pub struct Admin;

/// The caller presented a tenant's token.
pub struct TenantAuth(pub TenantRecord);

/// The caller presented a node credential: the shared node token or a
/// per-node identity's token.
pub struct NodeAuth(pub NodeCredential);

impl NodeAuth {
    /// The identity's name, if the node presented its own identity.
    pub fn identity(&self) -> Option<&str> {
        match &self.0 {
            NodeCredential::Shared => None,
            NodeCredential::Identity { name, .. } => Some(name),
        }
    }

    /// Refuses (403) to let this caller act as node `id`: a node with an
    /// identity is only ever itself, and the shared token may not speak
    /// for a node that has an identity (that would undo the point of
    /// giving it one).
    pub async fn may_act_as(&self, state: &ApiState, id: &str) -> Result<(), ApiError> {
        match &self.0 {
            NodeCredential::Identity { name, .. } if name != id => Err(ApiError::wrong_node(name)),
            NodeCredential::Identity { .. } => Ok(()),
            NodeCredential::Shared => {
                let wanted = id.to_string();
                match state.blocking(move |s| s.node_identity(&wanted)).await? {
                    Some(_) => Err(ApiError::node_has_identity(id)),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The caller presented the admin token or a tenant's (anything but the
/// node token): read-only views shared by operators and tenants.
pub struct UserAuth {
    /// The tenant, for a tenant's token; `None` for the admin.
    pub tenant: Option<String>,
}

impl FromRequestParts<Arc<ApiState>> for UserAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        match caller(parts, state).await? {
            Caller::Admin => Ok(UserAuth { tenant: None }),
            Caller::Tenant(record) => Ok(UserAuth {
                tenant: Some(record.name),
            }),
            Caller::Node(_) => Err(ApiError::forbidden("this needs an admin or tenant token")),
        }
    }
}

// A valid token of the wrong kind is 403: the caller is known, the
// endpoint is not theirs.

impl FromRequestParts<Arc<ApiState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        match caller(parts, state).await? {
            Caller::Admin => Ok(Admin),
            _ => Err(ApiError::forbidden("this needs the admin token")),
        }
    }
}

impl FromRequestParts<Arc<ApiState>> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        match caller(parts, state).await? {
            // A disabled tenant may still look (and see why nothing it
            // has serves), but not change anything.
            Caller::Tenant(tenant) if tenant.disabled && !parts.method.is_safe() => {
                Err(ApiError::tenant_disabled())
            }
            Caller::Tenant(tenant) => Ok(TenantAuth(*tenant)),
            _ => Err(ApiError::forbidden("this needs a tenant token")),
        }
    }
}

impl FromRequestParts<Arc<ApiState>> for NodeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        match caller(parts, state).await? {
            Caller::Node(credential) => Ok(NodeAuth(credential)),
            _ => Err(ApiError::forbidden("this needs a node token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_to_hex() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with("opt_") && a.len() == 68, "{a}");
        let n = new_node_token("edge-1");
        assert_eq!(outpost_proto::node_token_name(&n), Some("edge-1"), "{n}");
        assert_ne!(n, new_node_token("edge-1"));
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"sane"));
        assert!(!constant_time_eq(b"same", b"same!"));
    }
}
