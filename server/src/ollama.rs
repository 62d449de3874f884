//! Ollama's API on the same port and the same core: `/api/chat` and `/api/generate`
//! (newline-delimited JSON streams by default, or one object), `/api/tags`, `/api/ps`,
//! `/api/show`, `/api/version`, `/api/embed` and `/api/embeddings`, with errors in Ollama's
//! `{"error": "..."}` shape. `options` map onto the runtime's sampling and limits; `format` is
//! `"json"` or a JSON schema; `tools` and `tool_calls` go through the runtime's tool calling;
//! `think` switches the template's thinking and the answer's `thinking` field carries it.
//! Images are refused by name (no engine here sees them yet). `pull` (progress per file) and
//! `delete` manage models in the Hugging Face cache; `copy`, `create` and `push` answer 501 by
//! name (there is no registry of our own to copy or push into).

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use minerva_runtime::{
    ChatMessage, Completion, Constraint, FinishReason, GenerationRequest, Input, Role,
    SamplingParams, TokenLogprob, ToolCall, Usage,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::convert;
use crate::error::ApiError;
use crate::stream::StreamDialect;

/// The version `/api/version` reports: Ollama's clients check it against features they use.
pub const VERSION: &str = "0.12.0";

/// An [`ApiError`] answered in Ollama's shape: `{"error": message}` with its status.
pub struct OllamaError(pub ApiError);

impl<E: Into<ApiError>> From<E> for OllamaError {
    fn from(e: E) -> Self {
        OllamaError(e.into())
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let status: StatusCode = self.0.status_code();
        (status, axum::Json(json!({"error": self.0.message}))).into_response()
    }
}

/// A message of `/api/chat`.
#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    images: Vec<Value>,
    #[serde(default)]
    tool_calls: Vec<InToolCall>,
    thinking: Option<String>,
    /// The tool a `tool` message answers (Ollama names it, it has no call ids).
    tool_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InToolCall {
    function: InFunction,
}

#[derive(Debug, Deserialize)]
struct InFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

/// What `/api/chat` and `/api/generate` share.
#[derive(Debug, Default, Deserialize)]
struct Common {
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
    /// Ollama streams unless told not to.
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    think: Option<Value>,
}

/// A `POST /api/chat` body.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Model id.
    pub model: String,
    #[serde(default)]
    messages: Vec<InMessage>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(flatten)]
    common: Common,
}

/// A `POST /api/generate` body.
#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    /// Model id.
    pub model: String,
    #[serde(default)]
    prompt: String,
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    images: Vec<Value>,
    suffix: Option<String>,
    template: Option<String>,
    #[serde(flatten)]
    common: Common,
}

/// A `POST /api/embed` or `/api/embeddings` body.
#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    /// Model id.
    pub model: String,
    input: Option<Value>,
    /// `/api/embeddings`' one text.
    prompt: Option<String>,
}

/// A `POST /api/show` body.
#[derive(Debug, Deserialize)]
pub struct ShowRequest {
    /// Model id (`name` in older clients).
    #[serde(alias = "name")]
    pub model: String,
}

/// A `POST /api/pull` or `DELETE /api/delete` body.
#[derive(Debug, Deserialize)]
pub struct ModelRequest {
    /// The model (`org/name[:QUANT]`; `name` in older clients).
    #[serde(alias = "name")]
    pub model: String,
    /// Progress as a stream (the default) or one object at the end. (`insecure` and other
    /// fields are ignored: the hub is reached as configured.)
    #[serde(default)]
    pub stream: Option<bool>,
}

/// Ollama's progress objects for a pull in `state`: one per file, with its name as the digest;
/// at the end its closing statuses and `success`, or `{"error"}`.
pub fn pull_progress(state: &minerva_runtime::PullState) -> Vec<Value> {
    let files = state.files.iter().map(|(file, total, completed)| {
        json!({"status": format!("pulling {file}"), "digest": file, "total": total,
               "completed": completed})
    });
    let mut lines: Vec<Value> = files.collect();
    match &state.outcome {
        None => {}
        Some(Ok(_)) => lines.extend(
            ["verifying sha256 digest", "writing manifest", "success"]
                .map(|status| json!({"status": status})),
        ),
        Some(Err(e)) => lines.push(json!({"error": e.to_string()})),
    }
    lines
}

/// Parse a body; a wrong type or a missing field names it.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}"), None))?;
    crate::openai::typed(&value)
}

fn refuse_images(images: &[Value], field: &str) -> Result<(), ApiError> {
    match images.is_empty() {
        true => Ok(()),
        false => Err(ApiError::invalid(
            format!("{field}: images are not supported by this server's engines yet"),
            Some(field),
        )),
    }
}

