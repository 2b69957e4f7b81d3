//! The one error type of the API. Its kind is the contract: the HTTP status and the
//! JSON body `{"error": "...", "detail": ...}`. The cause rides along for the logs only.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::{Value, json};

use crate::store::StoreError;

/// The JSON body of every error (for the OpenAPI document; [`ApiError::body`] writes it).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What is wrong, in words.
    pub error: String,
    /// Structured extras, when there are any.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
}

/// The answers every request about one named proc, execution or schedule may get,
/// besides its own (for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ClientErrors {
    /// Bad input: a malformed name, id, query or body.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Missing or bad credentials.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Not allowed for this caller.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such thing.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    /// Was there, and was removed on purpose (retention removed a run's lines).
    Gone,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// Well-formed by the API document, but breaks a rule it can only state in words
    /// (between fields, against stored state or the server's settings).
    Unprocessable,
    TooManyRequests,
    ServiceUnavailable,
    Internal,
}

impl ErrorKind {
    fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Gone => StatusCode::GONE,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    /// What the client reads in `error`.
    pub message: String,
    /// Structured extras for the client (`detail`).
    pub detail: Option<Value>,
    /// What went wrong underneath, logged, never sent.
    #[source]
    pub cause: Option<anyhow::Error>,
    /// Seconds for a `Retry-After` header (429 and 503 answers).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            detail: None,
            cause: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }

    pub fn with_detail(mut self, detail: impl Into<Value>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with_cause(mut self, cause: impl Into<anyhow::Error>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub fn body(&self) -> Value {
        match &self.detail {
            Some(detail) => json!({"error": self.message, "detail": detail}),
            None => json!({"error": self.message}),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            match &self.cause {
                Some(cause) => tracing::error!(error = format!("{cause:#}"), "{}", self.message),
                None => tracing::error!("{}", self.message),
            }
        }
        let mut response = HttpResponse::build(status);
        if let Some(seconds) = self.retry_after {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(self.body())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (kind, message) = match &e {
            StoreError::DatabaseUnavailable(_) => (
                ErrorKind::ServiceUnavailable,
                "the database is unavailable; try again shortly",
            ),
            StoreError::RedisUnavailable(_) => (
                ErrorKind::ServiceUnavailable,
                "Redis is unavailable; try again shortly",
            ),
            // A blip that outlasted the store's own retries (SQLite's lock held past its
            // busy timeout by a long write, a PostgreSQL restart): the client may retry.
            StoreError::Database(_) if e.is_transient() => (
                ErrorKind::ServiceUnavailable,
                "the database is busy; try again shortly",
            ),
            StoreError::NotFound => (ErrorKind::NotFound, "not found"),
            StoreError::Conflict(message) => {
                return ApiError::new(ErrorKind::Conflict, message.clone());
            }
            StoreError::Invalid(message) => return ApiError::bad_request(message.clone()),
            _ => (
                ErrorKind::Internal,
                "internal error; the server log has the cause",
            ),
        };
        ApiError::new(kind, message).with_cause(e)
    }
}

/// Rewrites actix's JSON extractor errors into the contract's shape.
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::OverflowKnownLength { length, limit } => ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body is {length} bytes; the limit is {limit}"),
        ),
        E::Overflow { limit } => ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body is larger than the limit of {limit} bytes"),
        ),
        E::ContentType => ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "the request body must be JSON (Content-Type: application/json)",
        ),
        E::Deserialize(e) => ApiError::bad_request(format!("invalid JSON body: {e}")),
        other => ApiError::bad_request(format!("cannot read the request body: {other}")),
    };
    api.into()
}

/// Rewrites actix's query-string extractor errors.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request(format!("invalid query string: {err}")).into()
}

/// Rewrites actix's path extractor errors.
pub fn path_error(err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("invalid path: {err}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError;
    use diesel::result::{DatabaseErrorKind, Error};

    fn database(message: &str) -> StoreError {
        StoreError::Database(Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(message.to_owned()),
        ))
    }

    #[test]
    fn a_busy_database_is_a_503_and_other_database_errors_a_500_without_their_cause() {
        let busy = ApiError::from(database("database is locked"));
        assert_eq!(busy.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            busy.body()["error"],
            "the database is busy; try again shortly"
        );
        let broken = ApiError::from(database("no such column: secret_value"));
        assert_eq!(broken.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!broken.body().to_string().contains("secret_value"));
    }
}
