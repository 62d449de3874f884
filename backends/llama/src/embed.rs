//! Embeddings: mean-pooled hidden states from a short-lived embedding context, L2-normalised
//! (the convention of OpenAI's embeddings endpoint).

use std::num::NonZeroU32;
use std::sync::Arc;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use minerva_runtime::{Embeddings, Error, Result};

use crate::engine::ENGINE_NAME;

/// Embed each input with `model`, refusing inputs longer than `max_tokens`.
pub fn embed(
    model: &Arc<LlamaModel>,
    backend: &LlamaBackend,
    inputs: &[String],
    max_tokens: usize,
    threads: i32,
) -> Result<Embeddings> {
    let vocab = model.vocab();
    let tokenized: Vec<_> = inputs
        .iter()
        .map(|text| vocab.tokenize(text.as_bytes(), vocab.should_add_bos(), false))
        .collect();
    let longest = tokenized.iter().map(Vec::len).max().unwrap_or(0);
    if longest > max_tokens {
        return Err(Error::ContextOverflow {
            prompt_tokens: longest,
            context_size: max_tokens,
        });
    }
    let n = u32::try_from(longest.max(1)).unwrap_or(u32::MAX);
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_pooling_type(LlamaPoolingType::Mean)
        .with_n_ctx(NonZeroU32::new(n))
        .with_n_batch(n)
        .with_n_ubatch(n)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model
        .new_context(backend, params)
        .map_err(|e| Error::engine(ENGINE_NAME, format!("embedding context: {e}")))?;
    let mut vectors = Vec::with_capacity(inputs.len());
    let mut batch = LlamaBatch::new(longest.max(1), 1);
    for tokens in &tokenized {
        ctx.clear_kv_cache();
        batch.clear();
        for (pos, &token) in tokens.iter().enumerate() {
            batch
                .add(token, pos as i32, &[0], true)
                .map_err(|e| Error::engine(ENGINE_NAME, e.to_string()))?;
        }
        ctx.decode(&mut batch)
            .map_err(|e| Error::engine(ENGINE_NAME, format!("embedding decode failed: {e}")))?;
        let pooled = ctx
            .embeddings_seq_ith(0)
            .map_err(|_| Error::engine(ENGINE_NAME, "the model returned no pooled embedding"))?;
        vectors.push(normalize(pooled));
    }
    Ok(Embeddings {
        vectors,
        prompt_tokens: tokenized.iter().map(|t| t.len() as u32).sum(),
    })
}

fn normalize(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}