impl Common {
    /// `options`, `format`, `keep_alive` and `think` applied to `request`.
    fn apply(&self, request: &mut GenerationRequest) -> Result<(), ApiError> {
        let options = self.options.clone().unwrap_or_default();
        let number = |key: &str| options.get(key).and_then(Value::as_f64);
        let bad = |key: &str| {
            ApiError::invalid(
                format!("options.{key} must be a number"),
                Some(&format!("options.{key}")),
            )
        };
        for (key, value) in &options {
            let known = [
                "temperature",
                "top_k",
                "top_p",
                "min_p",
                "repeat_penalty",
                "repeat_last_n",
                "presence_penalty",
                "frequency_penalty",
                "seed",
                "num_predict",
                "num_ctx",
                "stop",
                "num_thread",
                "num_gpu",
                "num_batch",
                "use_mmap",
                "numa",
                "main_gpu",
                "low_vram",
            ];
            if !known.contains(&key.as_str()) {
                return Err(ApiError::invalid(
                    format!("options.{key} is not supported by this server"),
                    Some(&format!("options.{key}")),
                ));
            }
            if key != "stop" && !value.is_number() && !value.is_boolean() {
                return Err(bad(key));
            }
        }
        request.sampling = SamplingParams {
            temperature: number("temperature").map(|v| v as f32),
            top_p: number("top_p").map(|v| v as f32),
            top_k: number("top_k").map(|v| v as u32),
            min_p: number("min_p").map(|v| v as f32),
            repeat_penalty: number("repeat_penalty").map(|v| v as f32),
            repeat_last_n: number("repeat_last_n").map(|v| v as u32),
            presence_penalty: number("presence_penalty").map(|v| v as f32),
            frequency_penalty: number("frequency_penalty").map(|v| v as f32),
            seed: number("seed").map(|v| v as u64),
        };
        // Ollama: -1 (or -2) is "until the context ends".
        request.max_tokens = number("num_predict").filter(|n| *n > 0.0).map(|n| n as u32);
        if let Some(stop) = options.get("stop") {
            request.stop = match stop {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => items
                    .iter()
                    .map(|s| s.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("stop"))?,
                _ => return Err(bad("stop")),
            };
        }
        request.constraint = match &self.format {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) if s == "json" => Some(Constraint::JsonObject),
            Some(schema @ Value::Object(_)) => {
                let none: [&String; 0] = [];
                Some(convert::json_schema(
                    "format",
                    "format",
                    None,
                    Some(schema),
                    none,
                )?)
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "format must be \"json\" or a JSON schema object",
                    Some("format"),
                ))
            }
        };
        if let Some(value) = &self.keep_alive {
            request.keep_alive = Some(
                minerva_runtime::request::keep_alive_seconds(value).map_err(|e| {
                    ApiError::invalid(format!("keep_alive: {e}"), Some("keep_alive"))
                })?,
            );
        }
        match &self.think {
            None | Some(Value::Null) => {}
            Some(Value::Bool(on)) => {
                let effort = if *on { "medium" } else { "none" };
                convert::reasoning_effort(effort, "think", request)?;
            }
            Some(Value::String(level)) => convert::reasoning_effort(level, "think", request)?,
            Some(_) => {
                return Err(ApiError::invalid(
                    "think must be true, false, \"low\", \"medium\" or \"high\"",
                    Some("think"),
                ))
            }
        }
        Ok(())
    }

    /// Whether the answer streams (Ollama's default).
    fn streams(&self) -> bool {
        self.stream.unwrap_or(true)
    }

    /// Whether thinking is shown (unless `think` turned it off).
    fn shows_thinking(&self) -> bool {
        match &self.think {
            Some(Value::Bool(on)) => *on,
            Some(Value::String(level)) => level != "none",
            _ => true,
        }
    }
}

