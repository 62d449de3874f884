//! The narrow interface an engine implements for the generation core: evaluate batches of tokens
//! into logits (or into tokens picked on the device), keep each slot's KV cache, and describe
//! its vocabulary. Everything else (sequences, sampling, scheduling) is the core's.

use std::any::Any;
use std::collections::HashMap;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// One input position of a batch entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchToken {
    /// A known token id.
    Id(u32),
    /// The token the previous step picked on the device at this row of its picks (pipelined
    /// decoding: fed before the host has read it back).
    Picked(usize),
}

/// What a batch entry wants back from its last positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Nothing (a prompt chunk that is not the prompt's end).
    Nothing,
    /// The largest logit of the last position, picked on the device (one row of the step's picks).
    Pick,
    /// Logits of the last `n` positions on the host (`n` rows, in position order).
    Logits(usize),
}

/// A slot's new tokens in one evaluation step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    /// The slot (0..[`Limits::slots`]) whose KV cache holds exactly `start` positions.
    pub slot: usize,
    /// Position of the first token.
    pub start: usize,
    /// The tokens, in order.
    pub tokens: Vec<BatchToken>,
    /// What to return.
    pub wanted: Wanted,
}

/// Sizes the core schedules within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// KV cells shared by all slots; also the most one slot may hold.
    pub kv_cells: usize,
    /// Slots: KV caches of their own, one per sequence generated at once.
    pub slots: usize,
    /// Most tokens evaluated in one step.
    pub batch_tokens: usize,
    /// Most bytes of KV state kept in host memory for conversations that lost their slot (the
    /// prompt store; 0: none).
    pub prompt_store_bytes: usize,
}

/// A slot's KV state copied out of the engine's cache, for the prompt store.
pub struct SavedState {
    /// Bytes it holds.
    pub bytes: usize,
    /// The engine's own form of it.
    pub data: Box<dyn Any>,
}

/// An engine's tokenizer, for the runtime's model object (which owns the rule of which special
/// tokens a prompt gets).
pub trait Tokenizer: Send + Sync {
    /// `text`'s token ids; text spelling a special token becomes that token. With
    /// `add_special`, the tokens the model puts around a text of its own are added (its BOS,
    /// where it has one).
    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>>;

    /// The text of the token `add_special` starts a text with, if any: a text that already
    /// starts with it is not given a second one.
    fn bos_text(&self) -> Option<&str>;
}

/// An engine's vocabulary as the core needs it: the bytes each token stands for and which tokens
/// end a generation.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    pieces: Vec<Vec<u8>>,
    end_of_generation: Vec<bool>,
    strip_first_space: bool,
    /// Control tokens written as text (see [`Vocabulary::keep_markup`]).
    markup: OnceLock<HashMap<u32, Vec<u8>>>,
}

impl Vocabulary {
    /// A vocabulary of `pieces` (empty for control tokens) whose `end_of_generation` ids end a
    /// generation. `strip_first_space`: SentencePiece vocabularies mark word starts with a space,
    /// dropped from a generation's first token as Hugging Face's decoder does.
    pub fn new(
        pieces: Vec<Vec<u8>>,
        end_of_generation: impl IntoIterator<Item = u32>,
        strip_first_space: bool,
    ) -> Self {
        let mut eog = vec![false; pieces.len()];
        for id in end_of_generation {
            if let Some(flag) = eog.get_mut(id as usize) {
                *flag = true;
            }
        }
        Vocabulary {
            pieces,
            end_of_generation: eog,
            strip_first_space,
            markup: OnceLock::new(),
        }
    }

    /// Write these control tokens as the given text from now on (markup the model's chat format
    /// needs parsed, e.g. Harmony's `<|channel|>`): other control tokens stay without text. Set
    /// once, before the first request; later calls change nothing.
    pub fn keep_markup(&self, tokens: impl IntoIterator<Item = (u32, Vec<u8>)>) {
        let markup = tokens
            .into_iter()
            .filter(|(id, _)| self.pieces.get(*id as usize).is_some_and(Vec::is_empty))
            .collect();
        let _ = self.markup.set(markup);
    }

    /// Number of token ids.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The bytes of token `id` (`first`: the first token of a generation).
    pub fn piece(&self, id: u32, first: bool) -> &[u8] {
        let bytes = self.pieces.get(id as usize).map_or(&[][..], Vec::as_slice);
        match bytes {
            [] => self
                .markup
                .get()
                .and_then(|m| m.get(&id))
                .map_or(&[][..], Vec::as_slice),
            [b' ', rest @ ..] if first && self.strip_first_space => rest,
            _ => bytes,
        }
    }

    /// The ids that end a generation, in id order.
    pub fn end_of_generation_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.end_of_generation
            .iter()
            .enumerate()
            .filter(|(_, &eog)| eog)
            .map(|(id, _)| id as u32)
    }

    /// Whether `id` ends a generation (end of sequence, end of turn).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation
            .get(id as usize)
            .copied()
            .unwrap_or(false)
    }
}

/// One model's evaluation on one engine, driven by the core's scheduler on the model's thread.
pub trait Evaluator {
    /// Tokens picked on the device in one step; the core reads them back later, possibly after
    /// queueing the next step.
    type Picks;

    /// Sizes to schedule within.
    fn limits(&self) -> Limits;

    /// Whether steps run asynchronously, so that feeding [`BatchToken::Picked`] before reading
    /// the picks back overlaps the host's work with the device's. Synchronous engines return
    /// false and the core reads every step's picks at once.
    fn pipelined(&self) -> bool {
        false
    }

    /// Queue one step over `batch` (`previous`: the picks that [`BatchToken::Picked`] refers
    /// to). Returns this step's picks, one row per entry wanting [`Wanted::Pick`], in entry
    /// order.
    fn evaluate(
        &mut self,
        batch: &[BatchEntry],
        previous: Option<&Self::Picks>,
    ) -> Result<Self::Picks>;

    /// Logits row `row` of the last step: rows are numbered over the entries wanting
    /// [`Wanted::Logits`], in entry order. Valid until the next step.
    fn logits(&mut self, row: usize) -> Result<&[f32]>;

    /// The token ids of `picks`, waiting for them if needed.
    fn read_picks(&mut self, picks: &Self::Picks) -> Result<Vec<u32>>;

    /// Keep only the first `len` positions of slot `slot`'s KV cache.
    fn truncate(&mut self, slot: usize, len: usize) -> Result<()>;

    /// Make the first `len` positions of `to`'s KV cache those of `from` (which holds them).
    fn copy_prefix(&mut self, from: usize, to: usize, len: usize) -> Result<()>;

    /// A copy of slot `slot`'s whole KV state (which stays in the cache too); `None` where
    /// the engine cannot copy states out.
    fn save_state(&mut self, slot: usize) -> Result<Option<SavedState>> {
        let _ = slot;
        Ok(None)
    }

    /// Make slot `slot`'s KV cache hold `state` (saved from any slot of this evaluator).
    fn restore_state(&mut self, slot: usize, state: &SavedState) -> Result<()> {
        let _ = (slot, state);
        Err(Error::engine(
            "generation",
            "this engine cannot restore KV states",
        ))
    }

    /// Finish any queued work (called before the thread waits for new requests).
    fn settle(&mut self) -> Result<()> {
        Ok(())
    }

    /// The mean over `tokens` of the model's last hidden states (after its final norm),
    /// evaluated apart from every slot's cache. Engines without embeddings keep this.
    fn embed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let _ = tokens;
        Err(Error::InvalidRequest(
            "this engine does not compute embeddings".into(),
        ))
    }
}
