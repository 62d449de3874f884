//! OpenAI's Responses API (`POST /v1/responses`), stateless: text, message and function-call
//! items in, one assistant message (and its function calls) out, streamed as `response.*`
//! events. Structured output through `text.format`; function tools through the runtime's tool
//! calling. Other tool types and `previous_response_id` (nothing is stored) are refused by name.

use std::collections::BTreeMap;

use axum::response::sse::Event;
use minerva_runtime::{
    ChatMessage, Completion, Constraint, FinishReason, GenerationRequest, Input, Role,
    SamplingParams, TokenLogprob, Tool, ToolCall, ToolChoice, Usage,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::convert;
use crate::error::ApiError;
use crate::openai::{checked_body, tool_choice_mode, typed, Fields};
use crate::stream::StreamDialect;

/// Fields OpenAI defines that this server does not honour yet.
const UNSUPPORTED_FIELDS: &[&str] = &["conversation", "top_logprobs", "prompt", "background"];

/// Fields accepted and ignored: they do not change the generated text (nothing is stored).
const IGNORED_FIELDS: &[&str] = &[
    "store",
    "metadata",
    "user",
    "service_tier",
    "include",
    "truncation",
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
    tools: Option<Vec<InTool>>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    reasoning: Option<ReasoningOptions>,
    /// Most tokens of reasoning (as chat completions' `thinking_budget`).
    #[serde(alias = "max_thinking_tokens")]
    thinking_budget: Option<u32>,
}

/// `reasoning`: the effort (`summary` is accepted; the reasoning itself is returned, not a
/// summary of it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasoningOptions {
    effort: Option<String>,
    #[serde(rename = "summary")]
    _summary: Option<String>,
}

/// A function tool: `{"type": "function", "name", "description", "parameters", "strict"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InTool {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    #[serde(rename = "strict")]
    _strict: Option<bool>,
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
    /// `function_call` and `function_call_output`: the call's id.
    call_id: Option<String>,
    /// `function_call`: the function and its arguments.
    name: Option<String>,
    arguments: Option<String>,
    /// `function_call_output`: the result.
    output: Option<Value>,
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
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning",
        "thinking_budget",
        "max_thinking_tokens",
    ];

    /// Parse a body, naming unknown or unsupported fields.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value = checked_body(
            body,
            &Fields {
                read: &[Self::FIELDS],
                ignored: IGNORED_FIELDS,
                unsupported: UNSUPPORTED_FIELDS,
                explained: &[(
                    "previous_response_id",
                    "`previous_response_id` needs stored responses, and this server stores \
                     none: send the whole conversation in `input`",
                )],
            },
        )?;
        typed(&value)
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
                    item.add_to(i, &mut messages)?;
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
        (request.tools, request.tool_choice) = self.tools()?;
        request.parallel_tool_calls = self.parallel_tool_calls.unwrap_or(true);
        if let Some(effort) = self.reasoning.as_ref().and_then(|r| r.effort.as_deref()) {
            convert::reasoning_effort(effort, "reasoning.effort", &mut request)?;
        }
        request.reasoning_budget = self.thinking_budget;
        Ok(request)
    }

    fn tools(&self) -> Result<(Vec<Tool>, ToolChoice), ApiError> {
        let mut tools = Vec::new();
        for (i, t) in self.tools.iter().flatten().enumerate() {
            if t.kind != "function" {
                return Err(ApiError::invalid(
                    format!(
                        "tools[{i}].type `{}` is not supported by this server (function only)",
                        t.kind
                    ),
                    Some("tools"),
                ));
            }
            tools.push(convert::tool(
                &format!("tools[{i}]"),
                &t.name,
                t.description.as_deref(),
                t.parameters.as_ref(),
                "name",
                "parameters",
            )?);
        }
        let choice = match &self.tool_choice {
            None => ToolChoice::Auto,
            Some(Value::String(mode)) => tool_choice_mode(mode)?,
            Some(named) => match (named["type"].as_str(), named["name"].as_str()) {
                (Some("function"), Some(name)) => ToolChoice::Function(name.to_string()),
                _ => {
                    return Err(ApiError::invalid(
                        "tool_choice must be none, auto, required or {\"type\": \"function\", \"name\"}",
                        Some("tool_choice"),
                    ))
                }
            },
        };
        Ok((tools, choice))
    }

    fn constraint(&self) -> Result<Option<Constraint>, ApiError> {
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
            }) => Some(convert::json_schema(
                "text.format",
                "text.format",
                Some(name),
                schema.as_ref(),
                others.keys(),
            )?),
        })
    }
}