impl ChatRequest {
    /// The runtime request.
    pub fn to_request(&self) -> Result<GenerationRequest, ApiError> {
        let mut messages = Vec::new();
        let mut last_call_ids: Vec<(String, String)> = Vec::new();
        for (i, m) in self.messages.iter().enumerate() {
            refuse_images(&m.images, &format!("messages[{i}].images"))?;
            let role = match m.role.as_str() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => Role::Tool,
                other => {
                    return Err(ApiError::invalid(
                        format!(
                            "messages[{i}].role `{other}` must be system, user, assistant or tool"
                        ),
                        Some(&format!("messages[{i}].role")),
                    ))
                }
            };
            let mut message = ChatMessage::new(role, m.content.clone());
            message.reasoning = m.thinking.clone();
            for (k, call) in m.tool_calls.iter().enumerate() {
                // Ollama's calls have no ids: they are made here, and a tool message answers
                // the call of its tool name (or the next one in order).
                let id = format!("call_{i}_{k}");
                last_call_ids.push((call.function.name.clone(), id.clone()));
                message.tool_calls.push(ToolCall {
                    id,
                    name: call.function.name.clone(),
                    arguments: match &call.function.arguments {
                        Value::String(text) => text.clone(),
                        Value::Null => "{}".into(),
                        args => args.to_string(),
                    },
                });
            }
            if role == Role::Tool {
                let at = last_call_ids
                    .iter()
                    .position(|(name, _)| m.tool_name.as_ref().is_none_or(|n| n == name));
                message.tool_call_id = Some(match at {
                    Some(at) => last_call_ids.remove(at).1,
                    None => format!("call_{i}"),
                });
            }
            messages.push(message);
        }
        if messages.is_empty() {
            return Err(ApiError::invalid(
                "messages: at least one message is required",
                Some("messages"),
            ));
        }
        let mut request = GenerationRequest::new(Input::Chat(messages));
        self.common.apply(&mut request)?;
        request.tools = self
            .tools
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let function = t.get("function").unwrap_or(t);
                let name = function["name"].as_str().unwrap_or_default();
                convert::tool(
                    &format!("tools[{i}].function"),
                    name,
                    function["description"].as_str(),
                    function.get("parameters"),
                    "name",
                    "parameters",
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(request)
    }

    /// Whether the answer streams.
    pub fn streams(&self) -> bool {
        self.common.streams()
    }

    /// Whether thinking is shown.
    pub fn shows_thinking(&self) -> bool {
        self.common.shows_thinking()
    }
}

impl GenerateRequest {
    /// The runtime request: a chat of the system prompt and the prompt through the model's
    /// template, or with `raw` the prompt as it is.
    pub fn to_request(&self) -> Result<GenerationRequest, ApiError> {
        refuse_images(&self.images, "images")?;
        for (field, given) in [
            ("suffix", self.suffix.is_some()),
            ("template", self.template.is_some()),
        ] {
            if given {
                return Err(ApiError::invalid(
                    format!("{field} is not supported by this server"),
                    Some(field),
                ));
            }
        }
        let input = match self.raw {
            true => Input::Text(self.prompt.clone()),
            false => {
                let mut messages = Vec::new();
                if let Some(system) = &self.system {
                    messages.push(ChatMessage::new(Role::System, system.clone()));
                }
                messages.push(ChatMessage::new(Role::User, self.prompt.clone()));
                Input::Chat(messages)
            }
        };
        let mut request = GenerationRequest::new(input);
        self.common.apply(&mut request)?;
        Ok(request)
    }

    /// Whether the answer streams.
    pub fn streams(&self) -> bool {
        self.common.streams()
    }

    /// Whether thinking is shown.
    pub fn shows_thinking(&self) -> bool {
        self.common.shows_thinking()
    }
}

impl EmbedRequest {
    /// The texts to embed: `input` (one or a list) or `prompt`.
    pub fn inputs(&self) -> Result<Vec<String>, ApiError> {
        match (&self.input, &self.prompt) {
            (Some(Value::String(text)), _) => Ok(vec![text.clone()]),
            (Some(Value::Array(items)), _) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    ApiError::invalid("input must be a string or strings", Some("input"))
                }),
            (None, Some(prompt)) => Ok(vec![prompt.clone()]),
            _ => Err(ApiError::invalid(
                "input (or prompt) is required",
                Some("input"),
            )),
        }
    }
}

/// Ollama's time stamp: RFC 3339 with nanoseconds.
pub fn created_at() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// `done_reason`.
fn done_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::ToolCalls => "stop",
    }
}

/// The final object's counts and durations (nanoseconds): prompt evaluation up to the first
/// token, generation after it.
fn totals(usage: &Usage, started: Instant, first_token: Option<Duration>) -> Map<String, Value> {
    let total = started.elapsed();
    let first = first_token.unwrap_or(total);
    let nanos = |d: Duration| d.as_nanos() as u64;
    let mut map = Map::new();
    map.insert("total_duration".into(), json!(nanos(total)));
    map.insert("load_duration".into(), json!(0));
    map.insert(
        "prompt_eval_count".into(),
        json!(usage.prompt_tokens.saturating_sub(usage.cached_tokens)),
    );
    map.insert("prompt_eval_duration".into(), json!(nanos(first)));
    map.insert("eval_count".into(), json!(usage.completion_tokens));
    map.insert(
        "eval_duration".into(),
        json!(nanos(total.saturating_sub(first))),
    );
    map
}

