//! Errors at the HTTP edge: every failure becomes a JSON body
//! `{"error": …, "field": …}` with the right status. Internal errors are
//! logged with their cause and answered with a generic message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sesame_engine::{EngineError, WriteError};
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong, for people.
    pub error: String,
    /// The offending field or parameter, when there is one: a parameter's
    /// name, or the JSON pointer of a document field (`/links/0/url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every refused document field, when there are several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldIssue>>,
}

/// One refused document field.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldIssue {
    /// JSON pointer of the field.
    pub field: String,
    /// What is wrong.
    pub error: String,
}

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError { status, body: ErrorBody { error: error.into(), field: None, errors: None }, retry_after: None }
    }

    /// Names the offending field.
    pub fn field(mut self, field: impl Into<String>) -> ApiError {
        self.body.field = Some(field.into());
        self
    }

    /// 400 Bad Request.
    pub fn bad_request(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required")
    }

    /// 403 Forbidden.
    pub fn forbidden(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, error)
    }

    /// 404 Not Found.
    pub fn not_found(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, error)
    }

    /// 409 Conflict, naming what collides.
    pub fn conflict(field: impl Into<String>, error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, error).field(field)
    }

    /// 422 Unprocessable Entity, naming the field.
    pub fn invalid(field: impl Into<String>, error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error).field(field)
    }

    /// 422 naming every refused document field (the first in `field`).
    pub fn fields(errors: Vec<sesame_site::FieldError>) -> ApiError {
        let first = errors.first().map(|e| (e.field.clone(), e.to_string()));
        let (field, message) = first.unwrap_or_else(|| (String::new(), "invalid document".into()));
        let mut e = ApiError::invalid(field, message);
        e.body.errors = Some(errors.into_iter().map(|e| FieldIssue { field: e.field, error: e.message }).collect());
        e
    }

    /// 429 Too Many Requests with `Retry-After`.
    pub fn too_many(error: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError { retry_after: Some(retry_after), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, error) }
    }

    /// The status it answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// What is wrong, for people.
    pub(crate) fn message(&self) -> &str {
        &self.body.error
    }

    /// The field it names, and every refused document field.
    pub(crate) fn fields_named(&self) -> Vec<(String, String)> {
        match (&self.body.errors, &self.body.field) {
            (Some(errors), _) => errors.iter().map(|e| (e.field.clone(), e.error.clone())).collect(),
            (None, Some(field)) => vec![(field.clone(), self.body.error.clone())],
            (None, None) => Vec::new(),
        }
    }

    /// Seconds to wait before retrying (429 and 503).
    pub(crate) fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// 500 with a generic message; the cause is logged, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error in the API");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("sesame_api_errors_total", "status" => self.status.as_u16().to_string()).increment(1);
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Busy(_) => {
                ApiError { retry_after: Some(2), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()) }
            }
            EngineError::Invalid(_) | EngineError::Line { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            EngineError::Store(e) => e.into(),
            // Corrupt storage, a failed task, I/O: the cause is logged, not sent.
            other => ApiError::internal(&other),
        }
    }
}

impl From<sesame_store::StoreError> for ApiError {
    fn from(e: sesame_store::StoreError) -> ApiError {
        if e.is_unavailable() {
            // Nothing was acknowledged, and retrying later is the right move.
            tracing::error!(error = %e, "the database is unavailable");
            let message = "the database is unavailable; retry shortly";
            return ApiError { retry_after: Some(5), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message) };
        }
        ApiError::internal(&e)
    }
}

impl From<sesame_engine::media::MediaError> for ApiError {
    fn from(e: sesame_engine::media::MediaError) -> ApiError {
        use sesame_engine::media::MediaError;
        match e {
            MediaError::Type => ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string()).field("file"),
            MediaError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).field("file"),
            MediaError::Image(m) => ApiError::invalid("file", m),
            MediaError::Quota { .. } => ApiError::invalid("quota", e.to_string()),
            MediaError::Engine(e) => e.into(),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        match e {
            WriteError::NotFound(m) => ApiError::not_found(m),
            WriteError::Forbidden(m) => ApiError::forbidden(m),
            WriteError::Invalid { errors } => ApiError::fields(errors),
            WriteError::Conflict { field, message } => ApiError::conflict(field, message),
            WriteError::Engine(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_and_body(e: ApiError) -> (StatusCode, String) {
        (e.status, e.body.error)
    }

    /// Regression: internal failures were answered as 422 with their text.
    #[test]
    fn internal_failures_are_500_without_details() {
        for e in [
            EngineError::Internal("render task failed: panicked at secret.rs:12".into()),
            EngineError::Corrupt("pointers: /x/ points at a missing object".into()),
        ] {
            let (status, body) = status_and_body(e.into());
            assert_eq!((status, body.as_str()), (StatusCode::INTERNAL_SERVER_ERROR, "internal error"));
        }
        let (status, _) = status_and_body(EngineError::Invalid("unknown collection".into()).into());
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) = status_and_body(EngineError::Busy("publish").into());
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
