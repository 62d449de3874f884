//! llama.cpp's side of the generation core: token batches decoded in one llama.cpp context whose
//! unified KV cache holds every sequence (one llama.cpp sequence id per core sequence), device
//! picks as the argmax of the host logits llama.cpp returns, the vocabulary's pieces, and
//! mean-pooled embeddings from short-lived embedding contexts.

use std::num::NonZeroU32;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::session::{LlamaStateSeqFlags, SeqState};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use minerva_core::generation::{
    argmax, BatchEntry, BatchToken, Evaluator, Limits, SavedState, Vocabulary, Wanted,
};
use minerva_core::{Error, Result};

use crate::ENGINE_NAME;

/// A llama.cpp context evaluating batches for the core's scheduler.
pub struct LlamaEvaluator<'m> {
    model: &'m LlamaModel,
    backend: &'static LlamaBackend,
    threads: i32,
    ctx: LlamaContext<'m>,
    /// Reused between steps: llama.cpp allocates per-token sequence arrays for each batch.
    batch: LlamaBatch<'static>,
    limits: Limits,
    /// Batch index of each logits row of the last step.
    logits_at: Vec<i32>,
}

impl<'m> LlamaEvaluator<'m> {
    /// Evaluate with `ctx`, a context of `model` created for `slots` slots (llama.cpp's sequences); embeddings
    /// run on `threads` threads in contexts of their own; the prompt store holds at most
    /// `prompt_store_bytes` of sequence states.
    pub fn new(
        model: &'m LlamaModel,
        backend: &'static LlamaBackend,
        ctx: LlamaContext<'m>,
        slots: usize,
        threads: i32,
        prompt_store_bytes: usize,
    ) -> Self {
        let limits = Limits {
            kv_cells: ctx.n_ctx() as usize,
            slots,
            batch_tokens: ctx.n_batch() as usize,
            prompt_store_bytes,
        };
        LlamaEvaluator {
            model,
            backend,
            threads,
            batch: LlamaBatch::new(limits.batch_tokens, slots as i32),
            ctx,
            limits,
            logits_at: Vec::new(),
        }
    }
}

/// The vocabulary as the core needs it: every token's bytes (control tokens empty) and the
/// end-of-generation tokens.
pub fn vocabulary(model: &LlamaModel) -> Vocabulary {
    let vocab = model.vocab();
    let tokens: Vec<LlamaToken> = vocab.tokens().collect();
    let pieces = tokens
        .iter()
        .map(|&t| vocab.token_to_piece(t, false, None))
        .collect();
    let eog = tokens
        .iter()
        .filter(|&&t| vocab.is_eog(t))
        .map(|t| t.0 as u32);
    Vocabulary::new(pieces, eog, false)
}

fn engine_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::engine(ENGINE_NAME, format!("{what}: {e}"))
}

impl Evaluator for LlamaEvaluator<'_> {
    type Picks = Vec<u32>;

    fn limits(&self) -> Limits {
        self.limits
    }

    fn evaluate(
        &mut self,
        entries: &[BatchEntry],
        previous: Option<&Vec<u32>>,
    ) -> Result<Vec<u32>> {
        self.batch.clear();
        self.logits_at.clear();
        let mut pick_at = Vec::new();
        for entry in entries {
            let n = entry.tokens.len();
            let outputs = match entry.wanted {
                Wanted::Nothing => 0,
                Wanted::Pick => 1,
                Wanted::Logits(k) => k.min(n),
            };
            for (k, token) in entry.tokens.iter().enumerate() {
                let id = match *token {
                    BatchToken::Id(id) => id,
                    BatchToken::Picked(row) => previous
                        .and_then(|p| p.get(row).copied())
                        .ok_or_else(|| engine_error("batch", "a picked token is missing"))?,
                };
                let pos = (entry.start + k) as i32;
                self.batch
                    .add(
                        LlamaToken(id as i32),
                        pos,
                        &[entry.slot as i32],
                        k + outputs >= n,
                    )
                    .map_err(|e| engine_error("batch", e))?;
            }
            let last = self.batch.n_tokens() - 1;
            match entry.wanted {
                Wanted::Nothing => {}
                Wanted::Pick => pick_at.push(last),
                Wanted::Logits(_) => self
                    .logits_at
                    .extend((0..outputs as i32).rev().map(|back| last - back)),
            }
        }
        self.ctx
            .decode(&mut self.batch)
            .map_err(|e| engine_error("decode failed", e))?;
        Ok(pick_at
            .into_iter()
            .map(|i| argmax(self.ctx.get_logits_ith(i)))
            .collect())
    }

    fn logits(&mut self, row: usize) -> Result<&[f32]> {
        let at = *self
            .logits_at
            .get(row)
            .ok_or_else(|| engine_error("logits", format!("no row {row} in the last step")))?;
        Ok(self.ctx.get_logits_ith(at))
    }

    fn read_picks(&mut self, picks: &Vec<u32>) -> Result<Vec<u32>> {
        Ok(picks.clone())
    }

    fn truncate(&mut self, slot: usize, len: usize) -> Result<()> {
        self.ctx
            .clear_kv_cache_seq(Some(slot as u32), Some(len as u32), None)
            .map_err(|e| engine_error("trimming the KV cache", e))?;
        Ok(())
    }

    fn copy_prefix(&mut self, from: usize, to: usize, len: usize) -> Result<()> {
        self.truncate(to, 0)?;
        self.ctx
            .copy_kv_cache_seq(from as i32, to as i32, Some(0), Some(len as u32))
            .map_err(|e| engine_error("copying the KV cache", e))
    }

    /// llama.cpp's per-sequence state (the sequence's KV cells and positions) as bytes.
    fn save_state(&mut self, slot: usize) -> Result<Option<SavedState>> {
        let state = self
            .ctx
            .state_seq_get(slot as i32, LlamaStateSeqFlags::empty())
            .map_err(|e| engine_error("copying a sequence's state", e))?;
        Ok(Some(SavedState {
            bytes: state.byte_len(),
            data: Box::new(state),
        }))
    }

    fn restore_state(&mut self, slot: usize, state: &SavedState) -> Result<()> {
        let state = state
            .data
            .downcast_ref::<SeqState>()
            .ok_or_else(|| engine_error("restoring a sequence's state", "not a llama.cpp state"))?;
        self.ctx
            .state_seq_set(state, slot as i32)
            .map_err(|e| engine_error("restoring a sequence's state", e))
    }

    /// llama.cpp's own mean pooling, in a short-lived embedding context sized to the input.
    fn embed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let n = u32::try_from(tokens.len().max(1)).unwrap_or(u32::MAX);
        let params = LlamaContextParams::default()
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean)
            .with_n_ctx(NonZeroU32::new(n))
            .with_n_batch(n)
            .with_n_ubatch(n)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let mut ctx = self
            .model
            .new_context(self.backend, params)
            .map_err(|e| engine_error("embedding context", e))?;
        let mut batch = LlamaBatch::new(tokens.len().max(1), 1);
        for (pos, &token) in tokens.iter().enumerate() {
            batch
                .add(LlamaToken(token as i32), pos as i32, &[0], true)
                .map_err(|e| engine_error("batch", e))?;
        }
        ctx.decode(&mut batch)
            .map_err(|e| engine_error("embedding decode failed", e))?;
        let pooled = ctx
            .embeddings_seq_ith(0)
            .map_err(|e| engine_error("the model returned no pooled embedding", e))?;
        Ok(pooled.to_vec())
    }
}
