//! The one error type of the HTTP API and its JSON shape:
//! `{"error": {"code": "snake_case_code", "message": "human text"}}`.
//!
//! 5xx bodies never carry internals; the cause is logged instead.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::domain::DomainError;
use crate::store;

/// An error answer of the API. Each variant names its status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed JSON, a bad field, a bad path or query parameter.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or bad credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such thing (or not the caller's to see).
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: conflicts with existing data.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 408: the request body did not arrive in time; the connection is closed.
    #[error("{0}")]
    BodyTimeout(String),
    /// 422: well-formed but invalid values.
    #[error("{0}")]
    Invalid(String),
    /// 429: too many attempts.
    #[error("{0}")]
    RateLimited(String),
    /// 429 with `Retry-After`: too many attempts, try again in `.1` seconds.
    #[error("{0}")]
    RetryLater(String, u64),
    /// 500: a bug or corrupt data; the cause is logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
    /// 503: shutting down, or the disk refused the write.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited(_) | ApiError::RetryLater(..) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge(_) => "too_large",
            ApiError::BodyTimeout(_) => "timeout",
            ApiError::Invalid(_) => "invalid",
            ApiError::RateLimited(_) | ApiError::RetryLater(..) => "rate_limited",
            ApiError::Internal(_) => "internal",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// A 401 for a missing or unknown token.
    pub fn no_token() -> Self {
        ApiError::Unauthorized(crate::domain::NO_TOKEN.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "internal error".to_owned()
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(%cause, "unavailable");
                cause.clone()
            }
            other => other.to_string(),
        };
        let body = json!({"error": {"code": self.code(), "message": message}});
        let mut response = (self.status_code(), Json(body)).into_response();
        match self {
            ApiError::RetryLater(_, secs) => {
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(secs),
                );
            }
            // The rest of the body may still be trickling in: the connection ends
            // with this answer rather than read it.
            ApiError::BodyTimeout(_) => {
                response.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Closed => ApiError::Unavailable("the server is shutting down".into()),
            store::Error::Sled(cause) => {
                tracing::error!(%cause, "storage failure");
                ApiError::Unavailable(format!(
                    "storage refused the write ({cause}); nothing was changed; retry later"
                ))
            }
            store::Error::NotDurable(cause) => {
                tracing::error!(%cause, "flush failed after a commit");
                ApiError::Unavailable(format!(
                    "the change was committed but could not be made durable ({cause}); \
                     it may or may not survive a crash or the store's recovery"
                ))
            }
            store::Error::Degraded(reason) => ApiError::Unavailable(format!(
                "storage is failing ({reason}) and recovering; nothing was changed; retry later"
            )),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Unauthorized(m) => ApiError::Unauthorized(m),
            DomainError::Forbidden(m) => ApiError::Forbidden(m),
            e @ DomainError::NotFound(_) => ApiError::NotFound(e.to_string()),
            DomainError::Conflict(m) => ApiError::Conflict(m),
            DomainError::Invalid(m) => ApiError::Invalid(m),
            DomainError::RateLimited(m) => ApiError::RateLimited(m),
            DomainError::Throttled {
                message,
                retry_after_s,
            } => ApiError::RetryLater(message, retry_after_s),
            DomainError::Store(e) => e.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge("the request body is too large".into())
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::BadRequest(
                "expected a JSON body with Content-Type: application/json".into(),
            ),
            _ => ApiError::BadRequest(r.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
