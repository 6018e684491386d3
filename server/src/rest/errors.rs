//! Errors in AWS's JSON protocol shape: an `x-amzn-ErrorType` header and a
//! `{"__type", "message"}` body, which boto3 turns into its modelled exceptions
//! (`client.exceptions.ValidationException`, ...). One mapping from memd's error codes.

use crate::error::ServiceError;
use axum::body::Body;
use http::{HeaderValue, Response, StatusCode};
use tonic::Code;

/// An error as AgentCore reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsError {
    /// The exception name, e.g. `ValidationException`.
    pub code: &'static str,
    pub status: u16,
    pub message: String,
    /// A quota refusal's retry delay: the response is held back for it (see
    /// [`crate::auth::hold`]).
    pub retry_after: Option<std::time::Duration>,
}

impl AwsError {
    pub fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A `ValidationException` naming the field (in the REST API's own spelling).
    pub fn validation(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new("ValidationException", 400, format!("{field}: {reason}"))
    }

    /// A field of the AgentCore model that memd does not act on: refused, never dropped.
    pub fn unsupported(field: &str, why: &str) -> Self {
        Self::validation(
            field,
            format!("not supported by memd ({why}); see docs/agentcore.md"),
        )
    }

    /// The HTTP response boto3 expects.
    pub fn into_response(self) -> Response<Body> {
        let mut body = serde_json::json!({ "__type": self.code, "message": self.message });
        if self.code == "ValidationException" {
            // The model requires a reason; name the field when the message starts with one.
            body["reason"] = "FieldValidationFailed".into();
            if let Some((field, reason)) = self.message.split_once(": ")
                && !field.contains(' ')
            {
                body["fieldList"] = serde_json::json!([{ "name": field, "message": reason }]);
            }
        }
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        if let Some(delay) = self.retry_after {
            crate::auth::insert_retry_headers(headers, delay);
        }
        response
    }
}

/// memd's error codes (shared by every gRPC handler) in AgentCore's terms.
impl From<tonic::Status> for AwsError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        let retry_after = crate::auth::retry_after(
            status
                .metadata()
                .as_ref()
                .get(crate::auth::RETRY_AFTER_HEADER),
        );
        let mut err = match status.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::Unimplemented => {
                Self::new("ValidationException", 400, rest_field_names(&message))
            }
            Code::NotFound => Self::new("ResourceNotFoundException", 404, message),
            // Idempotency token reused with another request, or a resource in a state that
            // refuses the call (a terminated session).
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => {
                Self::new("ConflictException", 409, message)
            }
            Code::Unauthenticated => Self::new("UnrecognizedClientException", 403, message),
            Code::PermissionDenied => Self::new("AccessDeniedException", 403, message),
            Code::ResourceExhausted => Self::new("ThrottledException", 429, message),
            Code::Unavailable => Self::new("ServiceUnavailableException", 503, message),
            Code::DeadlineExceeded => Self::new("RequestTimeoutException", 504, message),
            _ => Self::new("ServiceException", 500, message),
        };
        err.retry_after = retry_after;
        err
    }
}

impl From<ServiceError> for AwsError {
    fn from(err: ServiceError) -> Self {
        tonic::Status::from(err).into()
    }
}

/// memd names fields in snake_case (`memory_id`); the REST API in camelCase (`memoryId`).
fn rest_field_names(message: &str) -> String {
    let Some((field, rest)) = message.split_once(": ") else {
        return message.to_string();
    };
    if field.contains(' ') {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    format!("{out}: {rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_modelled_exceptions() {
        let err: AwsError = ServiceError::invalid("actor_id", "must not be empty").into();
        assert_eq!(err.code, "ValidationException");
        assert_eq!(err.message, "actorId: must not be empty");
        let err: AwsError = ServiceError::not_found("memory m").into();
        assert_eq!((err.code, err.status), ("ResourceNotFoundException", 404));
        let err: AwsError = ServiceError::PermissionDenied("no".into()).into();
        assert_eq!((err.code, err.status), ("AccessDeniedException", 403));
        let err: AwsError = ServiceError::AlreadyExists("token".into()).into();
        assert_eq!((err.code, err.status), ("ConflictException", 409));
        let err: AwsError = ServiceError::Internal("disk on fire".into()).into();
        assert_eq!((err.code, err.status), ("ServiceException", 500));
        assert!(!err.message.contains("disk"), "internal detail leaked");
    }

    #[test]
    fn validation_body_names_the_field() {
        let response = AwsError::validation("payload[0].blob", "too deep").into_response();
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.headers()["x-amzn-errortype"],
            "ValidationException"
        );
    }
}
