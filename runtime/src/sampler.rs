//! Token selection from a logits vector, for engines that sample on the host. The chain and its
//! order are llama.cpp's (what the llama engine runs natively), so a request means the same on
//! every engine: penalties over the recent tokens, then greedy, or top-k, top-p, min-p,
//! temperature and a seeded draw.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::sampling::ResolvedSampling;

/// Samples one token per step for one generation.
#[derive(Debug)]
pub struct Sampler {
    params: ResolvedSampling,
    rng: StdRng,
}

impl Sampler {
    /// A sampler for `params`; seeded when they carry a seed, from the OS otherwise.
    pub fn new(params: ResolvedSampling) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Sampler { params, rng }
    }

    /// Whether the choice is the plain argmax of the logits (an engine may then pick on device).
    pub fn is_plain_greedy(&self) -> bool {
        self.params.is_plain_greedy()
    }

    /// Pick the next token. `logits` is modified in place; `history` is every token so far
    /// (prompt and generated), of which the last `repeat_last_n` are penalised.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        if self.params.has_penalties() {
            apply_penalties(&self.params, logits, history);
        }
        if self.params.is_greedy() {
            return argmax(logits);
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if candidates.is_empty() {
            return argmax(logits);
        }
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        let p = &self.params;
        if p.top_k > 0 {
            candidates.truncate(p.top_k as usize);
        }
        if p.top_p < 1.0 {
            let probs = softmax(&candidates, 1.0);
            let mut total = 0.0;
            let keep = probs
                .iter()
                .position(|&q| {
                    total += q;
                    total >= p.top_p
                })
                .map_or(candidates.len(), |i| i + 1);
            candidates.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            // Relative to the most likely token: logit >= max + ln(min_p).
            let floor = candidates[0].1 + p.min_p.ln();
            candidates.retain(|c| c.1 >= floor);
        }
        let probs = softmax(&candidates, p.temperature);
        let mut draw: f32 = self.rng.random();
        for (c, q) in candidates.iter().zip(&probs) {
            if draw < *q {
                return c.0;
            }
            draw -= q;
        }
        candidates[candidates.len() - 1].0
    }
}

/// Index of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Repeat, frequency and presence penalties over the last `repeat_last_n` tokens of `history`,
/// as llama.cpp applies them.
fn apply_penalties(p: &ResolvedSampling, logits: &mut [f32], history: &[u32]) {
    let window = &history[history.len().saturating_sub(p.repeat_last_n as usize)..];
    let mut counts = std::collections::HashMap::<u32, u32>::new();
    for &t in window {
        *counts.entry(t).or_default() += 1;
    }
    for (token, count) in counts {
        let Some(l) = logits.get_mut(token as usize) else {
            continue;
        };
        if *l <= 0.0 {
            *l *= p.repeat_penalty;
        } else {
            *l /= p.repeat_penalty;
        }
        *l -= count as f32 * p.frequency_penalty + p.presence_penalty;
    }
}

/// Probabilities of sorted `candidates` at `temperature`.
fn softmax(candidates: &[(u32, f32)], temperature: f32) -> Vec<f32> {
    let max = candidates[0].1;
    let weights: Vec<f32> = candidates
        .iter()
        .map(|c| ((c.1 - max) / temperature).exp())
        .collect();
    let total: f32 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SamplingParams;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> ResolvedSampling {
        let mut p = SamplingParams::default();
        f(&mut p);
        p.resolve()
    }

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut s = Sampler::new(params(|p| p.temperature = Some(0.0)));
        assert!(s.is_plain_greedy());
        assert_eq!(s.sample(&mut [0.1, 2.0, -1.0, 1.9], &[]), 1);
    }

    #[test]
    fn repeat_penalty_can_change_the_greedy_choice() {
        let mut s = Sampler::new(params(|p| {
            p.temperature = Some(0.0);
            p.repeat_penalty = Some(1.5);
        }));
        assert!(!s.is_plain_greedy());
        assert_eq!(s.sample(&mut [0.1, 2.0, -1.0, 1.9], &[1]), 3);
    }

    #[test]
    fn top_k_one_is_deterministic_and_seeds_repeat() {
        let mut s = Sampler::new(params(|p| {
            p.temperature = Some(1.0);
            p.top_k = Some(1);
        }));
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 1.0, 0.5], &[]), 1);
        }
        let draws = |seed| {
            let mut s = Sampler::new(params(|p| {
                p.temperature = Some(1.5);
                p.top_k = Some(0);
                p.top_p = Some(1.0);
                p.min_p = Some(0.0);
                p.seed = Some(seed);
            }));
            (0..32)
                .map(|_| s.sample(&mut [0.0, 0.1, 0.2, 0.3], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let mut s = Sampler::new(params(|p| {
            p.temperature = Some(1.0);
            p.min_p = Some(0.5);
            p.seed = Some(1);
        }));
        // exp(-3) < 0.5: token 1 can never be drawn.
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [3.0, 0.0], &[]), 0);
        }
    }
}
