//! What an engine returns: text, token counts, log-probabilities and why generation ended.

use std::pin::Pin;

use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::request::ToolCall;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// End-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
    /// The answer ended after tool calls.
    #[serde(rename = "tool_calls")]
    ToolCalls,
}

/// Token counts of one request (all of its choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt (counted once, however many choices share it).
    pub prompt_tokens: u32,
    /// Tokens generated, end-of-sequence tokens included.
    pub completion_tokens: u32,
    /// Prompt tokens whose KV state was reused from an earlier request (prefix cache).
    pub cached_tokens: u32,
    /// Draft tokens (speculative decoding) that became part of the answer.
    #[serde(default)]
    pub accepted_prediction_tokens: u32,
    /// Draft tokens evaluated but not kept (accepted + rejected = drafted).
    #[serde(default)]
    pub rejected_prediction_tokens: u32,
    /// Completion tokens the model spent reasoning (part of `completion_tokens`).
    #[serde(default)]
    pub reasoning_tokens: u32,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens + self.completion_tokens
    }

    /// One choice's usage when `later` continued this generation (the same prompt, more tokens
    /// generated).
    pub fn followed_by(&self, later: &Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens + later.completion_tokens,
            cached_tokens: self.cached_tokens,
            accepted_prediction_tokens: self.accepted_prediction_tokens
                + later.accepted_prediction_tokens,
            rejected_prediction_tokens: self.rejected_prediction_tokens
                + later.rejected_prediction_tokens,
            reasoning_tokens: self.reasoning_tokens + later.reasoning_tokens,
        }
    }

    /// The usage of a request with these per-choice usages: the shared prompt once, every
    /// choice's completion.
    pub fn of_choices<'a>(choices: impl IntoIterator<Item = &'a Usage>) -> Usage {
        choices.into_iter().fold(Usage::default(), |acc, u| Usage {
            prompt_tokens: acc.prompt_tokens.max(u.prompt_tokens),
            completion_tokens: acc.completion_tokens + u.completion_tokens,
            cached_tokens: acc.cached_tokens.max(u.cached_tokens),
            accepted_prediction_tokens: acc.accepted_prediction_tokens
                + u.accepted_prediction_tokens,
            rejected_prediction_tokens: acc.rejected_prediction_tokens
                + u.rejected_prediction_tokens,
            reasoning_tokens: acc.reasoning_tokens + u.reasoning_tokens,
        })
    }
}

/// A token and its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenProb {
    /// Token id.
    pub id: u32,
    /// The bytes it stands for (empty for control tokens).
    pub bytes: Vec<u8>,
    /// Natural log of its probability.
    pub logprob: f32,
}

impl TokenProb {
    /// The token's text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// One generated token's log-probability and the most likely alternatives at its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The generated token.
    pub token: TokenProb,
    /// The most likely tokens, most likely first (as many as the request asked for).
    pub top: Vec<TokenProb>,
}

/// One finished choice.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The generated text, stop string excluded (the answer, without its reasoning).
    pub text: String,
    /// The model's reasoning before its answer (empty when it wrote none).
    pub reasoning: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Per-token log-probabilities of the text, when asked for.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Token counts of this choice.
    pub usage: Usage,
    /// The stop string that ended it, if one did.
    pub stop_sequence: Option<String>,
    /// The tool calls it made.
    pub tool_calls: Vec<ToolCall>,
}

/// A finished generation: one choice per requested `n`.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The choices, in index order.
    pub choices: Vec<Choice>,
    /// Token counts of the whole request.
    pub usage: Usage,
}

impl Completion {
    /// The first choice's text.
    pub fn text(&self) -> &str {
        self.choices.first().map_or("", |c| c.text.as_str())
    }

    /// Why the first choice ended.
    pub fn finish_reason(&self) -> FinishReason {
        self.choices
            .first()
            .map_or(FinishReason::Stop, |c| c.finish_reason)
    }
}

/// One event of a streamed generation. Events of several choices interleave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamEvent {
    /// New text of one choice; always whole UTF-8 characters and never past a stop string.
    Delta {
        /// The choice's index.
        choice: u32,
        /// The text.
        text: String,
        /// Log-probabilities of the tokens whose text this delta completes (empty unless asked
        /// for).
        logprobs: Vec<TokenLogprob>,
    },
    /// More of one choice's reasoning (its markup is never part of a delta).
    Reasoning {
        /// The choice's index.
        choice: u32,
        /// The text.
        text: String,
    },
    /// A complete tool call of one choice (its markup is never part of a delta).
    ToolCall {
        /// The choice's index.
        choice: u32,
        /// The call.
        call: ToolCall,
    },
    /// The last event of one choice: why it ended and its token counts.
    Done {
        /// The choice's index.
        choice: u32,
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts of this choice (the prompt and cached tokens are the request's).
        usage: Usage,
        /// The stop string that ended it, if one did.
        #[serde(default)]
        stop_sequence: Option<String>,
    },
}

/// A stream of generation events; dropping it cancels the generation.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<StreamEvent>> + Send>>;

/// A rewrite of each choice's text into events, as the reasoning splitter and the tool-call
/// parser make (one value per choice, made fresh when the choice first speaks).
pub(crate) trait ChoiceFilter: Send + 'static {
    /// The events a delta of the choice becomes.
    fn delta(&mut self, choice: u32, text: String, logprobs: Vec<TokenLogprob>)
        -> Vec<StreamEvent>;

    /// The choice ended (`usage` and `reason` as it ended, for the filter to amend): the
    /// events before its final one.
    fn finish(
        &mut self,
        choice: u32,
        reason: &mut FinishReason,
        usage: &mut Usage,
    ) -> Vec<StreamEvent>;
}

/// `stream` with each choice's deltas and end rewritten by its own filter from `fresh`; other
/// events and errors pass as they are.
pub(crate) fn filter_choices<F: ChoiceFilter>(
    stream: TokenStream,
    fresh: impl Fn() -> F + Send + 'static,
) -> TokenStream {
    use futures::StreamExt;
    let filters: std::collections::HashMap<u32, F> = std::collections::HashMap::new();
    let events = stream
        .scan(filters, move |filters, event| {
            let out: Vec<Result<StreamEvent>> = match event {
                Ok(StreamEvent::Delta {
                    choice,
                    text,
                    logprobs,
                }) => filters
                    .entry(choice)
                    .or_insert_with(&fresh)
                    .delta(choice, text, logprobs)
                    .into_iter()
                    .map(Ok)
                    .collect(),
                Ok(StreamEvent::Done {
                    choice,
                    mut finish_reason,
                    mut usage,
                    stop_sequence,
                }) => {
                    let mut filter = filters.remove(&choice).unwrap_or_else(&fresh);
                    let mut out = filter.finish(choice, &mut finish_reason, &mut usage);
                    out.push(StreamEvent::Done {
                        choice,
                        finish_reason,
                        usage,
                        stop_sequence,
                    });
                    out.into_iter().map(Ok).collect()
                }
                other => vec![other],
            };
            futures::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten();
    Box::pin(events)
}
