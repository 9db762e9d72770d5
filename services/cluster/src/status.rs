//! Mapping between search errors and gRPC statuses, in both directions.

use ponder_search::SearchError;
use tonic::{Code, Status};

pub fn to_status(e: SearchError) -> Status {
    match e {
        SearchError::Invalid(m) => Status::invalid_argument(m),
        SearchError::Overloaded(m) => Status::resource_exhausted(m),
        SearchError::Unavailable(m) => Status::unavailable(m),
        SearchError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
        SearchError::Cancelled => Status::cancelled("the request was cancelled"),
        SearchError::Internal(m) => Status::internal(m),
    }
}

/// How the orchestrator reads a worker's status: which failures may be retried
/// elsewhere is decided by [`SearchError::is_retryable`].
pub fn from_status(s: &Status) -> SearchError {
    let m = s.message().to_string();
    match s.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            SearchError::Invalid(m)
        }
        Code::ResourceExhausted => SearchError::Overloaded(m),
        Code::DeadlineExceeded => SearchError::DeadlineExceeded(m),
        Code::Unavailable | Code::Unknown | Code::Aborted | Code::Cancelled => {
            SearchError::Unavailable(format!("{:?}: {m}", s.code()))
        }
        _ => SearchError::Internal(format!("{:?}: {m}", s.code())),
    }
}
