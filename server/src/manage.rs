//! Model management over HTTP: downloads into the Hugging Face cache with progress (a second
//! request for a model being pulled follows the first) and deletion, in our API
//! (`POST /v1/models/pull`, `DELETE /v1/models/{id}`) and Ollama's (`POST /api/pull`,
//! `DELETE /api/delete`). Both are refused unless `[server] allow_downloads` holds.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use minerva_runtime::{Error, PullState};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::handlers::body_error;
use crate::ollama::{self, OllamaError};
use crate::{openai, stream, AppState};

/// Least time between two progress reports of a pull.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// `POST /v1/models/pull` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// `org/name` or `org/name:QUANT`.
    pub model: String,
    /// Progress as server-sent events (the default), or one JSON object at the end.
    #[serde(default)]
    pub stream: Option<bool>,
}

/// A 403 unless the server lets clients download and delete models.
fn allowed(state: &AppState) -> Result<(), ApiError> {
    match state.pool.runtime().config().server.downloads_allowed() {
        true => Ok(()),
        false => Err(ApiError::status(
            StatusCode::FORBIDDEN,
            "downloading and deleting models over HTTP is off on this server: set \
             `allow_downloads = true` in its [server] config (the default only on a loopback \
             address)",
            "downloads_disabled",
        )),
    }
}

/// `reference` checked to be a Hugging Face repo reference.
fn repo_reference(reference: &str) -> Result<&str, ApiError> {
    match minerva_runtime::resolve::parse_repo_reference(reference) {
        Some(_) => Ok(reference),
        None => Err(ApiError::invalid(
            format!("model: `{reference}` is not a Hugging Face repo id (`org/name` or `org/name:QUANT`)"),
            Some("model"),
        )),
    }
}

/// The states of a pull as it goes, at most one per [`PROGRESS_EVERY`]; the last one has its
/// outcome.
fn states(pull: watch::Receiver<PullState>) -> impl Stream<Item = PullState> + Send {
    futures::stream::unfold(Some(pull), |pull| async move {
        let mut pull = pull?;
        let state = pull.borrow_and_update().clone();
        if state.outcome.is_some() {
            return Some((state, None));
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
        match pull.changed().await {
            Ok(()) => Some((state, Some(pull))),
            Err(_) => Some((vanished(state), None)),
        }
    })
}

/// The pull's end, waited for.
async fn outcome(mut pull: watch::Receiver<PullState>) -> std::result::Result<PathBuf, Arc<Error>> {
    loop {
        let state = pull.borrow_and_update().clone();
        if let Some(outcome) = state.outcome {
            return outcome;
        }
        if pull.changed().await.is_err() {
            return vanished(state).outcome.expect("set");
        }
    }
}

/// `state` ended as a pull whose task went away without telling how.
fn vanished(mut state: PullState) -> PullState {
    state.outcome.get_or_insert_with(|| {
        Err(Arc::new(Error::Download {
            file: String::new(),
            message: "the download stopped without a result".into(),
        }))
    });
    state
}

/// `POST /v1/models/pull`: `{"model", "stream"}`; server-sent events
/// `{"status": "downloading", "file", "total", "completed"}` per file, then
/// `{"status": "success", "model", "path"}` or `{"error": {...}}`; with `stream: false` the last
/// of them as the body (an error with its status).
pub async fn pull(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    allowed(&state)?;
    let body = body.map_err(body_error)?;
    let req: PullRequest = openai::parse_strict(&body)?;
    let model = repo_reference(&req.model)?.to_string();
    let pull = state.pool.pull(&model);
    if req.stream == Some(false) {
        return match outcome(pull).await {
            Ok(path) => Ok(Json(success(&model, &path)).into_response()),
            Err(e) => Err(ApiError::from(e.as_ref())),
        };
    }
    let events = futures::StreamExt::flat_map(states(pull), move |state| {
        let mut events: Vec<Value> = state
            .files
            .iter()
            .map(|(file, total, completed)| {
                json!({"status": "downloading", "file": file, "total": total,
                       "completed": completed})
            })
            .collect();
        match &state.outcome {
            None => {}
            Some(Ok(path)) => events.push(success(&model, path)),
            Some(Err(e)) => events.push(ApiError::from(e.as_ref()).body()),
        }
        futures::stream::iter(
            events
                .into_iter()
                .map(|e| Event::default().data(e.to_string())),
        )
    });
    Ok(stream::sse(events))
}

fn success(model: &str, path: &std::path::Path) -> Value {
    json!({"status": "success", "model": model, "path": path})
}

/// `DELETE /v1/models/{id}` (`{id}` may be `org/name[:QUANT]`): unloads the model and removes
/// it from the Hugging Face cache; `{"id", "object": "model", "deleted": true}` (OpenAI's shape).
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(parts): Path<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    allowed(&state)?;
    let model = match (parts.get("model"), parts.get("name")) {
        (Some(org), Some(name)) => format!("{org}/{name}"),
        (Some(model), None) => model.clone(),
        _ => {
            return Err(ApiError::invalid(
                "no model named in the path",
                Some("model"),
            ))
        }
    };
    state.pool.delete(&model)?;
    Ok(Json(json!({"id": model, "object": "model", "deleted": true})).into_response())
}

/// `POST /api/pull` (Ollama): newline-delimited progress objects (`pulling <file>` with
/// `digest`, `total`, `completed`), then `success`; one object with `stream: false`.
pub async fn ollama_pull(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    allowed(&state)?;
    let body = body.map_err(body_error)?;
    let req: ollama::ModelRequest = ollama::parse(&body)?;
    let model = repo_reference(&req.model)?.to_string();
    let pull = state.pool.pull(&model);
    if req.stream == Some(false) {
        return match outcome(pull).await {
            Ok(_) => Ok(Json(json!({"status": "success"})).into_response()),
            Err(e) => Err(ApiError::from(e.as_ref()).into()),
        };
    }
    let opening = futures::stream::iter([json!({"status": "pulling manifest"})]);
    let progress = futures::StreamExt::flat_map(states(pull), |state| {
        futures::stream::iter(ollama::pull_progress(&state))
    });
    let lines = futures::StreamExt::map(futures::StreamExt::chain(opening, progress), |line| {
        Ok::<_, Infallible>(format!("{line}\n"))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}

/// `DELETE /api/delete` (Ollama): `{"model"}`; an empty 200, 404 for a model not in the cache.
pub async fn ollama_delete(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    allowed(&state)?;
    let body = body.map_err(body_error)?;
    let req: ollama::ModelRequest = ollama::parse(&body)?;
    state.pool.delete(&req.model)?;
    Ok(StatusCode::OK.into_response())
}