/// Ollama's tool call: `{"function": {"name", "arguments": {...}}}`.
fn tool_call(call: &ToolCall) -> Value {
    let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
    json!({"function": {"name": call.name, "arguments": arguments}})
}

/// A whole answer of `/api/chat` (`chat`) or `/api/generate`.
pub fn response(
    model: &str,
    completion: &Completion,
    chat: bool,
    show_thinking: bool,
    started: Instant,
    first_token: Option<Duration>,
) -> Value {
    let choice = &completion.choices[0];
    let thinking = (show_thinking && !choice.reasoning.is_empty()).then_some(&choice.reasoning);
    let mut object = json!({"model": model, "created_at": created_at()});
    if chat {
        let mut message = json!({"role": "assistant", "content": choice.text});
        if let Some(thinking) = thinking {
            message["thinking"] = json!(thinking);
        }
        if !choice.tool_calls.is_empty() {
            message["tool_calls"] = choice.tool_calls.iter().map(tool_call).collect();
        }
        object["message"] = message;
    } else {
        object["response"] = json!(choice.text);
        if let Some(thinking) = thinking {
            object["thinking"] = json!(thinking);
        }
    }
    object["done"] = json!(true);
    object["done_reason"] = json!(done_reason(choice.finish_reason));
    if let Some(map) = object.as_object_mut() {
        map.extend(totals(&completion.usage, started, first_token));
    }
    object
}

/// A streamed answer: one JSON object per piece, the last with `done` and the counts.
pub struct OllamaStream {
    model: String,
    chat: bool,
    show_thinking: bool,
    started: Instant,
    first_token: Option<Duration>,
    reason: FinishReason,
}

impl OllamaStream {
    /// The stream of `model`'s answer (`chat`: `/api/chat`'s shape, else `/api/generate`'s).
    pub fn new(model: &str, chat: bool, show_thinking: bool, started: Instant) -> Self {
        OllamaStream {
            model: model.to_string(),
            chat,
            show_thinking,
            started,
            first_token: None,
            reason: FinishReason::Stop,
        }
    }

    fn piece(&mut self, content: &str, thinking: Option<&str>, calls: Option<Value>) -> Value {
        self.first_token
            .get_or_insert_with(|| self.started.elapsed());
        let mut object = json!({"model": self.model, "created_at": created_at()});
        if self.chat {
            let mut message = json!({"role": "assistant", "content": content});
            if let Some(thinking) = thinking {
                message["thinking"] = json!(thinking);
            }
            if let Some(calls) = calls {
                message["tool_calls"] = calls;
            }
            object["message"] = message;
        } else {
            object["response"] = json!(content);
            if let Some(thinking) = thinking {
                object["thinking"] = json!(thinking);
            }
        }
        object["done"] = json!(false);
        object
    }
}

impl StreamDialect for OllamaStream {
    type Frame = Value;

    fn endpoint(&self) -> &'static str {
        match self.chat {
            true => "ollama_chat",
            false => "ollama_generate",
        }
    }

    fn opening(&mut self) -> Vec<Value> {
        Vec::new()
    }

    fn reasoning(&mut self, _choice: u32, text: &str) -> Vec<Value> {
        match self.show_thinking {
            true => vec![self.piece("", Some(text), None)],
            false => Vec::new(),
        }
    }

    fn delta(&mut self, _choice: u32, text: &str, _logprobs: &[TokenLogprob]) -> Vec<Value> {
        match text.is_empty() {
            true => Vec::new(),
            false => vec![self.piece(text, None, None)],
        }
    }

    fn tool_call(&mut self, _choice: u32, call: ToolCall) -> Vec<Value> {
        vec![self.piece("", None, Some(json!([tool_call(&call)])))]
    }

    fn choice_done(
        &mut self,
        _choice: u32,
        reason: FinishReason,
        _stop_sequence: Option<&str>,
        _usage: &Usage,
    ) -> Vec<Value> {
        self.reason = reason;
        Vec::new()
    }

    fn closing(&mut self, usage: &Usage) -> Vec<Value> {
        let mut last = self.piece("", None, None);
        last["done"] = json!(true);
        last["done_reason"] = json!(done_reason(self.reason));
        if let Some(map) = last.as_object_mut() {
            map.extend(totals(usage, self.started, self.first_token));
        }
        vec![last]
    }

    fn error(&mut self, error: &ApiError) -> Vec<Value> {
        vec![json!({"error": error.message})]
    }
}
