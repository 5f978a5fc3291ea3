//! The one place API errors become responses: the JSON error body with the
//! right status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_proto::ErrorBody;

use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429: this address presented too many unknown tokens; try again
    /// after `wait`.
    pub fn too_many_attempts(wait: std::time::Duration) -> ApiError {
        ApiError {
            retry_after: Some(wait),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many requests with an invalid token from this address; wait and retry",
            )
        }
    }

    /// 429 `uploads_busy` with `Retry-After`: the tenant already has as
    /// many uploads being validated as it may.
    pub fn uploads_busy(in_flight: usize) -> ApiError {
        ApiError {
            retry_after: Some(std::time::Duration::from_secs(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "uploads_busy",
                format!(
                    "{in_flight} of your uploads are being validated already; retry when one is done"
                ),
            )
        }
    }

    /// 429 `upload_budget` with `Retry-After`: the tenant's uploads used
    /// their compile time for now.
    pub fn upload_budget(wait: std::time::Duration) -> ApiError {
        ApiError {
            retry_after: Some(wait),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "upload_budget",
                format!(
                    "your uploads used their validation time for now; retry in {} s",
                    wait.as_secs().max(1)
                ),
            )
        }
    }

    /// 429 `purge_rate` with `Retry-After`: the tenant made `max` purges
    /// in the window already.
    pub fn purge_rate(max: u32, wait: std::time::Duration) -> ApiError {
        ApiError {
            retry_after: Some(wait),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "purge_rate",
                format!(
                    "you made {max} cache purges in the last minute; retry in {} s (purge by surrogate key to remove many objects at once)",
                    wait.as_secs().max(1)
                ),
            )
        }
    }

    /// 429 `too_many_followers` with `Retry-After`: the tenant already
    /// holds as many `logs?follow=true` streams as it may.
    pub fn too_many_followers(open: usize) -> ApiError {
        ApiError {
            retry_after: Some(std::time::Duration::from_secs(5)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_followers",
                format!(
                    "{open} of your log follow streams are open already; retry when one is closed"
                ),
            )
        }
    }

    /// 503 `followers_busy` with `Retry-After`: the control plane holds as
    /// many log follow streams, across all tenants, as it serves at once.
    pub fn followers_busy() -> ApiError {
        ApiError {
            retry_after: Some(std::time::Duration::from_secs(5)),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "followers_busy",
                "the control plane serves as many log streams as it can; retry later",
            )
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no or unknown token.
    pub fn unauthorized() -> ApiError {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token",
        )
    }

    /// 403: a valid token without the right to this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 403 `quota_exceeded`, naming the quota and its value.
    pub fn quota_exceeded(quota: &str, limit: u64) -> ApiError {
        Self::new(
            StatusCode::FORBIDDEN,
            "quota_exceeded",
            format!(
                "quota {quota}: at most {limit} {}",
                crate::quotas::Quotas::unit(quota)
            ),
        )
    }

    /// 403 `tenant_disabled`: the admin disabled this tenant.
    pub fn tenant_disabled() -> ApiError {
        Self::new(
            StatusCode::FORBIDDEN,
            "tenant_disabled",
            "this tenant is disabled: its apps do not serve and changes are refused; \
             ask the operator",
        )
    }

    /// 403 `wrong_node`: a node with its own identity asked to act as
    /// another node.
    pub fn wrong_node(identity: &str) -> ApiError {
        Self::new(
            StatusCode::FORBIDDEN,
            "wrong_node",
            format!("this credential belongs to node {identity}; a node acts only as itself"),
        )
    }

    /// 403 `node_has_identity`: the shared node token asked to act as a
    /// node that has its own identity.
    pub fn node_has_identity(node: &str) -> ApiError {
        Self::new(
            StatusCode::FORBIDDEN,
            "node_has_identity",
            format!(
                "node {node} has its own identity: it must use its own token, not the shared node token"
            ),
        )
    }

    /// 500: something on this side failed (the message says what).
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Exists(_) => Self::new(StatusCode::CONFLICT, "exists", e.to_string()),
            // The owner is another tenant's business: not named here.
            StoreError::RouteTaken { ref route, .. } => Self::new(
                StatusCode::CONFLICT,
                "route_taken",
                format!("route {route} is already served by another app"),
            ),
            // Whose host it is is not said either.
            StoreError::HostTaken { ref host } => Self::new(
                StatusCode::CONFLICT,
                "host_taken",
                format!(
                    "{host} is routed by another tenant: every path on a host belongs to one tenant"
                ),
            ),
            StoreError::NotFound(_) => Self::not_found(e.to_string()),
            StoreError::QuotaExceeded { quota, limit } => Self::quota_exceeded(quota, limit),
            StoreError::Full(ref why) => {
                tracing::error!(error = %why, "the store's disk is full");
                // 507 tells the client (and the operator's alerting) that
                // retrying will not help until space is freed.
                Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the control plane's disk is full; nothing was changed",
                )
            }
            StoreError::Backend(ref why) => {
                tracing::error!(error = %why, "storage failure");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the control plane cannot store changes right now; nothing was changed",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(ErrorBody::new(self.code, self.message))).into_response();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up, as Retry-After wants.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

/// `Result` for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
