//! Anthropic's Messages API (`POST /v1/messages`): request and response shapes, the streamed
//! event sequence, structured output (`output_config.format`), and errors in Anthropic's shape.
//! Client tools (`tools`, `tool_choice`, `tool_use` and `tool_result` blocks) go through the
//! runtime's tool calling; image and document blocks and server tools are refused by name.

use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use minerva_runtime::{
    ChatMessage, Completion, FinishReason, GenerationRequest, Input, Role, SamplingParams,
    TokenLogprob, ToolCall, ToolChoice, Usage,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::convert;
use crate::error::ApiError;
use crate::openai::{checked_body, typed, Fields};
use crate::stream::StreamDialect;

/// Fields Anthropic defines that this server does not honour yet.
const UNSUPPORTED_FIELDS: &[&str] = &["container", "mcp_servers"];

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
    tools: Option<Vec<InTool>>,
    tool_choice: Option<InToolChoice>,
    thinking: Option<Thinking>,
}

/// `thinking`: whether the model reasons before answering (where its template can switch it),
/// and at most how many tokens it spends on it.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Thinking {
    Enabled { budget_tokens: u32 },
    Disabled,
}

/// A client tool: `{"name", "description", "input_schema"}` (server tools, which have a
/// `type`, are refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InTool {
    name: String,
    description: Option<String>,
    input_schema: Value,
    #[serde(rename = "cache_control")]
    _cache_control: Option<Value>,
}

/// `tool_choice`: `{"type": "auto" | "any" | "tool" | "none", "name", "disable_parallel_tool_use"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InToolChoice {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    disable_parallel_tool_use: Option<bool>,
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
        "tools",
        "tool_choice",
        "thinking",
    ];

    /// Parse a body, naming unknown or unsupported fields.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value = checked_body(
            body,
            &Fields {
                read: &[Self::FIELDS],
                ignored: IGNORED_FIELDS,
                unsupported: UNSUPPORTED_FIELDS,
                explained: &[],
            },
        )?;
        typed(&value)
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
            let field = format!("messages.{i}.content");
            match m.role.as_str() {
                "user" => m.content.user_messages(&field, &mut messages)?,
                "assistant" => messages.push(m.content.assistant_message(&field)?),
                other => {
                    return Err(ApiError::invalid(
                        format!("messages.{i}.role: must be `user` or `assistant`, got `{other}`"),
                        Some("messages"),
                    ))
                }
            }
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
            let none: [&String; 0] = [];
            request.constraint = Some(convert::json_schema(
                "output_config",
                "output_config.format",
                None,
                Some(schema),
                none,
            )?);
        }
        request.tools = self
            .tools
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, t)| {
                convert::tool(
                    &format!("tools.{i}"),
                    &t.name,
                    t.description.as_deref(),
                    Some(&t.input_schema),
                    "name",
                    "input_schema",
                )
            })
            .collect::<Result<_, _>>()?;
        if let Some(choice) = &self.tool_choice {
            request.tool_choice = match (choice.kind.as_str(), &choice.name) {
                ("auto", _) => ToolChoice::Auto,
                ("any", _) => ToolChoice::Required,
                ("none", _) => ToolChoice::None,
                ("tool", Some(name)) => ToolChoice::Function(name.clone()),
                (kind, _) => {
                    return Err(ApiError::invalid(
                        format!(
                        "tool_choice: `{kind}` needs to be auto, any, tool (with a name) or none"
                    ),
                        Some("tool_choice"),
                    ))
                }
            };
            request.parallel_tool_calls = !choice.disable_parallel_tool_use.unwrap_or(false);
        }
        if let Some(thinking) = &self.thinking {
            let enabled = matches!(thinking, Thinking::Enabled { .. });
            for switch in ["enable_thinking", "thinking"] {
                request
                    .chat_template_kwargs
                    .insert(switch.into(), json!(enabled));
            }
            if let Thinking::Enabled { budget_tokens } = thinking {
                if *budget_tokens >= self.max_tokens {
                    return Err(ApiError::invalid(
                        "thinking.budget_tokens: must be less than max_tokens",
                        Some("thinking.budget_tokens"),
                    ));
                }
                request.reasoning_budget = Some(*budget_tokens);
            }
        }
        Ok(request)
    }

    /// Whether the answer shows the model's thinking (unless the request turned it off).
    pub fn shows_thinking(&self) -> bool {
        !matches!(self.thinking, Some(Thinking::Disabled))
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

/// One content block: `text`, `tool_use` (assistant) or `tool_result` (user).
#[derive(Debug, Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    id: Option<String>,
    name: Option<String>,
    input: Option<Value>,
    tool_use_id: Option<String>,
    content: Option<Value>,
    is_error: Option<bool>,
    thinking: Option<String>,
}

