//! OpenAI request and response shapes, and their translation to runtime requests. Fields that
//! would change the output but are not honoured are refused by name, never dropped.

use std::collections::BTreeMap;

use minerva_runtime::{
    ChatMessage, Completion, Constraint, FinishReason, GenerationRequest, Input, Role,
    SamplingParams, TokenLogprob, Tool, ToolCall, ToolChoice, Usage,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::convert;
use crate::error::ApiError;

/// Fields accepted and ignored: they do not change the generated text.
const IGNORED_FIELDS: &[&str] = &["user", "metadata", "store", "service_tier"];

/// Fields OpenAI defines that this server does not honour yet.
const UNSUPPORTED_FIELDS: &[&str] = &[
    "functions",
    "function_call",
    "audio",
    "modalities",
    "prediction",
    "web_search_options",
    "suffix",
    "echo",
    "best_of",
];

/// Parse a JSON body into the endpoint's own fields `T` (named in `own_fields`) and the shared
/// [`CommonOptions`]. Syntax errors, wrong types (naming the field) and fields that are unknown
/// or unsupported (naming them) are 400s.
pub fn parse<T: DeserializeOwned>(
    body: &[u8],
    own_fields: &[&str],
) -> Result<(T, CommonOptions), ApiError> {
    let value = checked_body(
        body,
        &Fields {
            read: &[own_fields, CommonOptions::FIELDS],
            ignored: IGNORED_FIELDS,
            unsupported: UNSUPPORTED_FIELDS,
            explained: &[],
        },
    )?;
    Ok((typed(&value)?, typed(&value)?))
}

/// The top-level fields of an endpoint's body.
pub(crate) struct Fields<'a> {
    /// Fields the endpoint reads.
    pub read: &'a [&'a [&'a str]],
    /// Fields accepted without effect on the generated text.
    pub ignored: &'a [&'a str],
    /// Fields the API defines that this server does not honour yet.
    pub unsupported: &'a [&'a str],
    /// Fields refused with a reason of their own.
    pub explained: &'a [(&'a str, &'a str)],
}

/// A body that is a JSON object whose every field is read or ignored; any other field is a
/// 400 naming it.
pub(crate) fn checked_body(body: &[u8], fields: &Fields) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}"), None))?;
    let Some(map) = value.as_object() else {
        return Err(ApiError::invalid(
            "request body must be a JSON object",
            None,
        ));
    };
    for key in map.keys().map(String::as_str) {
        if fields.read.iter().any(|list| list.contains(&key)) || fields.ignored.contains(&key) {
            continue;
        }
        if let Some((_, reason)) = fields.explained.iter().find(|(k, _)| *k == key) {
            return Err(ApiError::invalid(*reason, Some(key)));
        }
        if fields.unsupported.contains(&key) {
            return Err(ApiError::unsupported(key));
        }
        return Err(ApiError::invalid(
            format!("unrecognized request argument supplied: {key}"),
            Some(key),
        ));
    }
    Ok(value)
}

/// `tool_choice` given as a mode: `none`, `auto` or `required`.
pub(crate) fn tool_choice_mode(mode: &str) -> Result<ToolChoice, ApiError> {
    match mode {
        "none" => Ok(ToolChoice::None),
        "auto" => Ok(ToolChoice::Auto),
        "required" => Ok(ToolChoice::Required),
        other => Err(ApiError::invalid(
            format!("tool_choice `{other}` is not one of none, auto, required"),
            Some("tool_choice"),
        )),
    }
}

/// Parse a JSON body whose struct rejects unknown fields itself (naming them).
pub fn parse_strict<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}"), None))?;
    typed(&value)
}

