//! What a caller asks an engine for: input, length, sampling and stop strings.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sampling::SamplingParams;

/// A chat message role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The person talking to the model.
    User,
    /// The model's earlier replies.
    Assistant,
    /// The result of a tool call.
    Tool,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
    /// The tool calls an assistant message made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For an assistant message: the reasoning it gave before its content (templates render it
    /// or, most often, drop it from earlier turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            reasoning: None,
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of its arguments.
    pub parameters: serde_json::Value,
}

/// One call of a tool, as the model made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id (`call_...`), echoed by the tool message that answers it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as JSON text.
    pub arguments: String,
}

/// Whether and which tools the model must call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// Never: tools are not offered.
    None,
    /// The model decides.
    #[default]
    Auto,
    /// At least one call (decoding is constrained to calls).
    Required,
    /// A call of this tool (decoding is constrained to it).
    Function(String),
}

/// The text the model continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// Raw text, tokenized as is (completion style).
    Text(String),
    /// Chat messages, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Token ids of the model's vocabulary, used as they are.
    Tokens(Vec<u32>),
}

/// What the generated text must match, enforced token by token (structured output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this JSON Schema.
    JsonSchema(serde_json::Value),
    /// A Lark grammar (llguidance's dialect).
    Lark(String),
    /// A regular expression the whole text matches.
    Regex(String),
}

/// Ollama's `keep_alive` in seconds: a number of seconds, or a duration such as `"5m"`, `"1h30m"`,
/// `"45s"`, `"-1"` (negative: keep loaded).
pub fn keep_alive_seconds(value: &serde_json::Value) -> Result<i64, String> {
    let invalid = || format!("{value} is neither seconds nor a duration such as \"5m\"");
    match value {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.ceil() as i64))
            .ok_or_else(invalid),
        serde_json::Value::String(text) => {
            let text = text.trim();
            let (negative, text) = match text.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, text),
            };
            if let Ok(seconds) = text.parse::<f64>() {
                return Ok(if negative { -1 } else { seconds.ceil() as i64 });
            }
            let mut total = 0.0;
            let mut rest = text;
            while !rest.is_empty() {
                let split = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .ok_or_else(invalid)?;
                let number: f64 = rest[..split].parse().map_err(|_| invalid())?;
                let unit_end = rest[split..]
                    .find(|c: char| c.is_ascii_digit())
                    .map_or(rest.len(), |i| split + i);
                total += number
                    * match &rest[split..unit_end] {
                        "h" => 3600.0,
                        "m" => 60.0,
                        "s" => 1.0,
                        "ms" => 0.001,
                        _ => return Err(invalid()),
                    };
                rest = &rest[unit_end..];
            }
            Ok(if negative { -1 } else { total.ceil() as i64 })
        }
        _ => Err(invalid()),
    }
}

/// Most alternatives a request may ask for per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// Most choices one request may ask for (`n`).
pub const MAX_CHOICES: u32 = 8;

/// A generation request, engine-independent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    /// Prompt or chat.
    pub input: Input,
    /// Most tokens to generate per choice; `None` means until end of sequence or a full context.
    pub max_tokens: Option<u32>,
    /// Sampling options; unset fields take the runtime's defaults.
    pub sampling: SamplingParams,
    /// Generation ends before the first occurrence of any of these; they are not returned.
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
    /// Reuse KV state cached from earlier requests that share a prompt prefix, and leave this
    /// one's as a cache (default on; off gives a cold prompt and frees the cells at the end,
    /// e.g. for benchmarks).
    pub cache_prompt: bool,
    /// Choices generated from the one prompt (1 to [`MAX_CHOICES`]); choice `i` of a seeded
    /// request draws with seed `seed + i`.
    pub n: u32,
    /// Report each token's log-probability and this many alternatives (0 to 20).
    pub logprobs: Option<u32>,
    /// Added to the logits of these token ids (-100 bans a token, +100 forces it).
    pub logit_bias: Vec<(u32, f32)>,
    /// What the text must match (`response_format` and its extensions).
    pub constraint: Option<Constraint>,
    /// Tools the model may call (chat input only).
    pub tools: Vec<Tool>,
    /// Whether and which tools it must call.
    pub tool_choice: ToolChoice,
    /// Whether one answer may hold several calls.
    pub parallel_tool_calls: bool,
    /// Seconds the model stays loaded when idle after this request (Ollama's `keep_alive`: 0
    /// unloads it after the answer, negative keeps it); for the model pool, not the engine.
    pub keep_alive: Option<i64>,
    /// Speculative decoding for this request (the model's `draft` setting, or on when a
    /// `prediction` is given); the output is the same as without.
    pub drafting: Option<Drafting>,
    /// The predicted output (OpenAI's `prediction`): drafts are taken from it.
    pub prediction: Option<String>,
    /// `prediction`'s token ids, filled by the runtime before the request reaches the engine.
    pub prediction_tokens: Vec<u32>,
    /// Variables for the chat template (`chat_template_kwargs`, e.g. `enable_thinking`,
    /// `reasoning_effort`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub chat_template_kwargs: serde_json::Map<String, serde_json::Value>,
    /// Most tokens the model may spend reasoning before it answers (models whose template
    /// marks reasoning); at the budget the reasoning is closed as the template closes it.
    #[serde(default)]
    pub reasoning_budget: Option<u32>,
}

