//! Cost of picking one token on the host from a logits row the size of SmolLM2's vocabulary
//! (49,152): argmax, the default sampling chain, penalties, and log-probabilities with 5 and 20
//! alternatives. At 100-300 generated tokens/s a token has 3-10 ms, so these microseconds are
//! the core's share of sampled or logprob decoding.
//!
//! `cargo bench -p minerva-core --bench picker`

use std::time::Instant;

use minerva_core::generation::{PickerOptions, TokenPicker};
use minerva_core::SamplingParams;

const VOCAB: usize = 49_152;

/// A row shaped like real logits: mostly around -5, a few tokens far ahead.
fn logits(seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..VOCAB)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = (state >> 40) as f32 / (1u64 << 24) as f32;
            let lead = if i % 4099 == 0 { 12.0 } else { 0.0 };
            noise * 6.0 - 8.0 + lead
        })
        .collect()
}

fn measure(name: &str, sampling: SamplingParams, logprobs: Option<u32>) {
    let mut picker = TokenPicker::new(
        PickerOptions {
            sampling: sampling.resolve(),
            logit_bias: Vec::new(),
            logprobs,
        },
        Some(1),
    );
    let rows: Vec<Vec<f32>> = (0..16).map(logits).collect();
    let history: Vec<u32> = (0..64).map(|i| i * 31).collect();
    const PICKS: usize = 4000;
    let started = Instant::now();
    let mut sink = 0u64;
    for i in 0..PICKS {
        sink += u64::from(picker.pick(&rows[i % rows.len()], &history).token);
    }
    let per_pick = started.elapsed().as_secs_f64() / PICKS as f64;
    println!(
        "{name:<34} {:>8.1} µs per token  (checksum {sink})",
        per_pick * 1e6
    );
}

fn main() {
    let greedy = SamplingParams::greedy();
    measure("greedy (argmax)", greedy, None);
    measure(
        "default sampling (t 0.8, k 40)",
        SamplingParams::default(),
        None,
    );
    measure(
        "sampling with penalties",
        SamplingParams {
            repeat_penalty: Some(1.1),
            presence_penalty: Some(0.5),
            ..Default::default()
        },
        None,
    );
    measure("greedy + 5 logprobs", greedy, Some(5));
    measure("greedy + 20 logprobs", greedy, Some(20));
}
