//! The gateway's errors as OpenAI clients expect them: an HTTP status and a body
//! `{"error": {"message", "type", "param", "code"}}`, made from the gRPC status the
//! same request would have got, so both front doors refuse the same things for the same
//! reasons. `param` comes from the status's `google.rpc.BadRequest`, renamed to the
//! OpenAI field the client sent; a rate limit's `google.rpc.RetryInfo` becomes
//! `Retry-After`.

use super::openai::Endpoint;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ponder_cluster::metrics::code_name;
use serde_json::{json, Value};
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Nginx's "client closed request": what a cancelled query would have been answered
/// with, had the client still been there to read it.
const CLIENT_CLOSED_REQUEST: u16 = 499;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's error `type` (`invalid_request_error`, `rate_limit_error`, ...).
    pub kind: &'static str,
    /// The request field to fix, as the client named it.
    pub param: Option<String>,
    /// The gRPC status code's name, lower-cased (`resource_exhausted`).
    pub code: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// A request the gateway itself refuses before it becomes a `SolveRequest`.
    pub fn bad_request(param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: "invalid_argument".into(),
            retry_after: None,
        }
    }

    /// The HTTP form of a gRPC refusal of a request that came in at `endpoint`.
    pub fn from_status(s: &Status, endpoint: Endpoint) -> Self {
        let (status, kind) = match s.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "authentication_error"),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_error"),
            Code::NotFound => (StatusCode::NOT_FOUND, "not_found_error"),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "timeout_error"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
            Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            Code::Cancelled => (
                StatusCode::from_u16(CLIENT_CLOSED_REQUEST).expect("a valid status code"),
                "cancelled",
            ),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        };
        let param = s
            .get_details_bad_request()
            .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
            .filter(|f| !f.is_empty())
            .map(|f| openai_param(&f, endpoint));
        let retry_after = s.get_details_retry_info().and_then(|r| r.retry_delay);
        Self {
            status,
            message: s.message().to_string(),
            kind,
            param,
            code: code_name(s.code()).to_ascii_lowercase(),
            retry_after,
        }
    }

    /// The `{"error": ...}` object (also what a stream sends when it fails midway).
    pub fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body().to_string(),
        )
            .into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up: a client that waits this long is not early.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        r
    }
}

/// A `ponder.v1.SolveRequest` field path as the OpenAI request spelled it.
fn openai_param(field: &str, endpoint: Endpoint) -> String {
    match field {
        "question" => match endpoint {
            Endpoint::Chat => "messages".into(),
            Endpoint::Completions => "prompt".into(),
        },
        "model_id" => "model".into(),
        "budget.max_tokens" => "max_tokens".into(),
        "temperature" | "seed" => field.into(),
        "budget.max_generations" | "budget" => "ponder.budget".into(),
        "budget.max_flops" => "ponder.max_flops".into(),
        other => format!("ponder.{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_is_429_with_retry_after() {
        let s = ponder_cluster::status::resource_exhausted(
            "rate limit exceeded",
            Duration::from_millis(380),
        );
        let e = ApiError::from_status(&s, Endpoint::Chat);
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.kind, "rate_limit_error");
        assert_eq!(e.code, "resource_exhausted");
        let r = e.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn a_bad_field_is_named_as_the_client_sent_it() {
        let s = ponder_cluster::status::invalid_argument("model_id \"gpt-4\" is not served");
        let e = ApiError::from_status(&s, Endpoint::Chat);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("model"));
        let s = ponder_cluster::status::invalid_argument("question must not be empty");
        assert_eq!(
            ApiError::from_status(&s, Endpoint::Completions)
                .param
                .as_deref(),
            Some("prompt")
        );
        let s = ponder_cluster::status::invalid_argument("budget.max_generations must be ...");
        assert_eq!(
            ApiError::from_status(&s, Endpoint::Chat).param.as_deref(),
            Some("ponder.budget")
        );
        let body = ApiError::bad_request(Some("n"), "n must be 1").body();
        assert_eq!(body["error"]["param"], "n");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn every_refusal_has_an_http_status() {
        let cases = [
            (Code::Unauthenticated, 401),
            (Code::DeadlineExceeded, 504),
            (Code::Unavailable, 503),
            (Code::Cancelled, 499),
            (Code::Internal, 500),
        ];
        for (code, http) in cases {
            let e = ApiError::from_status(&Status::new(code, "x"), Endpoint::Chat);
            assert_eq!(e.status.as_u16(), http, "{code:?}");
            assert_eq!(e.code, code_name(code).to_ascii_lowercase());
        }
    }
}