/// Deserialize `value` into `T`, naming the offending field in the error.
pub(crate) fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::invalid(format!("invalid request: {inner}"), None)
        } else {
            ApiError::invalid(format!("`{path}`: {inner}"), Some(&path))
        }
    })
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with token usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// Options shared by chat and text completions.
#[derive(Debug, Deserialize)]
pub struct CommonOptions {
    /// Model id.
    pub model: String,
    /// Stream with server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    min_p: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    #[serde(alias = "repeat_penalty")]
    repetition_penalty: Option<f32>,
    seed: Option<u64>,
    stop: Option<Stop>,
    /// Extension (as in llama-server): keep generating past end-of-sequence.
    #[serde(default)]
    ignore_eos: bool,
    n: Option<u32>,
    logit_bias: Option<BTreeMap<String, f32>>,
    response_format: Option<ResponseFormat>,
    /// Extension (as in Ollama): how long the model stays loaded when idle after this request,
    /// seconds or a duration such as `"5m"`; 0 unloads it after the answer, -1 keeps it.
    keep_alive: Option<Value>,
    /// A predicted output (`{"type": "content", "content": ...}`): speculative decoding drafts
    /// from it; the answer is the same as without.
    prediction: Option<Prediction>,
}

/// `prediction`: the text the answer is expected to resemble.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Prediction {
    /// Its content, a string or text parts.
    Content { content: PredictionContent },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PredictionContent {
    Text(String),
    Parts(Vec<PredictionPart>),
}

#[derive(Debug, Deserialize)]
struct PredictionPart {
    text: String,
}

/// `response_format`: OpenAI's `text`, `json_object` and `json_schema`, plus two extensions,
/// `{"type": "lark", "lark": GRAMMAR}` (llguidance's Lark dialect) and
/// `{"type": "regex", "regex": PATTERN}`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against a schema.
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchemaFormat,
    },
    /// Text in a Lark grammar.
    Lark {
        /// The grammar.
        lark: String,
    },
    /// Text matching a regular expression.
    Regex {
        /// The pattern.
        regex: String,
    },
}

/// `response_format.json_schema`: `name`, `schema` (absent: any JSON value), and `description`
/// and `strict`, which change nothing (the schema is always followed exactly).
#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    name: String,
    schema: Option<Value>,
    #[serde(flatten)]
    others: BTreeMap<String, Value>,
}

impl ResponseFormat {
    fn constraint(&self) -> Result<Option<Constraint>, ApiError> {
        Ok(match self {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(Constraint::JsonObject),
            ResponseFormat::JsonSchema { json_schema } => Some(convert::json_schema(
                "response_format",
                "response_format.json_schema",
                Some(&json_schema.name),
                json_schema.schema.as_ref(),
                json_schema.others.keys(),
            )?),
            ResponseFormat::Lark { lark } => Some(Constraint::Lark(lark.clone())),
            ResponseFormat::Regex { regex } => Some(Constraint::Regex(regex.clone())),
        })
    }
}

