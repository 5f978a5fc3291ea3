//! Wire types shared by Outpost's control plane, edge nodes and CLI.
//!
//! Serde only, no I/O. Every type here is part of the versioned `v1`
//! contract: fields are added, never renamed or removed, and maps are
//! `BTreeMap`s so serialized output is deterministic.

use serde::{Deserialize, Serialize};

/// The API version these types belong to (the `/v1/` in every path).
pub const API_VERSION: &str = "v1";

/// The body of every error response: `{"error": {"code": …, "message": …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A machine-readable code plus a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