impl Text {
    /// The text of every block, joined; other block types are refused, naming `field`.
    fn joined(&self, field: &str) -> Result<String, ApiError> {
        match self {
            Text::Plain(text) => Ok(text.clone()),
            Text::Blocks(blocks) => blocks
                .iter()
                .map(|b| b.text(field))
                .collect::<Result<Vec<_>, _>>()
                .map(convert::join_parts),
        }
    }

    /// A user turn: one tool message per `tool_result` block, then the text, if any.
    fn user_messages(&self, field: &str, out: &mut Vec<ChatMessage>) -> Result<(), ApiError> {
        let Text::Blocks(blocks) = self else {
            out.push(ChatMessage::new(Role::User, self.joined(field)?));
            return Ok(());
        };
        let mut text = Vec::new();
        for b in blocks {
            if b.kind != "tool_result" {
                text.push(b.text(field)?);
                continue;
            }
            let id = b.tool_use_id.clone().ok_or_else(|| {
                ApiError::invalid(
                    format!("{field}: a tool_result block needs `tool_use_id`"),
                    Some(field),
                )
            })?;
            let mut result = match &b.content {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(blocks) => serde_json::from_value::<Text>(blocks.clone())
                    .map_err(|e| ApiError::invalid(format!("{field}: {e}"), Some(field)))?
                    .joined(field)?,
            };
            if b.is_error == Some(true) {
                result = format!("Error: {result}");
            }
            let mut message = ChatMessage::new(Role::Tool, result);
            message.tool_call_id = Some(id);
            out.push(message);
        }
        if !text.is_empty() {
            out.push(ChatMessage::new(Role::User, convert::join_parts(text)));
        }
        Ok(())
    }

    /// An assistant turn: its text and its `tool_use` blocks as calls.
    fn assistant_message(&self, field: &str) -> Result<ChatMessage, ApiError> {
        let Text::Blocks(blocks) = self else {
            return Ok(ChatMessage::new(Role::Assistant, self.joined(field)?));
        };
        let mut text = Vec::new();
        let mut calls = Vec::new();
        let mut reasoning = Vec::new();
        for b in blocks {
            match (b.kind.as_str(), &b.thinking) {
                ("tool_use", _) => {}
                ("thinking", Some(thinking)) => {
                    reasoning.push(thinking.as_str());
                    continue;
                }
                ("redacted_thinking", _) => continue,
                _ => {
                    text.push(b.text(field)?);
                    continue;
                }
            }
            let (Some(id), Some(name)) = (&b.id, &b.name) else {
                return Err(ApiError::invalid(
                    format!("{field}: a tool_use block needs `id` and `name`"),
                    Some(field),
                ));
            };
            calls.push(ToolCall {
                id: id.clone(),
                name: name.clone(),
                arguments: b.input.clone().unwrap_or_else(|| json!({})).to_string(),
            });
        }
        let mut message = ChatMessage::new(Role::Assistant, convert::join_parts(text));
        message.tool_calls = calls;
        if !reasoning.is_empty() {
            message.reasoning = Some(reasoning.concat());
        }
        Ok(message)
    }
}

impl Block {
    fn text<'a>(&'a self, field: &str) -> Result<&'a str, ApiError> {
        match (self.kind.as_str(), &self.text) {
            ("text", Some(text)) => Ok(text),
            ("text", None) => Err(ApiError::invalid(
                format!("{field}: a text block needs `text`"),
                Some(field),
            )),
            (other, _) => Err(ApiError::invalid(
                format!("{field}: `{other}` blocks are not supported here"),
                Some(field),
            )),
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
pub fn message_response(
    id: &str,
    model: &str,
    completion: &Completion,
    show_thinking: bool,
) -> Value {
    let choice = &completion.choices[0];
    let (stop_reason, stop_sequence) = stop(choice.finish_reason, choice.stop_sequence.as_deref());
    let mut content = Vec::new();
    if show_thinking && !choice.reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": choice.reasoning, "signature": ""}));
    }
    if !choice.text.is_empty() || choice.tool_calls.is_empty() {
        content.push(json!({"type": "text", "text": choice.text}));
    }
    content.extend(choice.tool_calls.iter().map(|c| tool_use(c, true)));
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage(&completion.usage),
    })
}

/// A `tool_use` block (its input empty when it streams as deltas).
fn tool_use(call: &ToolCall, with_input: bool) -> Value {
    let input = match with_input {
        true => serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({})),
        false => json!({}),
    };
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
}

