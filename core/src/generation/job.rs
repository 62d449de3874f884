//! What a model's thread is asked to do: [`Work`] from the [`Generator`](super::Generator) and
//! the [`DraftModel`] handles, a [`Job`] per generation request.

use super::constraint::TokenConstraint;
use super::draft::DraftModel;
use super::picker::PickerOptions;
use super::sequence::Events;
use crate::error::Result;
use crate::request::Drafting;

/// What the model's thread is asked to do.
pub(crate) enum Work {
    /// Generate.
    Generate(Box<Job>),
    /// Embed token lists (between two steps).
    Embed {
        /// The inputs' token ids.
        inputs: Vec<Vec<u32>>,
        /// Where the vectors go.
        reply: tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>>>,
    },
    /// Draft with this model from now on (for requests that ask for a draft model).
    AttachDraft(DraftModel),
}

/// A request waiting for slots.
pub(crate) struct Job {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// How its choices pick tokens.
    pub picker: PickerOptions,
    /// What its text must match (each choice gets its own copy).
    pub constraint: Option<TokenConstraint>,
    /// Seed of choice 0 (choice `i` uses `seed + i`); `None`: random.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Most tokens per choice.
    pub max_tokens: Option<u32>,
    /// Generate past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Reuse a cached prompt prefix.
    pub cache_prompt: bool,
    /// Choices.
    pub n: u32,
    /// Speculative decoding.
    pub drafting: Option<Drafting>,
    /// The predicted output's tokens (drafts come from it).
    pub prediction: Vec<u32>,
    /// Where its events go.
    pub events: Events,
    /// Where each generated token id goes as it is taken (drafts for another model).
    pub token_ids: Option<std::sync::mpsc::Sender<u32>>,
}
