//! Anthropic's Messages API (`POST /v1/messages`): request and response shapes, the streamed
//! event sequence, structured output (`output_config.format`), and errors in Anthropic's shape.
//! Text content only for now: tool, image and document blocks and `tools` are refused by name.

use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use minerva_runtime::{
    ChatMessage, Completion, Constraint, FinishReason, GenerationRequest, Input, Role,
    SamplingParams, Usage,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;

/// Fields Anthropic defines that this server does not honour yet.
const UNSUPPORTED_FIELDS: &[&str] = &[
    "tools",
    "tool_choice",
    "thinking",
    "container",
    "mcp_servers",
];

/// Fields accepted and ignored: they do not change the generated text.
const IGNORED_FIELDS: &[&str] = &[
    "metadata",
    "service_tier",
    "cache_control",
    "inference_geo",
    "speed",
    "diagnostics",
    "user_profile_id",
    "workspace_id",
];

/// A `POST /v1/messages` body.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    /// Model id.
    pub model: String,
    max_tokens: u32,
    messages: Vec<InMessage>,
    system: Option<Text>,
    stop_sequences: Option<Vec<String>>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    /// Stream Anthropic's server-sent events.
    #[serde(default)]
    pub stream: bool,
    output_config: Option<OutputConfig>,
}

/// `output_config`: the answer's format (`effort` changes nothing for the models served here).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputConfig {
    format: Option<OutputFormat>,
    #[serde(rename = "effort")]
    _effort: Option<String>,
}

/// `output_config.format`: JSON valid against a schema.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum OutputFormat {
    JsonSchema { schema: Value },
}

impl MessagesRequest {
    const FIELDS: &'static [&'static str] = &[
        "model",
        "max_tokens",
        "messages",
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "stream",
        "output_config",
    ];

    /// Parse a body, naming unknown or unsupported fields.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}"), None))?;
        let Some(map) = value.as_object() else {
            return Err(ApiError::invalid(
                "request body must be a JSON object",
                None,
            ));
        };
        for key in map.keys().map(String::as_str) {
            if UNSUPPORTED_FIELDS.contains(&key) {
                return Err(ApiError::unsupported(key));
            }
            if !Self::FIELDS.contains(&key) && !IGNORED_FIELDS.contains(&key) {
                return Err(ApiError::invalid(
                    format!("{key}: Extra inputs are not permitted"),
                    Some(key),
                ));
            }
        }
        crate::openai::typed(&value)
    }

    /// The runtime request.
    pub fn to_request(&self) -> Result<GenerationRequest, ApiError> {
        if self.max_tokens == 0 {
            return Err(ApiError::invalid(
                "max_tokens: must be at least 1",
                Some("max_tokens"),
            ));
        }
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages: at least one message is required",
                Some("messages"),
            ));
        }
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            messages.push(ChatMessage::new(Role::System, system.joined("system")?));
        }
        for (i, m) in self.messages.iter().enumerate() {
            let role = match m.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(ApiError::invalid(
                        format!("messages.{i}.role: must be `user` or `assistant`, got `{other}`"),
                        Some("messages"),
                    ))
                }
            };
            let field = format!("messages.{i}.content");
            messages.push(ChatMessage::new(role, m.content.joined(&field)?));
        }
        let mut request = GenerationRequest::new(Input::Chat(messages));
        request.max_tokens = Some(self.max_tokens);
        request.stop = self.stop_sequences.clone().unwrap_or_default();
        request.sampling = SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            ..Default::default()
        };
        if let Some(OutputFormat::JsonSchema { schema }) =
            self.output_config.as_ref().and_then(|c| c.format.as_ref())
        {
            request.constraint = Some(Constraint::JsonSchema(schema.clone()));
        }
        Ok(request)
    }
}

/// One message.
#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    content: Text,
}

/// A string, or a list of content blocks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Text {
    Plain(String),
    Blocks(Vec<Block>),
}

/// One content block (`text` is the one supported).
#[derive(Debug, Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

impl Text {
    /// The text of every block, joined; other block types are refused, naming `field`.
    fn joined(&self, field: &str) -> Result<String, ApiError> {
        match self {
            Text::Plain(text) => Ok(text.clone()),
            Text::Blocks(blocks) => blocks
                .iter()
                .map(|b| match (b.kind.as_str(), &b.text) {
                    ("text", Some(text)) => Ok(text.as_str()),
                    ("text", None) => Err(ApiError::invalid(
                        format!("{field}: a text block needs `text`"),
                        Some(field),
                    )),
                    (other, _) => Err(ApiError::invalid(
                        format!("{field}: `{other}` blocks are not supported by this server yet"),
                        Some(field),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|parts| parts.join("\n")),
        }
    }
}

/// `stop_reason` and `stop_sequence` of a finished choice.
fn stop(reason: FinishReason, stop_sequence: Option<&str>) -> (&'static str, Value) {
    match (reason, stop_sequence) {
        (FinishReason::Length, _) => ("max_tokens", Value::Null),
        (FinishReason::Stop, Some(s)) => ("stop_sequence", json!(s)),
        (FinishReason::Stop, None) => ("end_turn", Value::Null),
        (FinishReason::ToolCalls, _) => ("tool_use", Value::Null),
    }
}

/// Anthropic's usage object.
fn usage(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(usage.cached_tokens),
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
        "output_tokens": usage.completion_tokens,
    })
}

/// A whole (non-streamed) answer.
pub fn message_response(id: &str, model: &str, completion: &Completion) -> Value {
    let choice = &completion.choices[0];
    let (stop_reason, stop_sequence) = stop(choice.finish_reason, choice.stop_sequence.as_deref());
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": choice.text}],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage(&completion.usage),
    })
}

fn event(kind: &str, data: Value) -> Event {
    Event::default().event(kind).data(data.to_string())
}

/// The events before the first text: `message_start`, `content_block_start`, `ping`.
pub fn opening_events(id: &str, model: &str) -> Vec<Event> {
    vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ]
}

/// A `content_block_delta` with new text.
pub fn text_event(text: &str) -> Event {
    event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": text}}),
    )
}

/// The closing events: `content_block_stop`, `message_delta` (stop reason, usage),
/// `message_stop`.
pub fn closing_events(
    reason: FinishReason,
    stop_sequence: Option<&str>,
    totals: &Usage,
) -> Vec<Event> {
    let (stop_reason, stop_sequence) = stop(reason, stop_sequence);
    vec![
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                   "usage": usage(totals)}),
        ),
        event("message_stop", json!({"type": "message_stop"})),
    ]
}

/// An `error` event in a stream.
pub fn error_event(error: &ApiError) -> Event {
    event("error", error.anthropic_body())
}

/// An [`ApiError`] answered in Anthropic's shape.
pub struct AnthropicError(pub ApiError);

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> Self {
        AnthropicError(e)
    }
}

impl From<minerva_runtime::Error> for AnthropicError {
    fn from(e: minerva_runtime::Error) -> Self {
        AnthropicError(e.into())
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let status: StatusCode = self.0.status_code();
        let mut response = (status, axum::Json(self.0.anthropic_body())).into_response();
        if let Some(retry) = self.0.retry_after_header() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry);
        }
        response
    }
}