/// How a request drafts tokens for speculative decoding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Drafting {
    /// Draft from where the last tokens occurred earlier in the prompt and answer.
    pub prompt_lookup: bool,
    /// Most draft tokens verified in one step.
    pub max_tokens: u32,
    /// Draft with the model's draft model (its `draft` setting names one).
    #[serde(default)]
    pub draft_model: bool,
}

impl GenerationRequest {
    /// A request for `input` with default options.
    pub fn new(input: Input) -> Self {
        GenerationRequest {
            input,
            max_tokens: None,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            ignore_eos: false,
            cache_prompt: true,
            n: 1,
            logprobs: None,
            logit_bias: Vec::new(),
            constraint: None,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            parallel_tool_calls: true,
            keep_alive: None,
            drafting: None,
            prediction: None,
            prediction_tokens: Vec::new(),
            chat_template_kwargs: serde_json::Map::new(),
            reasoning_budget: None,
        }
    }

    /// A chat request with one user message, and a system message if given.
    pub fn chat(user: impl Into<String>, system: Option<String>) -> Self {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(ChatMessage::new(Role::System, system));
        }
        messages.push(ChatMessage::new(Role::User, user));
        Self::new(Input::Chat(messages))
    }

    /// Check values every engine would reject (vocabulary-dependent checks happen when the
    /// model's core admits the request).
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens == Some(0) {
            return Err(Error::param("max_tokens", "max_tokens must be at least 1"));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(Error::param("stop", "stop strings must not be empty"));
        }
        if !(1..=MAX_CHOICES).contains(&self.n) {
            return Err(Error::param(
                "n",
                format!("`n` must be between 1 and {MAX_CHOICES}, got {}", self.n),
            ));
        }
        if let Some(top) = self.logprobs.filter(|&n| n > MAX_TOP_LOGPROBS) {
            return Err(Error::param(
                "top_logprobs",
                format!(
                    "at most {MAX_TOP_LOGPROBS} alternatives per token can be reported, got {top}"
                ),
            ));
        }
        if let Some((id, bias)) = self
            .logit_bias
            .iter()
            .find(|(_, b)| !b.is_finite() || !(-100.0..=100.0).contains(b))
        {
            return Err(Error::param(
                "logit_bias",
                format!("the bias of token {id} must be between -100 and 100, got {bias}"),
            ));
        }
        if !self.tools.is_empty() && !matches!(self.input, Input::Chat(_)) {
            return Err(Error::param("tools", "tools need chat messages"));
        }
        match &self.tool_choice {
            ToolChoice::Function(name) if !self.tools.iter().any(|t| &t.name == name) => {
                return Err(Error::param(
                    "tool_choice",
                    format!("tool_choice names `{name}`, which is not in `tools`"),
                ));
            }
            ToolChoice::Required if self.tools.is_empty() => {
                return Err(Error::param(
                    "tool_choice",
                    "tool_choice is `required` but no tools are given",
                ));
            }
            _ => {}
        }
        match &self.input {
            Input::Chat(messages) if messages.is_empty() => {
                return Err(Error::param("messages", "messages must not be empty"));
            }
            Input::Tokens(ids) if ids.is_empty() => {
                return Err(Error::InvalidRequest("the prompt has no tokens".into()));
            }
            _ => {}
        }
        self.sampling.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_reads_seconds_and_durations() {
        use serde_json::json;
        assert_eq!(keep_alive_seconds(&json!(0)), Ok(0));
        assert_eq!(keep_alive_seconds(&json!(-1)), Ok(-1));
        assert_eq!(keep_alive_seconds(&json!("5m")), Ok(300));
        assert_eq!(keep_alive_seconds(&json!("1h30m")), Ok(5400));
        assert_eq!(keep_alive_seconds(&json!("-1m")), Ok(-1));
        assert_eq!(keep_alive_seconds(&json!("45")), Ok(45));
        assert!(keep_alive_seconds(&json!("soon")).is_err());
        assert!(keep_alive_seconds(&json!("5 parsecs")).is_err());
        assert!(keep_alive_seconds(&json!(true)).is_err());
    }
}
