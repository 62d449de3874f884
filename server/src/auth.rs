//! API-key authentication for the API routes (bearer token or `x-api-key`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::anthropic::AnthropicError;
use crate::error::ApiError;
use crate::AppState;

/// Pass the request on if no keys are configured or it carries one of them.
pub async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let keys = &state.pool.runtime().config().server.api_keys;
    if keys.is_empty() {
        return next.run(request).await;
    }
    // OpenAI clients send a bearer token, Anthropic clients an `x-api-key` header.
    let authorized = {
        let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
        header(AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| header("x-api-key"))
            .map(str::trim)
            .is_some_and(|key| {
                keys.iter()
                    .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes()))
            })
    };
    if authorized {
        next.run(request).await
    } else if request.uri().path().starts_with("/v1/messages") {
        AnthropicError(ApiError::unauthorized()).into_response()
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Compare without leaking the position of the first difference through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
