//! One streaming driver for every dialect: the runtime's events of a generation in, a
//! dialect's server-sent events out. Each dialect says what its events are ([`StreamDialect`]);
//! the driver owns the rest, the same for all: first-token time, the end of each choice and of
//! the whole stream, the usage and metrics, errors mid-stream, and cancellation (the events are
//! made as the HTTP body polls for them, with no task in between, so dropping the body (client
//! gone) drops the token stream, which cancels the generation and frees the model's slot).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use minerva_runtime::{FinishReason, StreamEvent, TokenLogprob, TokenStream, ToolCall, Usage};

use crate::error::ApiError;
use crate::AppState;

/// What a dialect sends for each event of a generation (its frames: SSE events, or JSON lines).
pub trait StreamDialect: Send + 'static {
    /// One unit of the response body.
    type Frame: Send + 'static;

    /// The endpoint's name in logs and metrics.
    fn endpoint(&self) -> &'static str;

    /// How many choices the stream carries (it ends once each has ended).
    fn choices(&self) -> u32 {
        1
    }

    /// The events before any text.
    fn opening(&mut self) -> Vec<Self::Frame>;

    /// More of a choice's reasoning.
    fn reasoning(&mut self, choice: u32, text: &str) -> Vec<Self::Frame>;

    /// More of a choice's answer (never empty), with the log-probabilities of its tokens.
    fn delta(&mut self, choice: u32, text: &str, logprobs: &[TokenLogprob]) -> Vec<Self::Frame>;

    /// A choice's complete tool call.
    fn tool_call(&mut self, choice: u32, call: ToolCall) -> Vec<Self::Frame>;

    /// A choice ended: why, at which stop string, with its own usage.
    fn choice_done(
        &mut self,
        choice: u32,
        reason: FinishReason,
        stop_sequence: Option<&str>,
        usage: &Usage,
    ) -> Vec<Self::Frame>;

    /// Every choice ended; `usage` is the request's.
    fn closing(&mut self, usage: &Usage) -> Vec<Self::Frame>;

    /// The generation failed mid-stream.
    fn error(&mut self, error: &ApiError) -> Vec<Self::Frame>;

    /// The generation stopped without ending every choice (the engine went away).
    fn cut_short(&mut self) -> Vec<Self::Frame> {
        Vec::new()
    }
}

/// The SSE response of `tokens` in `dialect`'s events, for `model` (requested at `started`).
pub fn sse_response(
    state: Arc<AppState>,
    tokens: TokenStream,
    dialect: impl StreamDialect<Frame = Event>,
    model: String,
    started: Instant,
) -> Response {
    sse(frames(state, tokens, dialect, model, started))
}

/// The newline-delimited JSON response of `tokens` in `dialect`'s objects (Ollama's streams).
pub fn ndjson_response(
    state: Arc<AppState>,
    tokens: TokenStream,
    dialect: impl StreamDialect<Frame = serde_json::Value>,
    model: String,
    started: Instant,
) -> Response {
    let lines = frames(state, tokens, dialect, model, started)
        .map(|line| Ok::<_, Infallible>(format!("{line}\n")));
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

/// The frames of `tokens` in `dialect`.
fn frames<D: StreamDialect>(
    state: Arc<AppState>,
    tokens: TokenStream,
    mut dialect: D,
    model: String,
    started: Instant,
) -> impl Stream<Item = D::Frame> + Send + 'static {
    let opening = dialect.opening();
    let progress = Progress {
        state,
        tokens,
        dialect,
        model,
        started,
        first_token: None,
        done: Vec::new(),
    };
    let body = futures::stream::unfold(Some(progress), |progress| async move {
        let mut progress = progress?;
        let (events, more) = progress.next_events().await;
        Some((events, more.then_some(progress)))
    });
    futures::stream::iter(opening).chain(body.flat_map(futures::stream::iter))
}

/// An SSE response of `events`, kept alive while the model thinks.
pub fn sse(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Where a streamed response stands.
struct Progress<D> {
    state: Arc<AppState>,
    tokens: TokenStream,
    dialect: D,
    model: String,
    started: Instant,
    first_token: Option<Duration>,
    /// Usage of the choices that have ended.
    done: Vec<Usage>,
}

impl<D: StreamDialect> Progress<D> {
    /// The events for the next token event, and whether more follow.
    async fn next_events(&mut self) -> (Vec<D::Frame>, bool) {
        let event = match self.tokens.next().await {
            Some(Ok(event)) => event,
            Some(Err(e)) => return (self.dialect.error(&ApiError::from(e)), false),
            None => return (self.dialect.cut_short(), false),
        };
        if !matches!(event, StreamEvent::Done { .. }) {
            self.first_token
                .get_or_insert_with(|| self.started.elapsed());
        }
        match event {
            StreamEvent::Delta {
                choice,
                text,
                logprobs,
            } => match text.is_empty() && logprobs.is_empty() {
                true => (Vec::new(), true),
                false => (self.dialect.delta(choice, &text, &logprobs), true),
            },
            StreamEvent::Reasoning { choice, text } => {
                (self.dialect.reasoning(choice, &text), true)
            }
            StreamEvent::ToolCall { choice, call } => (self.dialect.tool_call(choice, call), true),
            StreamEvent::Done {
                choice,
                finish_reason,
                usage,
                stop_sequence,
            } => {
                let mut events = self.dialect.choice_done(
                    choice,
                    finish_reason,
                    stop_sequence.as_deref(),
                    &usage,
                );
                self.done.push(usage);
                if self.done.len() < self.dialect.choices() as usize {
                    return (events, true);
                }
                let usage = Usage::of_choices(&self.done);
                finished(
                    &self.state,
                    self.dialect.endpoint(),
                    &self.model,
                    &usage,
                    self.first_token,
                    self.started,
                );
                events.extend(self.dialect.closing(&usage));
                (events, false)
            }
        }
    }
}

/// Log one line for a finished generation and record its metrics.
pub fn finished(
    state: &AppState,
    endpoint: &str,
    model: &str,
    usage: &Usage,
    ttft: Option<Duration>,
    started: Instant,
) {
    tracing::info!(
        endpoint,
        model,
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        ttft_ms = ttft.map(|t| t.as_millis() as u64),
        duration_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    state
        .metrics
        .generation(model, usage, ttft, started.elapsed());
}
