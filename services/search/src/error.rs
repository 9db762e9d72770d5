//! Errors a search can end with; each maps onto one gRPC status code.

/// Why a search (or one call it made) failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SearchError {
    /// The request is malformed; the message says what to fix (`INVALID_ARGUMENT`).
    #[error("{0}")]
    Invalid(String),
    /// Every node that could serve the call is at its queue limit (`RESOURCE_EXHAUSTED`).
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// No healthy node could serve the call (`UNAVAILABLE`).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The deadline passed before an answer was found (`DEADLINE_EXCEEDED`).
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The caller went away (`CANCELLED`).
    #[error("cancelled")]
    Cancelled,
    /// A bug or an unexpected failure on a node (`INTERNAL`).
    #[error("internal error: {0}")]
    Internal(String),
}

impl SearchError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    /// Worth retrying on another node (the same seeded call gives the same samples).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Overloaded(_) | Self::Unavailable(_) | Self::Internal(_)
        )
    }
}

pub type Result<T, E = SearchError> = std::result::Result<T, E>;
