//! One error type for the engine, so services map it to a gRPC status in one place.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    /// The caller sent something we cannot serve; the message says what to fix.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The model files on disk are missing, malformed or of an unsupported kind.
    #[error("cannot load model: {0}")]
    Load(String),
    /// Queue full: the caller should back off or try another instance.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A forward pass failed for a reason that is not the caller's (the request was
    /// valid); every request in that pass gets this error.
    #[error("inference failed: {0}")]
    Internal(String),
    /// The model worker has stopped (shutdown or a fatal error before this request).
    #[error("model worker stopped")]
    WorkerGone,
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("io error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    pub fn load(msg: impl Into<String>) -> Self {
        EngineError::Load(msg.into())
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        EngineError::InvalidRequest(msg.into())
    }
    pub fn tokenizer(err: impl std::fmt::Display) -> Self {
        EngineError::Tokenizer(err.to_string())
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;
