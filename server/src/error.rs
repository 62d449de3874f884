//! Errors in OpenAI's JSON shape: `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use minerva_runtime::Error;
use serde_json::json;

/// An HTTP error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    pub(crate) message: String,
    kind: &'static str,
    pub(crate) param: Option<String>,
    code: Option<&'static str>,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u64>,
}

impl ApiError {
    /// A 400 `invalid_request_error`, naming the offending parameter if known.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
            retry_after: None,
        }
    }

    /// A 400 for a field this server does not honour.
    pub fn unsupported(field: &str) -> Self {
        let mut e = Self::invalid(
            format!("`{field}` is not supported by this server yet; remove it from the request"),
            Some(field),
        );
        e.code = Some("unsupported_parameter");
        e
    }

    /// A 401.
    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or invalid API key: send `Authorization: Bearer <key>`".into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
            retry_after: None,
        }
    }

    /// A status with a message, e.g. 413 or 404 for unknown routes.
    pub fn status(status: StatusCode, message: impl Into<String>, code: &'static str) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: Some(code),
            retry_after: None,
        }
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        self.status
    }

    /// The same error in Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`.
    pub fn anthropic_body(&self) -> serde_json::Value {
        let kind = match self.status.as_u16() {
            400 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            _ => "api_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": self.message}})
    }

    /// The `Retry-After` header this error carries, if any.
    pub fn retry_after_header(&self) -> Option<HeaderValue> {
        self.retry_after.map(HeaderValue::from)
    }

    /// The JSON body, also used for errors inside a stream.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::from(&e)
    }
}

impl From<&Error> for ApiError {
    fn from(e: &Error) -> Self {
        let message = e.to_string();
        let (status, kind, param, code) = match e {
            Error::ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
            Error::InvalidRequest(_) | Error::Template(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", None, None)
            }
            Error::InvalidParam { param, .. } => {
                return ApiError::invalid(message, Some(param));
            }
            Error::Unsupported { option, .. } => {
                return ApiError::invalid(message, Some(option)).with_code("unsupported_parameter")
            }
            Error::ContextOverflow { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("messages"),
                Some("context_length_exceeded"),
            ),
            Error::Overloaded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                None,
                Some("model_busy"),
            ),
            Error::EngineUnavailable { .. } | Error::Config(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("model"),
                Some("engine_unavailable"),
            ),
            Error::EngineCrashed { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                None,
                Some("engine_crashed"),
            ),
            Error::ModelUnavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("model"),
                Some("model_unavailable"),
            ),
            Error::TimedOut { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                None,
                Some("request_timeout"),
            ),
            Error::Download { .. } => (
                StatusCode::BAD_GATEWAY,
                "server_error",
                Some("model"),
                Some("model_download_failed"),
            ),
            Error::InvalidModel { .. } | Error::Io { .. } | Error::Engine { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                None,
            ),
        };
        let retry_after = match e {
            Error::Overloaded { .. } => Some(1),
            Error::ModelUnavailable { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        };
        ApiError {
            status,
            message,
            kind,
            param: param.map(str::to_string),
            code,
            retry_after,
        }
    }
}

impl ApiError {
    fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(retry) = self.retry_after_header() {
            response.headers_mut().insert(header::RETRY_AFTER, retry);
        }
        response
    }
}
