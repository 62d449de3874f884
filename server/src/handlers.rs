//! Route handlers: translate HTTP to runtime calls and back. No inference logic lives here.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use minerva_runtime::{
    FinishReason, GenerationRequest, ModelHandle, ModelStatus, TokenLogprob, ToolCall, Usage,
};
use serde_json::{json, Value};

use crate::anthropic::{self, AnthropicError, MessagesRequest};
use crate::error::ApiError;
use crate::ollama::{self, OllamaError};
use crate::openai::{
    self, ChatRequest, CompletionRequest, DetokenizeRequest, EmbeddingRequest, ModelEntry,
    TokenizeRequest,
};
use crate::responses::{self, ResponseFrame, ResponsesRequest};
use crate::stream::{self, finished, StreamDialect};
use crate::AppState;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Count every request by matched route and status.
pub async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let response = next.run(request).await;
    state.metrics.request(&route, response.status().as_u16());
    response
}

/// `GET /metrics` (Prometheus text format).
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state.pool),
    )
        .into_response()
}

/// `GET /health`.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /v1/models`.
pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let runtime = state.pool.runtime();
    let statuses = state.pool.statuses();
    let data: Vec<ModelEntry> = runtime
        .catalog()
        .into_iter()
        .map(|m| {
            let (engine, estimate, info, error) = match m.inspection {
                Ok(i) => (Some(i.engine), Some(i.memory_estimate), Some(i.info), None),
                Err(e) => (None, None, None, Some(e)),
            };
            let status = statuses.get(&m.id).cloned().unwrap_or(ModelStatus {
                loaded: false,
                failure: None,
                runner_pid: None,
                placement: Vec::new(),
                crashes: 0,
                loads: 0,
                unloads: 0,
                evictions: 0,
                expires_in_s: None,
            });
            ModelEntry {
                loaded: status.loaded,
                status: match (status.loaded, &status.failure) {
                    (true, _) => "loaded",
                    (false, Some(_)) => "failed",
                    (false, None) => "unloaded",
                },
                failure: status.failure,
                runner_pid: status.runner_pid,
                placement: status.placement,
                crashes: status.crashes,
                expires_in_s: status.expires_in_s,
                estimated_memory_bytes: estimate.map(|e| e.total()),
                context_size: estimate.map(|e| e.context_size),
                size_bytes: info.as_ref().and_then(|i| disk_bytes(&i.path)),
                parameters: info.as_ref().map(|i| i.parameter_count),
                format: info.as_ref().map(|i| i.format.to_string()),
                quantization: info.and_then(|i| i.quantization),
                id: m.id,
                object: "model",
                created: 0,
                owned_by: "minerva",
                engine,
                error,
            }
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// Bytes a model's file, or the files of its directory, take on disk (links followed, as the
/// Hugging Face cache's are).
fn disk_bytes(path: &std::path::Path) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return Some(meta.len());
    }
    let files = std::fs::read_dir(path).ok()?.filter_map(|e| {
        let meta = std::fs::metadata(e.ok()?.path()).ok()?;
        meta.is_file().then_some(meta.len())
    });
    Some(files.sum())
}

/// `POST /v1/models/{model}/load`: load a configured model now (waits for the load).
pub async fn load_model(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    state.pool.get(&model).await?;
    Ok(Json(json!({
        "id": model,
        "loaded": true,
        "load_ms": started.elapsed().as_millis() as u64,
    })))
}

