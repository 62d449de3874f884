//! The runtime's sampling options as a llama.cpp sampler chain, in llama.cpp's own order:
//! penalties, top-k, top-p, min-p, temperature, then the final pick.

use llama_cpp_2::sampling::LlamaSampler;
use minerva_runtime::ResolvedSampling;

/// llama.cpp's "pick a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// Build the sampler chain for `s` over a vocabulary of `n_vocab` tokens.
pub fn build(s: &ResolvedSampling, n_vocab: i32) -> LlamaSampler {
    let mut chain = Vec::new();
    if s.has_penalties() {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            i32::try_from(s.repeat_last_n).unwrap_or(i32::MAX),
            s.repeat_penalty,
            s.frequency_penalty,
            s.presence_penalty,
        ));
    }
    if s.is_greedy() {
        chain.push(LlamaSampler::greedy());
    } else {
        if s.top_k > 0 {
            chain.push(LlamaSampler::top_k(
                i32::try_from(s.top_k).unwrap_or(i32::MAX),
            ));
        }
        if s.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(s.top_p, 1));
        }
        if s.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(s.min_p, 1));
        }
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(s.seed.map_or(RANDOM_SEED, fold_seed)));
    }
    LlamaSampler::chain_simple(chain)
}

/// Fold a 64-bit seed into llama.cpp's 32 bits, avoiding the "random" marker value.
fn fold_seed(seed: u64) -> u32 {
    let folded = (seed ^ (seed >> 32)) as u32;
    if folded == RANDOM_SEED {
        folded - 1
    } else {
        folded
    }
}