impl Item {
    /// Add this item to the conversation: a message, a call the model made (joined to the
    /// assistant message before it), or a call's output.
    fn add_to(&self, i: usize, messages: &mut Vec<ChatMessage>) -> Result<(), ApiError> {
        let field = format!("input[{i}]");
        let missing =
            |what: &str| ApiError::invalid(format!("{field}.{what} is required"), Some("input"));
        match self.kind.as_deref() {
            None | Some("message") => {
                messages.push(self.message(&field)?);
                Ok(())
            }
            Some("function_call") => {
                let call = ToolCall {
                    id: self.call_id.clone().ok_or_else(|| missing("call_id"))?,
                    name: self.name.clone().ok_or_else(|| missing("name"))?,
                    arguments: self.arguments.clone().unwrap_or_else(|| "{}".into()),
                };
                match messages.last_mut() {
                    Some(last) if last.role == Role::Assistant => last.tool_calls.push(call),
                    _ => {
                        let mut message = ChatMessage::new(Role::Assistant, "");
                        message.tool_calls.push(call);
                        messages.push(message);
                    }
                }
                Ok(())
            }
            Some("function_call_output") => {
                let output = match self.output.as_ref().ok_or_else(|| missing("output"))? {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let mut message = ChatMessage::new(Role::Tool, output);
                message.tool_call_id =
                    Some(self.call_id.clone().ok_or_else(|| missing("call_id"))?);
                messages.push(message);
                Ok(())
            }
            Some(other) => Err(ApiError::invalid(
                format!("{field}: `{other}` items are not supported by this server yet"),
                Some("input"),
            )),
        }
    }

    fn message(&self, field: &str) -> Result<ChatMessage, ApiError> {
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
            Some(ItemContent::Parts(parts)) => convert::join_parts(
                parts
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
                    .collect::<Result<Vec<_>, _>>()?,
            ),
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
    reasoning_id: String,
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
            reasoning_id: format!("rs_{}", uuid::Uuid::new_v4().simple()),
            model: request.model.clone(),
            created_at,
            echo: json!({
                "instructions": request.instructions,
                "max_output_tokens": request.max_output_tokens,
                "temperature": request.temperature,
                "top_p": request.top_p,
                "text": {"format": {"type": format}},
                "parallel_tool_calls": request.parallel_tool_calls.unwrap_or(true),
                "tool_choice": request.tool_choice.clone().unwrap_or_else(|| json!("auto")),
                "tools": request.tools.iter().flatten().map(|t| json!({
                    "type": "function", "name": t.name, "description": t.description,
                    "parameters": t.parameters,
                })).collect::<Vec<_>>(),
            }),
        }
    }