/// `POST /v1/models/{model}/unload`: release a model; requests in flight finish first.
pub async fn unload_model(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let was_loaded = state.pool.unload(&model)?;
    Ok(Json(json!({"id": model, "unloaded": was_loaded})))
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let (req, options) = openai::parse::<ChatRequest>(&body, ChatRequest::FIELDS)?;
    let request = req.to_request(&options)?;
    let chunks = Chunks::new("chatcmpl", &options.model, true, &request);
    let started = Instant::now();
    if !options.stream {
        let budget = request.reasoning_budget.is_some();
        let (handle, completion) = state.pool.generate(&chunks.model, request).await?;
        finished(
            &state,
            "chat",
            &chunks.model,
            &completion.usage,
            None,
            started,
        );
        let response = Json(openai::chat_response(
            &chunks.id,
            chunks.created,
            &chunks.model,
            &completion,
            chunks.logprobs,
        ));
        return Ok(budget_warning(response.into_response(), budget, &handle));
    }
    stream_response(state, request, chunks, options.include_usage(), started).await
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let (req, options) = openai::parse::<CompletionRequest>(&body, CompletionRequest::FIELDS)?;
    if let Some(n) = req
        .logprobs
        .filter(|&n| n > minerva_runtime::MAX_TOP_LOGPROBS)
    {
        return Err(ApiError::invalid(
            format!(
                "`logprobs` must be at most {}, got {n}",
                minerva_runtime::MAX_TOP_LOGPROBS
            ),
            Some("logprobs"),
        ));
    }
    let requests = req.to_requests(&options)?;
    let chunks = Chunks::new("cmpl", &options.model, false, &requests[0]);
    let started = Instant::now();
    if !options.stream {
        // Several prompts run concurrently: the engine batches them.
        let runs = requests.into_iter().map(|request| async {
            let (_, c) = state.pool.generate(&chunks.model, request).await?;
            finished(&state, "completion", &chunks.model, &c.usage, None, started);
            Ok::<_, ApiError>(c)
        });
        let completions = futures::future::try_join_all(runs).await?;
        return Ok(Json(openai::completion_response(
            &chunks.id,
            chunks.created,
            &chunks.model,
            &completions,
            chunks.logprobs,
        ))
        .into_response());
    }
    let [request] = <[_; 1]>::try_from(requests).map_err(|_| {
        ApiError::invalid("streaming supports one prompt per request", Some("prompt"))
    })?;
    stream_response(state, request, chunks, options.include_usage(), started).await
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let req: EmbeddingRequest = openai::parse_strict(&body)?;
    let inputs = req.inputs()?;
    let embeddings = state.pool.embed(&req.model, inputs).await?;
    Ok(Json(openai::embeddings_response(
        &req.model,
        &embeddings,
        req.base64(),
    ))
    .into_response())
}

/// `POST /tokenize`: `{"model", "content"}` -> `{"tokens": [...]}`, the ids a raw prompt of that
/// text gets.
pub async fn tokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let req: TokenizeRequest = openai::parse_strict(&body)?;
    let tokens = state
        .pool
        .tokenize(&req.model, minerva_runtime::Input::Text(req.content))
        .await?;
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

/// `POST /detokenize`: `{"model", "tokens": [...]}` -> `{"content"}`, the text those ids
/// stand for, as an answer spells it.
pub async fn detokenize(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let req: DetokenizeRequest = openai::parse_strict(&body)?;
    let content = state.pool.detokenize(&req.model, req.tokens).await?;
    Ok(Json(json!({ "content": content })).into_response())
}

/// `POST /apply-template` (as llama-server's): a chat completions body; answers
/// `{"prompt": ...}`, the text the model's template renders for it, nothing generated.
pub async fn apply_template(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let (req, options) = openai::parse::<ChatRequest>(&body, ChatRequest::FIELDS)?;
    let request = req.to_request(&options)?;
    let prompt = state.pool.render(&options.model, request).await?;
    Ok(Json(json!({ "prompt": prompt })).into_response())
}

/// `POST /v1/messages/count_tokens` (Anthropic): the prompt tokens a Messages request would
/// take, its messages and system prompt rendered through the model's template. Tools are not
/// counted yet, so a body with tools is refused by name rather than undercounted.
pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AnthropicError> {
    let body = body.map_err(body_error)?;
    // The same body as a Messages request, which alone requires max_tokens.
    let mut value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}"), None))?;
    if let Some(fields) = value.as_object_mut() {
        fields.entry("max_tokens").or_insert(json!(1));
    }
    let req = MessagesRequest::parse(value.to_string().as_bytes())?;
    let request = req.to_request()?;
    if !request.tools.is_empty() {
        return Err(ApiError::invalid(
            "tools: counting the tokens of tool definitions is not supported yet",
            Some("tools"),
        )
        .into());
    }
    let tokens = state.pool.tokenize(&req.model, request.input).await?;
    Ok(Json(json!({ "input_tokens": tokens.len() })).into_response())
}

