//! What an engine returns: text, token counts and why generation ended.

use std::pin::Pin;

use futures::Stream;
use serde::Serialize;

use crate::error::Result;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// End-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Prompt tokens whose KV state was reused from an earlier request (prefix cache).
    pub cached_tokens: u32,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The generated text, stop string excluded.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
}

/// One event of a streamed generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// New text; always whole UTF-8 characters and never past a stop string.
    Delta(String),
    /// The last event: why generation ended and the token counts.
    Done {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts.
        usage: Usage,
    },
}

/// A stream of generation events; dropping it cancels the generation.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<StreamEvent>> + Send>>;
