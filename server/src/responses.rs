//! OpenAI's Responses API (`POST /v1/responses`), stateless: text or message items in, one
//! assistant message out, streamed as `response.*` events. Structured output through
//! `text.format`. Function tools and `previous_response_id` are refused by name for now.

use std::collections::BTreeMap;

use axum::response::sse::Event;
use minerva_runtime::{
    ChatMessage, Completion, Constraint, FinishReason, GenerationRequest, Input, Role,
    SamplingParams, Usage,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;

/// Fields OpenAI defines that this server does not honour yet.
const UNSUPPORTED_FIELDS: &[&str] = &[
    "tools",
    "tool_choice",
    "previous_response_id",
    "conversation",
    "reasoning",
    "top_logprobs",
    "prompt",
    "background",
];

/// Fields accepted and ignored: they do not change the generated text (nothing is stored).
const IGNORED_FIELDS: &[&str] = &[
    "store",
    "metadata",
    "user",
    "service_tier",
    "include",
    "truncation",
    "parallel_tool_calls",
    "safety_identifier",
    "prompt_cache_key",
];

/// A `POST /v1/responses` body.
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    /// Model id.
    pub model: String,
    input: InputValue,
    instructions: Option<String>,
    max_output_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    /// Stream `response.*` events.
    #[serde(default)]
    pub stream: bool,
    text: Option<TextOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InputValue {
    Text(String),
    Items(Vec<Item>),
}

/// An input item: a message (`type` absent or `message`).
#[derive(Debug, Deserialize)]
struct Item {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    content: Option<ItemContent>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ItemContent {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

/// `text`: the output's format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextOptions {
    format: Option<TextFormat>,
    verbosity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TextFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Option<Value>,
        #[serde(flatten)]
        others: BTreeMap<String, Value>,
    },
}

impl ResponsesRequest {
    const FIELDS: &'static [&'static str] = &[
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "stream",
        "text",
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
            if key == "previous_response_id" {
                return Err(ApiError::invalid(
                    "`previous_response_id` needs stored responses, and this server stores none: \
                     send the whole conversation in `input`",
                    Some(key),
                ));
            }
            if UNSUPPORTED_FIELDS.contains(&key) {
                return Err(ApiError::unsupported(key));
            }
            if !Self::FIELDS.contains(&key) && !IGNORED_FIELDS.contains(&key) {
                return Err(ApiError::invalid(
                    format!("unknown parameter: '{key}'"),
                    Some(key),
                ));
            }
        }
        crate::openai::typed(&value)
    }

    /// The runtime request.
    pub fn to_request(&self) -> Result<GenerationRequest, ApiError> {
        let mut messages = Vec::new();
        if let Some(instructions) = &self.instructions {
            messages.push(ChatMessage::new(Role::System, instructions.clone()));
        }
        match &self.input {
            InputValue::Text(text) => messages.push(ChatMessage::new(Role::User, text.clone())),
            InputValue::Items(items) => {
                for (i, item) in items.iter().enumerate() {
                    messages.push(item.message(i)?);
                }
            }
        }
        if messages.iter().all(|m| m.role == Role::System) {
            return Err(ApiError::invalid("`input` has no message", Some("input")));
        }
        let mut request = GenerationRequest::new(Input::Chat(messages));
        if self.max_output_tokens == Some(0) {
            return Err(ApiError::invalid(
                "`max_output_tokens` must be at least 1",
                Some("max_output_tokens"),
            ));
        }
        request.max_tokens = self.max_output_tokens;
        request.sampling = SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            ..Default::default()
        };
        request.constraint = self.constraint()?;
        Ok(request)
    }

    fn constraint(&self) -> Result<Option<Constraint>, ApiError> {
        let param = Some("text.format");
        let Some(text) = &self.text else {
            return Ok(None);
        };
        if let Some(v) = text.verbosity.as_deref().filter(|v| *v != "medium") {
            return Err(ApiError::invalid(
                format!("`text.verbosity` = `{v}` is not supported by this server yet"),
                Some("text.verbosity"),
            ));
        }
        Ok(match &text.format {
            None | Some(TextFormat::Text) => None,
            Some(TextFormat::JsonObject) => Some(Constraint::JsonObject),
            Some(TextFormat::JsonSchema {
                name,
                schema,
                others,
            }) => {
                if name.is_empty() {
                    return Err(ApiError::invalid("`text.format.name` is required", param));
                }
                if let Some(key) = others
                    .keys()
                    .find(|k| !["description", "strict"].contains(&k.as_str()))
                {
                    return Err(ApiError::invalid(
                        format!("unknown parameter: 'text.format.{key}'"),
                        param,
                    ));
                }
                Some(Constraint::JsonSchema(
                    schema.clone().unwrap_or_else(|| json!({})),
                ))
            }
        })
    }
}