/// `POST /v1/messages` (Anthropic Messages).
pub async fn messages(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AnthropicError> {
    let body = body.map_err(body_error)?;
    let req = MessagesRequest::parse(&body)?;
    let request = req.to_request()?;
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let show_thinking = req.shows_thinking();
    let model = req.model;
    let started = Instant::now();
    let budget = request.reasoning_budget.is_some();
    if !req.stream {
        let (handle, completion) = state.pool.generate(&model, request).await?;
        finished(&state, "messages", &model, &completion.usage, None, started);
        let response = Json(anthropic::message_response(
            &id,
            &model,
            &completion,
            show_thinking,
        ));
        return Ok(budget_warning(response.into_response(), budget, &handle));
    }
    let (handle, tokens) = state.pool.stream(&model, request).await?;
    let dialect = anthropic::MessageStream::new(&id, &model, show_thinking);
    let response = stream::sse_response(state, tokens, dialect, model, started);
    Ok(budget_warning(response, budget, &handle))
}

/// `POST /v1/responses` (OpenAI Responses, stateless).
pub async fn responses(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let req = ResponsesRequest::parse(&body)?;
    let request = req.to_request()?;
    let frame = ResponseFrame::new(&req, now());
    let model = req.model;
    let started = Instant::now();
    let budget = request.reasoning_budget.is_some();
    if !req.stream {
        let (handle, completion) = state.pool.generate(&model, request).await?;
        finished(
            &state,
            "responses",
            &model,
            &completion.usage,
            None,
            started,
        );
        let response = Json(responses::response(&frame, &completion)).into_response();
        return Ok(budget_warning(response, budget, &handle));
    }
    let (handle, tokens) = state.pool.stream(&model, request).await?;
    let dialect = responses::ResponseStream::new(frame);
    let response = stream::sse_response(state, tokens, dialect, model, started);
    Ok(budget_warning(response, budget, &handle))
}

/// Start `request` on the pool and answer with its SSE stream.
async fn stream_response(
    state: Arc<AppState>,
    request: GenerationRequest,
    mut chunks: Chunks,
    include_usage: bool,
    started: Instant,
) -> Result<Response, ApiError> {
    let budget = request.reasoning_budget.is_some();
    let (handle, tokens) = state.pool.stream(&chunks.model, request).await?;
    chunks.include_usage = include_usage;
    let model = chunks.model.clone();
    let response = stream::sse_response(state, tokens, chunks, model, started);
    Ok(budget_warning(response, budget, &handle))
}

/// The response, with an `x-minerva-warning` header when the request set a thinking budget and
/// the model does not reason (its template marks no reasoning): the budget changed nothing, the
/// same on every dialect.
fn budget_warning(mut response: Response, budget: bool, handle: &ModelHandle) -> Response {
    let descriptor = handle.model().descriptor();
    if budget && !descriptor.reasoning_format.is_some() {
        let warning = format!(
            "thinking budget ignored: model `{}` does not reason (its chat template marks no \
             reasoning)",
            descriptor.id
        );
        if let Ok(value) = axum::http::HeaderValue::from_str(&warning) {
            response.headers_mut().insert("x-minerva-warning", value);
        }
    }
    response
}

/// Builds the stream chunks of one response, chat or text completion.
pub(crate) struct Chunks {
    id: String,
    model: String,
    created: u64,
    chat: bool,
    /// Choices per prompt.
    n: u32,
    /// Whether chunks carry log-probabilities.
    logprobs: bool,
    /// Text offset of each choice so far (text completions' log-probabilities).
    offsets: Vec<usize>,
    /// Tool calls of each choice so far.
    calls: Vec<usize>,
    /// Whether the stream ends with a usage chunk.
    include_usage: bool,
}

impl Chunks {
    pub(crate) fn new(prefix: &str, model: &str, chat: bool, request: &GenerationRequest) -> Self {
        Chunks {
            id: new_id(prefix),
            model: model.to_string(),
            created: now(),
            chat,
            n: request.n,
            logprobs: request.logprobs.is_some(),
            offsets: vec![0; request.n as usize],
            calls: vec![0; request.n as usize],
            include_usage: false,
        }
    }

    fn object(&self) -> &'static str {
        if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        }
    }

    fn wrap(&self, choices: Value) -> Value {
        json!({"id": self.id, "object": self.object(), "created": self.created, "model": self.model, "choices": choices})
    }

    fn choice(
        &self,
        index: u32,
        text: Option<&str>,
        logprobs: Value,
        finish: Option<&str>,
        role: bool,
    ) -> Value {
        if self.chat {
            let mut delta = serde_json::Map::new();
            if role {
                delta.insert("role".into(), "assistant".into());
            }
            if let Some(t) = text {
                delta.insert("content".into(), t.into());
            }
            self.wrap(
                json!([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]),
            )
        } else {
            self.wrap(json!([{"index": index, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": finish}]))
        }
    }

    /// The opening chunks (chat only: each choice announces the assistant role).
    fn first(&self) -> Vec<Value> {
        match self.chat {
            true => (0..self.n)
                .map(|i| self.choice(i, Some(""), Value::Null, None, true))
                .collect(),
            false => Vec::new(),
        }
    }

    fn delta_chunk(&mut self, choice: u32, text: &str, logprobs: &[TokenLogprob]) -> Value {
        let logprobs = match (self.logprobs, self.chat) {
            (false, _) => Value::Null,
            (true, true) => openai::chat_logprobs(logprobs),
            (true, false) => match self.offsets.get_mut(choice as usize) {
                Some(offset) => openai::completion_logprobs(logprobs, offset),
                None => Value::Null,
            },
        };
        self.choice(choice, Some(text), logprobs, None, false)
    }

    /// A chunk with reasoning text, under both names clients read (`reasoning_content`, as
    /// DeepSeek's API and llama-server send it, and `reasoning`, as vLLM and OpenRouter do).
    fn reasoning_chunk(&self, choice: u32, text: &str) -> Value {
        let delta = json!({"reasoning_content": text, "reasoning": text});
        self.wrap(
            json!([{"index": choice, "delta": delta, "logprobs": null, "finish_reason": null}]),
        )
    }

    /// A chunk with one complete tool call (its arguments in one piece).
    fn tool_call_chunk(&mut self, choice: u32, call: &ToolCall) -> Value {
        let i = choice as usize;
        if self.calls.len() <= i {
            self.calls.resize(i + 1, 0);
        }
        let index = self.calls[i];
        self.calls[i] += 1;
        let delta = json!({"tool_calls": [openai::tool_call(call, Some(index))]});
        self.wrap(
            json!([{"index": choice, "delta": delta, "logprobs": null, "finish_reason": null}]),
        )
    }

    fn finish(&self, choice: u32, reason: &str) -> Value {
        self.choice(choice, None, Value::Null, Some(reason), false)
    }

    fn usage(&self, usage: Value) -> Value {
        let mut v = self.wrap(json!([]));
        v["usage"] = usage;
        v
    }
}

/// A body that could not be read: too large (413) or broken.
pub(crate) fn body_error(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    let code = if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        "request_too_large"
    } else {
        "invalid_body"
    };
    ApiError::status(status, rejection.body_text(), code)
}

/// One SSE data event.
fn data(v: Value) -> Event {
    Event::default().data(v.to_string())
}

/// The end of an OpenAI stream.
fn done_event() -> Event {
    Event::default().data("[DONE]")
}

/// Chat and text completions: a chunk per delta, a finish chunk per choice, the usage chunk if
/// asked, then `[DONE]`; an error mid-stream is an error chunk.
impl StreamDialect for Chunks {
    type Frame = Event;

    fn endpoint(&self) -> &'static str {
        match self.chat {
            true => "chat",
            false => "completion",
        }
    }

    fn choices(&self) -> u32 {
        self.n
    }

    fn opening(&mut self) -> Vec<Event> {
        self.first().into_iter().map(data).collect()
    }

    fn reasoning(&mut self, choice: u32, text: &str) -> Vec<Event> {
        // A text completion has no place for reasoning (it is never split there).
        match self.chat {
            true => vec![data(self.reasoning_chunk(choice, text))],
            false => Vec::new(),
        }
    }

    fn delta(&mut self, choice: u32, text: &str, logprobs: &[TokenLogprob]) -> Vec<Event> {
        vec![data(self.delta_chunk(choice, text, logprobs))]
    }

    fn tool_call(&mut self, choice: u32, call: ToolCall) -> Vec<Event> {
        vec![data(self.tool_call_chunk(choice, &call))]
    }

    fn choice_done(
        &mut self,
        choice: u32,
        reason: FinishReason,
        _stop_sequence: Option<&str>,
        _usage: &Usage,
    ) -> Vec<Event> {
        vec![data(self.finish(choice, openai::finish_reason(reason)))]
    }

    fn closing(&mut self, usage: &Usage) -> Vec<Event> {
        let mut events = Vec::new();
        if self.include_usage {
            events.push(data(self.usage(openai::usage(usage))));
        }
        events.push(done_event());
        events
    }

    fn error(&mut self, error: &ApiError) -> Vec<Event> {
        vec![data(error.body()), done_event()]
    }

    fn cut_short(&mut self) -> Vec<Event> {
        vec![done_event()]
    }
}

/// `POST /api/chat` (Ollama).
pub async fn ollama_chat(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let body = body.map_err(body_error)?;
    let req: ollama::ChatRequest = ollama::parse(&body)?;
    let request = req.to_request()?;
    let (show, streams) = (req.shows_thinking(), req.streams());
    ollama_answer(state, req.model, request, true, streams, show).await
}

/// `POST /api/generate` (Ollama).
pub async fn ollama_generate(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let body = body.map_err(body_error)?;
    let req: ollama::GenerateRequest = ollama::parse(&body)?;
    let request = req.to_request()?;
    let (show, streams) = (req.shows_thinking(), req.streams());
    ollama_answer(state, req.model, request, false, streams, show).await
}

/// An Ollama answer, streamed as JSON lines or whole.
async fn ollama_answer(
    state: Arc<AppState>,
    model: String,
    request: GenerationRequest,
    chat: bool,
    streams: bool,
    show_thinking: bool,
) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let dialect = ollama::OllamaStream::new(&model, chat, show_thinking, started);
    if !streams {
        // Collected here rather than generated whole, for the first token's time (Ollama
        // reports prompt and generation durations apart).
        let (_, tokens) = state.pool.stream(&model, request).await?;
        let first = Arc::new(std::sync::OnceLock::new());
        let seen = Arc::clone(&first);
        let tokens = Box::pin(futures::StreamExt::inspect(tokens, move |_| {
            let _ = seen.set(started.elapsed());
        }));
        let completion = minerva_runtime::backend::collect(tokens).await?;
        let first = first.get().copied();
        finished(
            &state,
            dialect.endpoint(),
            &model,
            &completion.usage,
            first,
            started,
        );
        let answer = ollama::response(&model, &completion, chat, show_thinking, started, first);
        return Ok(Json(answer).into_response());
    }
    let (_, tokens) = state.pool.stream(&model, request).await?;
    Ok(stream::ndjson_response(
        state, tokens, dialect, model, started,
    ))
}

