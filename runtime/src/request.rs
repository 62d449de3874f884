//! What a caller asks an engine for: input, length, sampling and stop strings.

use serde::{Deserialize, Serialize};

use crate::sampling::{ResolvedSampling, SamplingParams};

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
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// The text the model continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Raw text, tokenized as is (completion style).
    Text(String),
    /// Chat messages, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Token ids of the model's vocabulary, used as they are.
    Tokens(Vec<u32>),
}

/// A generation request, engine-independent.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// Prompt or chat.
    pub input: Input,
    /// Most tokens to generate; `None` means until end of sequence or a full context.
    pub max_tokens: Option<u32>,
    /// Sampling options; unset fields take the runtime's defaults.
    pub sampling: SamplingParams,
    /// Generation ends before the first occurrence of any of these; they are not returned.
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens (benchmarks).
    pub ignore_eos: bool,
    /// Reuse KV state cached from earlier requests that share a prompt prefix (default on; off
    /// gives every request a cold prompt, e.g. for benchmarks).
    pub cache_prompt: bool,
}

/// A request's generation options as an engine's decoding loop uses them: sampling resolved to
/// values, prompt and input handling left to the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOptions {
    /// Sampling with defaults filled in.
    pub sampling: ResolvedSampling,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Generate past end-of-sequence.
    pub ignore_eos: bool,
    /// Reuse cached KV state of a shared prompt prefix.
    pub cache_prompt: bool,
}

impl GenerationRequest {
    /// The options a decoding loop needs.
    pub fn job_options(&self) -> JobOptions {
        JobOptions {
            sampling: self.sampling.resolve(),
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            cache_prompt: self.cache_prompt,
        }
    }

    /// A request for `input` with default options.
    pub fn new(input: Input) -> Self {
        GenerationRequest {
            input,
            max_tokens: None,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            ignore_eos: false,
            cache_prompt: true,
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

    /// Check values every engine would reject.
    pub fn validate(&self) -> crate::Result<()> {
        if self.max_tokens == Some(0) {
            return Err(crate::Error::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(crate::Error::InvalidRequest(
                "stop strings must not be empty".into(),
            ));
        }
        match &self.input {
            Input::Chat(messages) if messages.is_empty() => {
                return Err(crate::Error::InvalidRequest(
                    "messages must not be empty".into(),
                ));
            }
            Input::Tokens(ids) if ids.is_empty() => {
                return Err(crate::Error::InvalidRequest(
                    "the prompt has no tokens".into(),
                ));
            }
            _ => {}
        }
        self.sampling.validate()
    }
}
