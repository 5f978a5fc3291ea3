//! The SDK's error for reading message bodies. Outbound requests have their
//! own error, [`FetchError`](crate::FetchError), because callers match on
//! its cases (denied, too many subrequests) rather than just report them.

/// Why a body could not be read as text or JSON.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not valid UTF-8.
    #[error("body is not valid UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// The body is not JSON, or not JSON of the expected shape.
    #[error("body is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