/// `POST /api/embed` (Ollama): `{"embeddings": [[...]]}`; `/api/embeddings` (its older form):
/// `{"embedding": [...]}` of one `prompt`.
pub async fn ollama_embed(
    State(state): State<Arc<AppState>>,
    uri: axum::http::Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let body = body.map_err(body_error)?;
    let req: ollama::EmbedRequest = ollama::parse(&body)?;
    let started = Instant::now();
    let embeddings = state.pool.embed(&req.model, req.inputs()?).await?;
    let answer = match uri.path() {
        "/api/embeddings" => json!({"embedding": embeddings.vectors.first()}),
        _ => json!({
            "model": req.model,
            "embeddings": embeddings.vectors,
            "total_duration": started.elapsed().as_nanos() as u64,
            "load_duration": 0,
            "prompt_eval_count": embeddings.prompt_tokens,
        }),
    };
    Ok(Json(answer).into_response())
}

/// `GET /api/version` (Ollama).
pub async fn ollama_version() -> Json<Value> {
    Json(json!({"version": ollama::VERSION}))
}

/// What Ollama says of a model (`details`), from what detection found.
fn ollama_details(info: &minerva_runtime::ModelInfo) -> Value {
    let family = info.architecture.clone().unwrap_or_default();
    json!({
        "parent_model": "",
        "format": info.format.to_string(),
        "family": family,
        "families": [family],
        "parameter_size": match info.parameter_count {
            n if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
            n => format!("{:.1}M", n as f64 / 1e6),
        },
        "quantization_level": info.quantization.clone().unwrap_or_default(),
    })
}

