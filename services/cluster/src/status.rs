//! Mapping between search errors and gRPC statuses, in both directions, and the
//! statuses a client can act on without parsing prose: INVALID_ARGUMENT carries a
//! `google.rpc.BadRequest` naming the field, RESOURCE_EXHAUSTED a `google.rpc.RetryInfo`
//! saying when to retry (tonic-types; docs/cluster.md, "Errors").

use ponder_search::SearchError;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// When to retry an overloaded server that does not know better (admission full, a
/// worker's queue full): long enough for a query or a batch to finish.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// INVALID_ARGUMENT with a `BadRequest` field violation. The field is the message's
/// first word when it is a field path (`budget.max_generations must be ...`), as every
/// validation message in Ponder starts; otherwise the violation names no field.
pub fn invalid_argument(message: impl Into<String>) -> Status {
    let message = message.into();
    let details = ErrorDetails::with_bad_request_violation(field_of(&message), message.clone());
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// RESOURCE_EXHAUSTED with a `RetryInfo` of `retry_after`.
pub fn resource_exhausted(message: impl Into<String>, retry_after: Duration) -> Status {
    let details = ErrorDetails::with_retry_info(Some(retry_after));
    Status::with_error_details(Code::ResourceExhausted, message.into(), details)
}

/// The request fields of `ponder.v1` (SolveRequest, GenerateRequest and its sampling
/// parameters, ScoreRequest) that a message may start with.
const REQUEST_FIELDS: [&str; 16] = [
    "question",
    "budget",
    "strategy",
    "seed",
    "temperature",
    "aggregation",
    "strict",
    "model_id",
    "prompt",
    "n",
    "params",
    "top_p",
    "top_k",
    "max_tokens",
    "stop",
    "candidates",
];

/// The field path a validation message starts with (`budget.max_tokens`, `question`),
/// or "" when its first word is not one.
fn field_of(message: &str) -> String {
    let first = message.split_whitespace().next().unwrap_or("");
    let first = first.trim_end_matches([':', ',', ';']);
    let mut parts = first.split('.');
    let top = parts.next().unwrap_or("");
    let rest_ok = parts.all(|part| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    });
    if REQUEST_FIELDS.contains(&top) && rest_ok {
        first.to_string()
    } else {
        String::new()
    }
}

pub fn to_status(e: SearchError) -> Status {
    match e {
        SearchError::Invalid(m) => invalid_argument(m),
        SearchError::Overloaded(m) => resource_exhausted(m, DEFAULT_RETRY_AFTER),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_details_a_client_can_act_on() {
        let s = invalid_argument("budget.max_tokens must be 0 (no limit) or at least 64");
        let v = &s.get_details_bad_request().unwrap().field_violations[0];
        assert_eq!(v.field, "budget.max_tokens");
        assert!(v.description.contains("at least 64"));
        let s = invalid_argument("question is empty; send the problem text");
        assert_eq!(
            s.get_details_bad_request().unwrap().field_violations[0].field,
            "question"
        );
        let s = invalid_argument("the strategy costs 9 generations");
        assert_eq!(
            s.get_details_bad_request().unwrap().field_violations[0].field,
            ""
        );
        let s = resource_exhausted("slow down", Duration::from_millis(380));
        assert_eq!(
            s.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_millis(380))
        );
        assert_eq!(s.code(), Code::ResourceExhausted);
    }
}