fn event(kind: &str, data: Value) -> Event {
    Event::default().event(kind).data(data.to_string())
}

/// The events before the first block: `message_start`, `ping`.
fn opening_events(id: &str, model: &str) -> Vec<Event> {
    vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ),
        event("ping", json!({"type": "ping"})),
    ]
}

/// A streamed block that takes deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
}

/// A streamed message: its events, and where it is (the block open now, thinking or text, and
/// the next block's index).
pub struct MessageStream {
    id: String,
    model: String,
    /// Whether thinking is shown (unless the request turned it off).
    show_thinking: bool,
    open: Option<Open>,
    next: u32,
}

impl StreamDialect for MessageStream {
    type Frame = Event;

    fn endpoint(&self) -> &'static str {
        "messages"
    }

    fn opening(&mut self) -> Vec<Event> {
        opening_events(&self.id, &self.model)
    }

    fn reasoning(&mut self, _choice: u32, text: &str) -> Vec<Event> {
        match self.show_thinking {
            true => self.thinking(text),
            false => Vec::new(),
        }
    }

    fn delta(&mut self, _choice: u32, text: &str, _logprobs: &[TokenLogprob]) -> Vec<Event> {
        match text.is_empty() {
            true => Vec::new(),
            false => self.text(text),
        }
    }

    fn tool_call(&mut self, _choice: u32, call: ToolCall) -> Vec<Event> {
        self.tool_use(&call)
    }

    fn choice_done(
        &mut self,
        _choice: u32,
        reason: FinishReason,
        stop_sequence: Option<&str>,
        usage: &Usage,
    ) -> Vec<Event> {
        self.finish_message(reason, stop_sequence, usage)
    }

    fn closing(&mut self, _usage: &Usage) -> Vec<Event> {
        Vec::new()
    }

    fn error(&mut self, error: &ApiError) -> Vec<Event> {
        vec![event("error", error.anthropic_body())]
    }
}

impl MessageStream {
    /// Message `id` of `model`, no block yet.
    pub fn new(id: &str, model: &str, show_thinking: bool) -> Self {
        MessageStream {
            id: id.to_string(),
            model: model.to_string(),
            show_thinking,
            open: None,
            next: 0,
        }
    }

    /// More reasoning: a `thinking_delta` in the thinking block (opened first if needed).
    fn thinking(&mut self, text: &str) -> Vec<Event> {
        let mut events = self.switch_to(Open::Thinking);
        events.push(self.block_delta(json!({"type": "thinking_delta", "thinking": text})));
        events
    }

    /// More answer: a `text_delta` in the text block (opened first if needed).
    fn text(&mut self, text: &str) -> Vec<Event> {
        let mut events = self.switch_to(Open::Text);
        events.push(self.block_delta(json!({"type": "text_delta", "text": text})));
        events
    }

    fn block_delta(&self, delta: Value) -> Event {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.next - 1, "delta": delta}),
        )
    }

    /// Close the open block unless it is `kind`, then open `kind`.
    fn switch_to(&mut self, kind: Open) -> Vec<Event> {
        if self.open == Some(kind) {
            return Vec::new();
        }
        let mut events = self.close();
        let block = match kind {
            Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Open::Text => json!({"type": "text", "text": ""}),
        };
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": self.next, "content_block": block}),
        ));
        self.open = Some(kind);
        self.next += 1;
        events
    }

    /// The open block's stop, if one is open.
    fn close(&mut self) -> Vec<Event> {
        if self.open.take().is_none() {
            return Vec::new();
        }
        vec![event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": self.next - 1}),
        )]
    }

    /// A tool call as its own block: start, its input as one `input_json_delta`, stop.
    fn tool_use(&mut self, call: &ToolCall) -> Vec<Event> {
        let mut events = self.close();
        let index = self.next;
        self.next += 1;
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": tool_use(call, false)}),
        ));
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "input_json_delta", "partial_json": call.arguments}}),
        ));
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        events
    }

    /// The closing events: the open block's stop (an empty text block when the message had
    /// none), `message_delta` (stop reason, usage), `message_stop`.
    fn finish_message(
        &mut self,
        reason: FinishReason,
        stop_sequence: Option<&str>,
        totals: &Usage,
    ) -> Vec<Event> {
        let (stop_reason, stop_sequence) = stop(reason, stop_sequence);
        let mut events = match self.next {
            0 => self.switch_to(Open::Text),
            _ => Vec::new(),
        };
        events.extend(self.close());
        events.push(event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                   "usage": usage(totals)}),
        ));
        events.push(event("message_stop", json!({"type": "message_stop"})));
        events
    }
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