impl CommonOptions {
    /// The JSON fields this struct reads.
    const FIELDS: &'static [&'static str] = &[
        "model",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "repeat_penalty",
        "seed",
        "stop",
        "ignore_eos",
        "n",
        "logit_bias",
        "response_format",
        "keep_alive",
        "prediction",
    ];

    /// Fill `request`'s options from these fields.
    pub fn apply(&self, request: &mut GenerationRequest) -> Result<(), ApiError> {
        request.n = self.n.unwrap_or(1);
        request.constraint = match &self.response_format {
            Some(format) => format.constraint()?,
            None => None,
        };
        request.max_tokens = self.max_completion_tokens.or(self.max_tokens);
        request.ignore_eos = self.ignore_eos;
        request.prediction = self.prediction.as_ref().map(|p| match p {
            Prediction::Content {
                content: PredictionContent::Text(text),
            } => text.clone(),
            Prediction::Content {
                content: PredictionContent::Parts(parts),
            } => parts.iter().map(|p| p.text.as_str()).collect(),
        });
        request.keep_alive = match &self.keep_alive {
            None | Some(Value::Null) => None,
            Some(value) => Some(minerva_runtime::request::keep_alive_seconds(value).map_err(
                |e| ApiError::invalid(format!("`keep_alive`: {e}"), Some("keep_alive")),
            )?),
        };
        request.sampling = SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repetition_penalty,
            repeat_last_n: None,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
        };
        request.stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if request.stop.len() > 4 {
            return Err(ApiError::invalid(
                "at most 4 stop sequences are allowed",
                Some("stop"),
            ));
        }
        request.logit_bias = self
            .logit_bias
            .iter()
            .flatten()
            .map(|(id, &bias)| match id.trim().parse::<u32>() {
                Ok(id) => Ok((id, bias)),
                Err(_) => Err(ApiError::invalid(
                    format!("logit_bias keys must be token ids, got `{id}`"),
                    Some("logit_bias"),
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    /// Whether the stream ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// Message content: a string or a list of parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts (only `text` parts are supported).
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// Part type, e.g. `text` or `image_url`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// An incoming chat message.
#[derive(Debug, Deserialize)]
pub struct InMessage {
    role: String,
    #[serde(default, deserialize_with = "present_or_null")]
    content: Option<Option<Content>>,
    /// An assistant message's calls.
    tool_calls: Option<Vec<InToolCall>>,
    /// A tool message's call.
    tool_call_id: Option<String>,
    /// An assistant message's reasoning (`reasoning_content`, or `reasoning` as some clients
    /// name it).
    reasoning_content: Option<String>,
    reasoning: Option<String>,
}

/// A call in an assistant message: `{"id", "type": "function", "function": {"name",
/// "arguments"}}`.
#[derive(Debug, Deserialize)]
pub struct InToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    function: InFunctionCall,
}

/// The function of a call.
#[derive(Debug, Deserialize)]
pub struct InFunctionCall {
    name: String,
    arguments: String,
}

/// One entry of `tools`: `{"type": "function", "function": {"name", "description",
/// "parameters", "strict"}}`.
#[derive(Debug, Deserialize)]
pub struct InTool {
    #[serde(rename = "type")]
    kind: String,
    function: InFunction,
}

/// A tool's function.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InFunction {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    /// Arguments always follow the schema when a call is required; otherwise the model's own
    /// call is passed on as written.
    #[serde(rename = "strict")]
    _strict: Option<bool>,
}

/// `tool_choice`: `none`, `auto`, `required` or `{"type": "function", "function": {"name"}}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum InToolChoice {
    /// A mode.
    Mode(String),
    /// A named function.
    Named {
        /// Always `function`.
        #[serde(rename = "type")]
        kind: String,
        /// The function.
        function: NamedFunction,
    },
}

/// The function `tool_choice` names.
#[derive(Debug, Deserialize)]
pub struct NamedFunction {
    name: String,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present_or_null<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /v1/chat/completions`'s own fields.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    messages: Vec<InMessage>,
    logprobs: Option<bool>,
    top_logprobs: Option<u32>,
    tools: Option<Vec<InTool>>,
    tool_choice: Option<InToolChoice>,
    parallel_tool_calls: Option<bool>,
    chat_template_kwargs: Option<serde_json::Map<String, Value>>,
    reasoning_effort: Option<String>,
    #[serde(alias = "max_thinking_tokens")]
    thinking_budget: Option<u32>,
}

impl ChatRequest {
    /// The JSON fields this struct reads.
    pub const FIELDS: &'static [&'static str] = &[
        "messages",
        "logprobs",
        "top_logprobs",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "chat_template_kwargs",
        "reasoning_effort",
        "thinking_budget",
        "max_thinking_tokens",
    ];

    fn tools(&self) -> Result<(Vec<Tool>, ToolChoice), ApiError> {
        let mut tools = Vec::new();
        for (i, t) in self.tools.iter().flatten().enumerate() {
            if t.kind != "function" {
                return Err(ApiError::invalid(
                    format!("tools[{i}].type must be `function`, got `{}`", t.kind),
                    Some(&format!("tools[{i}].type")),
                ));
            }
            let f = &t.function;
            tools.push(convert::tool(
                &format!("tools[{i}].function"),
                &f.name,
                f.description.as_deref(),
                f.parameters.as_ref(),
                "name",
                "parameters",
            )?);
        }
        let choice = match &self.tool_choice {
            None => ToolChoice::Auto,
            Some(InToolChoice::Mode(mode)) => tool_choice_mode(mode)?,
            Some(InToolChoice::Named { kind, function }) if kind == "function" => {
                ToolChoice::Function(function.name.clone())
            }
            Some(InToolChoice::Named { kind, .. }) => {
                return Err(ApiError::invalid(
                    format!("tool_choice.type must be `function`, got `{kind}`"),
                    Some("tool_choice"),
                ))
            }
        };
        Ok((tools, choice))
    }

    /// The runtime request.
    pub fn to_request(&self, options: &CommonOptions) -> Result<GenerationRequest, ApiError> {
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => Role::Tool,
                other => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].role `{other}` is not supported (system, developer, user, assistant, tool)"),
                        Some(&format!("messages[{i}].role")),
                    ))
                }
            };
            let calls = m.tool_calls.as_deref().unwrap_or_default();
            if !calls.is_empty() && role != Role::Assistant {
                return Err(ApiError::invalid(
                    format!("messages[{i}].tool_calls: only assistant messages make tool calls"),
                    Some(&format!("messages[{i}].tool_calls")),
                ));
            }
            let tool_call_id = match (role, &m.tool_call_id) {
                (Role::Tool, None) => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].tool_call_id is required for a tool message"),
                        Some(&format!("messages[{i}].tool_call_id")),
                    ))
                }
                (Role::Tool, Some(id)) => Some(id.clone()),
                _ => None,
            };
            let content = match &m.content {
                Some(None) | None if role != Role::Assistant => {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].content must be a string or a list of parts"),
                        Some(&format!("messages[{i}].content")),
                    ))
                }
                Some(None) | None => String::new(),
                Some(Some(Content::Text(t))) => t.clone(),
                Some(Some(Content::Parts(parts))) => {
                    let mut texts = Vec::with_capacity(parts.len());
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => texts.push(t.as_str()),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    format!(
                                        "content part type `{kind}` is not supported (only text)"
                                    ),
                                    Some(&format!("messages[{i}].content[{j}]")),
                                ))
                            }
                        }
                    }
                    convert::join_parts(texts)
                }
            };
            let mut message = ChatMessage::new(role, content);
            message.tool_call_id = tool_call_id;
            if role == Role::Assistant {
                message.reasoning = m.reasoning_content.clone().or_else(|| m.reasoning.clone());
            }
            for (j, c) in calls.iter().enumerate() {
                if c.kind != "function" {
                    return Err(ApiError::invalid(
                        format!("messages[{i}].tool_calls[{j}].type must be `function`"),
                        Some(&format!("messages[{i}].tool_calls[{j}].type")),
                    ));
                }
                message.tool_calls.push(ToolCall {
                    id: c.id.clone(),
                    name: c.function.name.clone(),
                    arguments: c.function.arguments.clone(),
                });
            }
            messages.push(message);
        }
        if messages.is_empty() {
            return Err(ApiError::invalid(
                "`messages` must not be empty",
                Some("messages"),
            ));
        }
        let mut request = GenerationRequest::new(Input::Chat(messages));
        options.apply(&mut request)?;
        (request.tools, request.tool_choice) = self.tools()?;
        request.parallel_tool_calls = self.parallel_tool_calls.unwrap_or(true);
        request.chat_template_kwargs = self.chat_template_kwargs.clone().unwrap_or_default();
        if let Some(effort) = &self.reasoning_effort {
            convert::reasoning_effort(effort, "reasoning_effort", &mut request)?;
        }
        request.reasoning_budget = self.thinking_budget;
        request.logprobs = match (self.logprobs, self.top_logprobs) {
            (Some(true), top) => Some(top.unwrap_or(0)),
            (_, Some(_)) => {
                return Err(ApiError::invalid(
                    "`top_logprobs` needs `logprobs: true`",
                    Some("top_logprobs"),
                ))
            }
            _ => None,
        };
        Ok(request)
    }
}

/// `prompt`: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One prompt.
    One(String),
    /// Several prompts, one choice each.
    Many(Vec<String>),
}

/// `POST /v1/completions`'s own fields.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The prompt(s).
    pub prompt: Prompt,
    /// Report each token's log-probability and this many alternatives.
    pub logprobs: Option<u32>,
}

impl CompletionRequest {
    /// The JSON fields this struct reads.
    pub const FIELDS: &'static [&'static str] = &["prompt", "logprobs"];

    /// One runtime request per prompt.
    pub fn to_requests(&self, options: &CommonOptions) -> Result<Vec<GenerationRequest>, ApiError> {
        let prompts = match &self.prompt {
            Prompt::One(p) => vec![p.clone()],
            Prompt::Many(v) if v.is_empty() => {
                return Err(ApiError::invalid(
                    "`prompt` must not be empty",
                    Some("prompt"),
                ))
            }
            Prompt::Many(v) => v.clone(),
        };
        prompts
            .into_iter()
            .map(|p| {
                let mut r = GenerationRequest::new(Input::Text(p));
                options.apply(&mut r)?;
                r.logprobs = self.logprobs;
                Ok(r)
            })
            .collect()
    }
}

/// `POST /tokenize` body: text tokenized as given (no template, special tokens as the model's
/// raw prompts get them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// Model id.
    pub model: String,
    /// The text.
    pub content: String,
}

/// `POST /detokenize` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    /// Model id.
    pub model: String,
    /// Token ids.
    pub tokens: Vec<u32>,
}

/// `POST /v1/embeddings` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    /// Model id.
    pub model: String,
    /// The text(s) to embed.
    pub input: Prompt,
    /// `float` (default) or `base64` (little-endian f32, what the openai client asks for).
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Not supported: truncating dimensions changes the vectors.
    pub dimensions: Option<u32>,
    /// Accepted and ignored.
    #[serde(rename = "user")]
    _user: Option<serde::de::IgnoredAny>,
}

impl EmbeddingRequest {
    /// The inputs, checked.
    pub fn inputs(&self) -> Result<Vec<String>, ApiError> {
        if self.dimensions.is_some() {
            return Err(ApiError::unsupported("dimensions"));
        }
        match self.encoding_format.as_deref() {
            None | Some("float") | Some("base64") => {}
            Some(other) => {
                return Err(ApiError::invalid(
                    format!("encoding_format `{other}` is not one of float, base64"),
                    Some("encoding_format"),
                ))
            }
        }
        let inputs = match &self.input {
            Prompt::One(s) => vec![s.clone()],
            Prompt::Many(v) => v.clone(),
        };
        if inputs.is_empty() || inputs.iter().any(String::is_empty) {
            return Err(ApiError::invalid(
                "`input` must be non-empty text",
                Some("input"),
            ));
        }
        Ok(inputs)
    }

    /// Whether vectors are sent as base64.
    pub fn base64(&self) -> bool {
        self.encoding_format.as_deref() == Some("base64")
    }
}

/// The embeddings response.
pub fn embeddings_response(model: &str, e: &minerva_runtime::Embeddings, base64: bool) -> Value {
    use base64::Engine;
    let data: Vec<Value> = e
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens},
    })
}

/// OpenAI's name for a finish reason.
pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
    }
}

/// A tool call in OpenAI's shape (with its `index` in a streamed delta).
pub fn tool_call(call: &ToolCall, index: Option<usize>) -> Value {
    let mut value = json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    });
    if let Some(index) = index {
        value["index"] = json!(index);
    }
    value
}

/// The `usage` object.
pub fn usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens(),
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {
            "accepted_prediction_tokens": u.accepted_prediction_tokens,
            "rejected_prediction_tokens": u.rejected_prediction_tokens,
            "reasoning_tokens": u.reasoning_tokens,
        },
    })
}

/// Log-probabilities of a chat choice's tokens: `{"content": [...], "refusal": null}`.
pub fn chat_logprobs(tokens: &[TokenLogprob]) -> Value {
    let entry = |t: &minerva_runtime::TokenProb| json!({"token": t.text(), "logprob": t.logprob, "bytes": t.bytes});
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut e = entry(&t.token);
            e["top_logprobs"] = t.top.iter().map(entry).collect();
            e
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// Log-probabilities of a text completion's tokens in the legacy shape; `offset` is the text
/// offset of the first token, advanced past the last.
pub fn completion_logprobs(tokens: &[TokenLogprob], offset: &mut usize) -> Value {
    let mut text_offset = Vec::with_capacity(tokens.len());
    for t in tokens {
        text_offset.push(*offset);
        *offset += t.token.text().chars().count();
    }
    json!({
        "tokens": tokens.iter().map(|t| t.token.text()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.token.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.top.iter().map(|a| (a.text(), json!(a.logprob))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

/// A `chat.completion` response, one choice per generated choice (`with_logprobs`: the request
/// asked for log-probabilities).
pub fn chat_response(
    id: &str,
    created: u64,
    model: &str,
    c: &Completion,
    with_logprobs: bool,
) -> Value {
    let choices: Vec<Value> = c
        .choices
        .iter()
        .enumerate()
        .map(|(i, ch)| {
            let mut message = json!({"role": "assistant", "content": ch.text});
            if !ch.reasoning.is_empty() {
                message["reasoning_content"] = json!(ch.reasoning);
                message["reasoning"] = json!(ch.reasoning);
            }
            if !ch.tool_calls.is_empty() {
                message["tool_calls"] = ch
                    .tool_calls
                    .iter()
                    .map(|c| tool_call(c, None))
                    .collect();
                if ch.text.is_empty() {
                    message["content"] = Value::Null;
                }
            }
            json!({
                "index": i,
                "message": message,
                "logprobs": with_logprobs.then(|| chat_logprobs(ch.logprobs.as_deref().unwrap_or_default())),
                "finish_reason": finish_reason(ch.finish_reason),
            })
        })
        .collect();
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage(&c.usage),
    })
}

/// A `text_completion` response: the choices of each prompt in turn.
pub fn completion_response(
    id: &str,
    created: u64,
    model: &str,
    cs: &[Completion],
    with_logprobs: bool,
) -> Value {
    let total = Usage {
        prompt_tokens: cs.iter().map(|c| c.usage.prompt_tokens).sum(),
        completion_tokens: cs.iter().map(|c| c.usage.completion_tokens).sum(),
        cached_tokens: cs.iter().map(|c| c.usage.cached_tokens).sum(),
        accepted_prediction_tokens: cs.iter().map(|c| c.usage.accepted_prediction_tokens).sum(),
        rejected_prediction_tokens: cs.iter().map(|c| c.usage.rejected_prediction_tokens).sum(),
        reasoning_tokens: 0,
    };
    let choices: Vec<Value> = cs
        .iter()
        .flat_map(|c| &c.choices)
        .enumerate()
        .map(|(i, ch)| {
            json!({
                "index": i,
                "text": ch.text,
                "logprobs": with_logprobs
                    .then(|| completion_logprobs(ch.logprobs.as_deref().unwrap_or_default(), &mut 0)),
                "finish_reason": finish_reason(ch.finish_reason),
            })
        })
        .collect();
    json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage(&total),
    })
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Serialize)]
pub struct ModelEntry {
    /// Model id.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Always 0 (unknown).
    pub created: u64,
    /// Always `minerva`.
    pub owned_by: &'static str,
    /// The engine serving it.
    pub engine: Option<String>,
    /// Detected format.
    pub format: Option<String>,
    /// Whether it is loaded.
    pub loaded: bool,
    /// `loaded`, `unloaded` or `failed` (its engine died and it is not loaded again yet).
    pub status: &'static str,
    /// Why it failed, while `status` is `failed`.
    pub failure: Option<String>,
    /// The process its engine runs in, when it has a runner of its own.
    pub runner_pid: Option<u32>,
    /// Where the loaded model's layers run: this machine's device and any ggml RPC workers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<minerva_runtime::ModelPart>,
    /// Engine crashes since the server started.
    pub crashes: u64,
    /// Seconds until the idle model is unloaded (`keep_alive`), when it will be.
    pub expires_in_s: Option<u64>,
    /// What loading it is estimated to take: weights + KV cache for its context + engine.
    pub estimated_memory_bytes: Option<u64>,
    /// The context that estimate is for.
    pub context_size: Option<u32>,
    /// Bytes its files take on disk.
    pub size_bytes: Option<u64>,
    /// Its parameters.
    pub parameters: Option<u64>,
    /// How its weights are stored, e.g. `Q4_1` or `mlx affine 4-bit, group 64`.
    pub quantization: Option<String>,
    /// Why it cannot be served, if detection failed.
    pub error: Option<String>,
}