impl Item {
    fn message(&self, i: usize) -> Result<ChatMessage, ApiError> {
        let field = format!("input[{i}]");
        match self.kind.as_deref() {
            None | Some("message") => {}
            Some(other) => {
                return Err(ApiError::invalid(
                    format!("{field}: `{other}` items are not supported by this server yet"),
                    Some("input"),
                ))
            }
        }
        let role = match self.role.as_deref() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("system") | Some("developer") => Role::System,
            other => {
                return Err(ApiError::invalid(
                    format!(
                    "{field}.role: expected user, assistant, system or developer, got {other:?}"
                ),
                    Some("input"),
                ))
            }
        };
        let text = match &self.content {
            Some(ItemContent::Text(text)) => text.clone(),
            Some(ItemContent::Parts(parts)) => parts
                .iter()
                .map(|p| match (p.kind.as_str(), &p.text) {
                    ("input_text" | "output_text" | "text", Some(text)) => Ok(text.as_str()),
                    (kind, _) => Err(ApiError::invalid(
                        format!(
                            "{field}.content: `{kind}` parts are not supported by this server yet"
                        ),
                        Some("input"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join("\n"),
            None => {
                return Err(ApiError::invalid(
                    format!("{field}.content is required"),
                    Some("input"),
                ))
            }
        };
        Ok(ChatMessage::new(role, text))
    }
}

/// What the response object's fields are built from (owned, so that a stream can keep it).
pub struct ResponseFrame {
    id: String,
    item_id: String,
    model: String,
    created_at: u64,
    /// The request's fields the response echoes.
    echo: Value,
}

impl ResponseFrame {
    /// The frame of a response to `request`, created at `created_at` (Unix seconds).
    pub fn new(request: &ResponsesRequest, created_at: u64) -> Self {
        let format = match request.text.as_ref().and_then(|t| t.format.as_ref()) {
            Some(TextFormat::JsonObject) => "json_object",
            Some(TextFormat::JsonSchema { .. }) => "json_schema",
            _ => "text",
        };
        ResponseFrame {
            id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
            item_id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            model: request.model.clone(),
            created_at,
            echo: json!({
                "instructions": request.instructions,
                "max_output_tokens": request.max_output_tokens,
                "temperature": request.temperature,
                "top_p": request.top_p,
                "text": {"format": {"type": format}},
            }),
        }
    }

    /// The response object: `in_progress` without an outcome, else `completed` or `incomplete`.
    pub fn object(&self, outcome: Option<(&str, FinishReason, &Usage)>) -> Value {
        let (status, output, incomplete, usage) = match outcome {
            None => ("in_progress", json!([]), Value::Null, Value::Null),
            Some((text, reason, u)) => {
                let (status, incomplete) = match reason {
                    FinishReason::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
                    FinishReason::Stop | FinishReason::ToolCalls => ("completed", Value::Null),
                };
                (
                    status,
                    json!([self.message(text, status)]),
                    incomplete,
                    json!({
                        "input_tokens": u.prompt_tokens,
                        "input_tokens_details": {"cached_tokens": u.cached_tokens},
                        "output_tokens": u.completion_tokens,
                        "output_tokens_details": {"reasoning_tokens": 0},
                        "total_tokens": u.total_tokens(),
                    }),
                )
            }
        };
        let mut object = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": incomplete,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": false,
            "tool_choice": "none",
            "tools": [],
            "truncation": "disabled",
            "store": false,
            "metadata": {},
            "usage": usage,
        });
        if let (Some(object), Some(echo)) = (object.as_object_mut(), self.echo.as_object()) {
            object.extend(echo.clone());
        }
        object
    }

    /// The output message item.
    pub fn message(&self, text: &str, status: &str) -> Value {
        json!({
            "type": "message",
            "id": self.item_id,
            "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        })
    }
}

/// The response to a whole (non-streamed) request.
pub fn response(frame: &ResponseFrame, completion: &Completion) -> Value {
    let choice = &completion.choices[0];
    frame.object(Some((
        &choice.text,
        choice.finish_reason,
        &completion.usage,
    )))
}

/// Numbers a stream's events.
pub struct EventSequence(u64);

impl EventSequence {
    /// Number 0 next.
    pub fn new() -> Self {
        EventSequence(0)
    }

    /// An event of `kind` with `fields` (plus `type` and `sequence_number`).
    pub fn event(&mut self, kind: &str, mut fields: Value) -> Event {
        if let Some(map) = fields.as_object_mut() {
            map.insert("type".into(), json!(kind));
            map.insert("sequence_number".into(), json!(self.0));
        }
        self.0 += 1;
        Event::default().event(kind).data(fields.to_string())
    }

    /// `response.created`, `response.in_progress`, the message item and its text part.
    pub fn opening(&mut self, frame: &ResponseFrame) -> Vec<Event> {
        let pending = frame.object(None);
        vec![
            self.event("response.created", json!({"response": pending})),
            self.event("response.in_progress", json!({"response": pending})),
            self.event(
                "response.output_item.added",
                json!({"output_index": 0, "item": {
                    "type": "message", "id": frame.item_id, "status": "in_progress",
                    "role": "assistant", "content": [],
                }}),
            ),
            self.event(
                "response.content_part.added",
                json!({"item_id": frame.item_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            ),
        ]
    }

    /// One `response.output_text.delta`.
    pub fn delta(&mut self, frame: &ResponseFrame, text: &str) -> Event {
        self.event(
            "response.output_text.delta",
            json!({"item_id": frame.item_id, "output_index": 0, "content_index": 0,
                   "delta": text, "logprobs": []}),
        )
    }

    /// The closing events: text, part and item done, then `response.completed` (or
    /// `response.incomplete` when the token limit ended it).
    pub fn closing(
        &mut self,
        frame: &ResponseFrame,
        text: &str,
        reason: FinishReason,
        usage: &Usage,
    ) -> Vec<Event> {
        let whole = frame.object(Some((text, reason, usage)));
        let status = whole["status"].as_str().unwrap_or("completed").to_string();
        let last = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        vec![
            self.event(
                "response.output_text.done",
                json!({"item_id": frame.item_id, "output_index": 0, "content_index": 0,
                       "text": text, "logprobs": []}),
            ),
            self.event(
                "response.content_part.done",
                json!({"item_id": frame.item_id, "output_index": 0, "content_index": 0,
                       "part": {"type": "output_text", "text": text, "annotations": []}}),
            ),
            self.event(
                "response.output_item.done",
                json!({"output_index": 0, "item": frame.message(text, &status)}),
            ),
            self.event(last, json!({"response": whole})),
        ]
    }

    /// An `error` event.
    pub fn error(&mut self, error: &ApiError) -> Event {
        let body = error.body();
        self.event(
            "error",
            json!({"code": body["error"]["code"], "message": body["error"]["message"],
                   "param": body["error"]["param"]}),
        )
    }
}