    /// The response object: `in_progress` without an outcome, else `completed` or `incomplete`
    /// with the output message (when it has text, made no calls, or was already announced in a
    /// stream, so that streamed output indices hold) and one `function_call` item per call.
    pub fn object(&self, outcome: Option<Outcome>) -> Value {
        let (status, output, incomplete, usage) = match outcome {
            None => ("in_progress", json!([]), Value::Null, Value::Null),
            Some(Outcome {
                reasoning,
                text,
                reason,
                usage: u,
                calls,
                announced,
            }) => {
                let (status, incomplete) = match reason {
                    FinishReason::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
                    FinishReason::Stop | FinishReason::ToolCalls => ("completed", Value::Null),
                };
                let mut output = Vec::new();
                if !reasoning.is_empty() {
                    output.push(self.reasoning_item(reasoning, "completed"));
                }
                if announced || !text.is_empty() || calls.is_empty() {
                    output.push(self.message(text, status));
                }
                output.extend(calls.iter().map(|c| function_call(c, "completed")));
                (
                    status,
                    Value::Array(output),
                    incomplete,
                    json!({
                        "input_tokens": u.prompt_tokens,
                        "input_tokens_details": {"cached_tokens": u.cached_tokens},
                        "output_tokens": u.completion_tokens,
                        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
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

    /// The reasoning item (its text as `reasoning_text` content, as open models' servers
    /// send it; no summary).
    pub fn reasoning_item(&self, text: &str, status: &str) -> Value {
        json!({
            "type": "reasoning",
            "id": self.reasoning_id,
            "status": status,
            "summary": [],
            "content": [{"type": "reasoning_text", "text": text}],
        })
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
    frame.object(Some(Outcome {
        reasoning: &choice.reasoning,
        text: &choice.text,
        reason: choice.finish_reason,
        usage: &completion.usage,
        calls: &choice.tool_calls,
        announced: false,
    }))
}

/// How a response ended, for [`ResponseFrame::object`]: its output items are the reasoning
/// (if any), the message, then the calls, in that order.
pub struct Outcome<'a> {
    /// The model's reasoning.
    pub reasoning: &'a str,
    /// The output text.
    pub text: &'a str,
    /// Why it ended.
    pub reason: FinishReason,
    /// Token counts.
    pub usage: &'a Usage,
    /// The calls made.
    pub calls: &'a [ToolCall],
    /// Whether a stream already announced the message item.
    pub announced: bool,
}

/// A `function_call` output item.
fn function_call(call: &ToolCall, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": format!("fc_{}", call.id.trim_start_matches("call_")),
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    })
}

/// A streamed response: its frame and its events.
pub struct ResponseStream {
    frame: ResponseFrame,
    events: EventSequence,
}

impl ResponseStream {
    /// The stream of the response `frame` describes.
    pub fn new(frame: ResponseFrame) -> Self {
        ResponseStream {
            frame,
            events: EventSequence::new(),
        }
    }
}

impl StreamDialect for ResponseStream {
    type Frame = Event;

    fn endpoint(&self) -> &'static str {
        "responses"
    }

    fn opening(&mut self) -> Vec<Event> {
        self.events.opening(&self.frame)
    }

    fn reasoning(&mut self, _choice: u32, text: &str) -> Vec<Event> {
        self.events.reasoning(&self.frame, text)
    }

    fn delta(&mut self, _choice: u32, text: &str, _logprobs: &[TokenLogprob]) -> Vec<Event> {
        match text.is_empty() {
            true => Vec::new(),
            false => self.events.delta(&self.frame, text),
        }
    }

    fn tool_call(&mut self, _choice: u32, call: ToolCall) -> Vec<Event> {
        self.events.tool_call(&self.frame, call)
    }

    fn choice_done(
        &mut self,
        _choice: u32,
        reason: FinishReason,
        _stop_sequence: Option<&str>,
        usage: &Usage,
    ) -> Vec<Event> {
        self.events.closing(&self.frame, reason, usage)
    }

    fn closing(&mut self, _usage: &Usage) -> Vec<Event> {
        Vec::new()
    }

    fn error(&mut self, error: &ApiError) -> Vec<Event> {
        vec![self.events.error(error)]
    }
}

/// A stream's events: numbered, with output items announced as they begin (the reasoning,
/// the message, the calls, in the order of [`Outcome`]), and what they held so far.
pub struct EventSequence {
    number: u64,
    /// Output items announced so far (the next one's index).
    items: usize,
    /// The reasoning item: its index, text so far and whether it is still open.
    reasoning: Option<(usize, String, bool)>,
    /// The message item's index and text so far, once announced.
    message: Option<(usize, String)>,
    calls: Vec<ToolCall>,
}

impl EventSequence {
    /// Number 0 next, no items.
    pub fn new() -> Self {
        EventSequence {
            number: 0,
            items: 0,
            reasoning: None,
            message: None,
            calls: Vec::new(),
        }
    }

    /// An event of `kind` with `fields` (plus `type` and `sequence_number`).
    pub fn event(&mut self, kind: &str, mut fields: Value) -> Event {
        if let Some(map) = fields.as_object_mut() {
            map.insert("type".into(), json!(kind));
            map.insert("sequence_number".into(), json!(self.number));
        }
        self.number += 1;
        Event::default().event(kind).data(fields.to_string())
    }

    /// `response.created` and `response.in_progress`.
    pub fn opening(&mut self, frame: &ResponseFrame) -> Vec<Event> {
        let pending = frame.object(None);
        vec![
            self.event("response.created", json!({"response": pending})),
            self.event("response.in_progress", json!({"response": pending})),
        ]
    }

    /// More reasoning: a `response.reasoning_text.delta` (the item announced first). Reasoning
    /// after the answer began has no item left to go in and is not streamed.
    pub fn reasoning(&mut self, frame: &ResponseFrame, text: &str) -> Vec<Event> {
        if self.message.is_some() || !self.calls.is_empty() {
            return Vec::new();
        }
        let mut events = Vec::new();
        if self.reasoning.is_none() {
            let index = self.next_item();
            self.reasoning = Some((index, String::new(), true));
            let mut item = frame.reasoning_item("", "in_progress");
            item["content"] = json!([]);
            events.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ));
        }
        let Some((index, all, _)) = self.reasoning.as_mut() else {
            return events;
        };
        all.push_str(text);
        let index = *index;
        events.push(self.event(
            "response.reasoning_text.delta",
            json!({"item_id": frame.reasoning_id, "output_index": index, "content_index": 0,
                   "delta": text}),
        ));
        events
    }

    /// More answer: a `response.output_text.delta` (the message announced first).
    pub fn delta(&mut self, frame: &ResponseFrame, text: &str) -> Vec<Event> {
        let mut events = self.announce_message(frame);
        let Some((index, all)) = self.message.as_mut() else {
            return events;
        };
        all.push_str(text);
        let index = *index;
        events.push(self.event(
            "response.output_text.delta",
            json!({"item_id": frame.item_id, "output_index": index, "content_index": 0,
                   "delta": text, "logprobs": []}),
        ));
        events
    }

    /// A call as its own output item: added, its arguments (one delta), done.
    pub fn tool_call(&mut self, frame: &ResponseFrame, call: ToolCall) -> Vec<Event> {
        let mut events = self.close_reasoning(frame);
        let index = self.next_item();
        let done = function_call(&call, "completed");
        let mut added = function_call(&call, "in_progress");
        added["arguments"] = json!("");
        let item_id = done["id"].clone();
        events.extend([
            self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": added}),
            ),
            self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": index, "delta": call.arguments}),
            ),
            self.event(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": index, "arguments": call.arguments}),
            ),
            self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": done}),
            ),
        ]);
        self.calls.push(call);
        events
    }

    fn next_item(&mut self) -> usize {
        self.items += 1;
        self.items - 1
    }

    /// The message item and its text part, unless announced already (the reasoning closed
    /// first).
    fn announce_message(&mut self, frame: &ResponseFrame) -> Vec<Event> {
        if self.message.is_some() {
            return Vec::new();
        }
        let mut events = self.close_reasoning(frame);
        let index = self.next_item();
        self.message = Some((index, String::new()));
        events.extend([
            self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": {
                    "type": "message", "id": frame.item_id, "status": "in_progress",
                    "role": "assistant", "content": [],
                }}),
            ),
            self.event(
                "response.content_part.added",
                json!({"item_id": frame.item_id, "output_index": index, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            ),
        ]);
        events
    }

    /// The reasoning item's done events, if it is open.
    fn close_reasoning(&mut self, frame: &ResponseFrame) -> Vec<Event> {
        let Some((index, text, open)) = self.reasoning.as_mut() else {
            return Vec::new();
        };
        if !std::mem::replace(open, false) {
            return Vec::new();
        }
        let (index, text) = (*index, text.clone());
        vec![
            self.event(
                "response.reasoning_text.done",
                json!({"item_id": frame.reasoning_id, "output_index": index, "content_index": 0,
                       "text": text}),
            ),
            self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": frame.reasoning_item(&text, "completed")}),
            ),
        ]
    }

    /// The closing events: the message (announced now if it had no text and there were no
    /// calls) with its text, part and item done, then `response.completed` (or
    /// `response.incomplete` when the token limit ended it).
    pub fn closing(
        &mut self,
        frame: &ResponseFrame,
        reason: FinishReason,
        usage: &Usage,
    ) -> Vec<Event> {
        let mut events = self.close_reasoning(frame);
        if self.calls.is_empty() {
            events.extend(self.announce_message(frame));
        }
        let calls = std::mem::take(&mut self.calls);
        let reasoning = self
            .reasoning
            .take()
            .map(|(_, text, _)| text)
            .unwrap_or_default();
        let message = self.message.take();
        let text = message.as_ref().map_or("", |(_, text)| text.as_str());
        let whole = frame.object(Some(Outcome {
            reasoning: &reasoning,
            text,
            reason,
            usage,
            calls: &calls,
            announced: message.is_some(),
        }));
        let status = whole["status"].as_str().unwrap_or("completed").to_string();
        let last = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        if let Some((index, text)) = &message {
            events.extend([
                self.event(
                    "response.output_text.done",
                    json!({"item_id": frame.item_id, "output_index": index, "content_index": 0,
                           "text": text, "logprobs": []}),
                ),
                self.event(
                    "response.content_part.done",
                    json!({"item_id": frame.item_id, "output_index": index, "content_index": 0,
                           "part": {"type": "output_text", "text": text, "annotations": []}}),
                ),
                self.event(
                    "response.output_item.done",
                    json!({"output_index": index, "item": frame.message(text, &status)}),
                ),
            ]);
        }
        events.push(self.event(last, json!({"response": whole})));
        events
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