/// When a model's file or directory last changed (RFC 3339), as Ollama lists it.
fn modified_at(path: &std::path::Path) -> String {
    let modified = std::fs::metadata(path).and_then(|m| m.modified());
    modified.map_or_else(
        |_| "1970-01-01T00:00:00Z".to_string(),
        |time| chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339(),
    )
}

/// `GET /api/tags` (Ollama): the configured models (`ps`: the loaded ones, `/api/ps`).
pub async fn ollama_models(
    State(state): State<Arc<AppState>>,
    uri: axum::http::Uri,
) -> Json<Value> {
    let loaded_only = uri.path() == "/api/ps";
    let statuses = state.pool.statuses();
    let models: Vec<Value> = state
        .pool
        .runtime()
        .catalog()
        .into_iter()
        .filter_map(|m| {
            let status = statuses.get(&m.id);
            let loaded = status.is_some_and(|s| s.loaded);
            if loaded_only && !loaded {
                return None;
            }
            let info = m.inspection.ok()?;
            let size = info.memory_estimate.total();
            let mut entry = json!({
                "name": m.id, "model": m.id,
                "modified_at": modified_at(&info.info.path),
                "size": disk_bytes(&info.info.path).unwrap_or(info.info.weight_bytes),
                "digest": format!("{:x}", info.info.weight_bytes),
                "details": ollama_details(&info.info),
            });
            if loaded_only {
                let expires = status.and_then(|s| s.expires_in_s).map_or_else(
                    || "0001-01-01T00:00:00Z".to_string(),
                    |s| {
                        (chrono::Utc::now() + chrono::Duration::seconds(s as i64))
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    },
                );
                entry["size"] = json!(size);
                entry["size_vram"] = json!(0);
                entry["expires_at"] = json!(expires);
            }
            Some(entry)
        })
        .collect();
    Json(json!({"models": models}))
}

/// `POST /api/show` (Ollama): details, capabilities, template and parameters of a model.
pub async fn ollama_show(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let body = body.map_err(body_error)?;
    let req: ollama::ShowRequest = ollama::parse(&body)?;
    let handle = state.pool.get(&req.model).await?;
    let entry = state
        .pool
        .runtime()
        .catalog()
        .into_iter()
        .find(|m| m.id == req.model);
    let info = entry.and_then(|m| m.inspection.ok());
    let descriptor = handle.model().descriptor();
    let mut capabilities = vec!["completion"];
    if descriptor.has_chat_template {
        capabilities.push("tools");
    }
    if descriptor.reasoning_format.is_some() {
        capabilities.push("thinking");
    }
    let details = info.as_ref().map(|i| ollama_details(&i.info));
    Ok(Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": details,
        "model_info": {
            "general.architecture": info.as_ref().and_then(|i| i.info.architecture.clone()),
            "general.parameter_count": info.as_ref().map(|i| i.info.parameter_count),
            "context_length": descriptor.context_size,
        },
        "capabilities": capabilities,
    }))
    .into_response())
}

/// Ollama's other routes (`copy`, `create`, `push`, blobs): 501 naming them. Models here are
/// Hugging Face repos in its cache, named by their reference: there is no registry of our own
/// to copy, create or push into.
pub async fn ollama_unsupported(Path(route): Path<String>) -> OllamaError {
    OllamaError(ApiError::status(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        format!(
            "/api/{route} is not supported: models here are Hugging Face repos in its cache, \
             named by their reference (`org/name:QUANT`); pull and delete manage them"
        ),
        "not_implemented",
    ))
}
