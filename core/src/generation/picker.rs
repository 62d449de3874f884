//! Picks each generated token from a logits row on the host, the same way for every engine:
//! logit bias, then llama.cpp's chain in llama.cpp's order (penalties over the recent tokens,
//! then greedy, or top-k, top-p, min-p, temperature and a seeded draw), and the chosen token's
//! log-probability with the most likely alternatives when asked.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::constraint::TokenConstraint;
use crate::sampling::ResolvedSampling;

/// How one sequence picks its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct PickerOptions {
    /// Sampling with defaults filled in.
    pub sampling: ResolvedSampling,
    /// Added to the logits of these token ids before anything else.
    pub logit_bias: Vec<(u32, f32)>,
    /// Report the chosen token's log-probability and this many alternatives.
    pub logprobs: Option<u32>,
}

/// A picked token and, when asked, its log-probability and the top alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct Picked {
    /// The token id.
    pub token: u32,
    /// Log-probabilities, if the options ask for them.
    pub logprobs: Option<PickedLogprobs>,
}

impl Picked {
    /// A token picked on the device: nothing but its id.
    pub fn plain(token: u32) -> Self {
        Picked {
            token,
            logprobs: None,
        }
    }
}

/// Log-probabilities of one pick, under the model's distribution after bias and penalties (before
/// temperature and truncation, so they do not depend on the sampling settings).
#[derive(Debug, Clone, PartialEq)]
pub struct PickedLogprobs {
    /// The chosen token's log-probability.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// One sequence's token picker.
#[derive(Debug)]
pub struct TokenPicker {
    options: PickerOptions,
    rng: StdRng,
    /// Adjusted logits, when bias or penalties change them.
    scratch: Vec<f32>,
    candidates: Vec<(u32, f32)>,
    constraint: Option<TokenConstraint>,
}

impl TokenPicker {
    /// A picker seeded with `seed`, or from the OS when `None`.
    pub fn new(options: PickerOptions, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        TokenPicker {
            options,
            rng,
            scratch: Vec::new(),
            candidates: Vec::new(),
            constraint: None,
        }
    }

    /// The same picker, restricted to the tokens `constraint` allows.
    pub fn constrained(mut self, constraint: Option<TokenConstraint>) -> Self {
        self.constraint = constraint;
        self
    }

    /// Whether the pick is the plain largest logit and nothing else is reported, so that an
    /// engine may pick on the device without sending logits to the host.
    pub fn picks_on_device(&self) -> bool {
        self.options.sampling.is_plain_greedy()
            && self.options.logit_bias.is_empty()
            && self.options.logprobs.is_none()
            && self.constraint.is_none()
    }

    /// Whether log-probabilities are reported.
    pub fn reports_logprobs(&self) -> bool {
        self.options.logprobs.is_some()
    }

    /// Pick the next token from `logits`; `history` is every token so far (prompt and
    /// generated), of which the last `repeat_last_n` are penalised.
    pub fn pick(&mut self, logits: &[f32], history: &[u32]) -> Picked {
        let adjusted = self.options.sampling.has_penalties()
            || !self.options.logit_bias.is_empty()
            || self.constraint.is_some();
        let logits = if adjusted {
            self.scratch.clear();
            self.scratch.extend_from_slice(logits);
            if self.options.sampling.has_penalties() {
                apply_penalties(&self.options.sampling, &mut self.scratch, history);
            }
            for &(id, bias) in &self.options.logit_bias {
                if let Some(l) = self.scratch.get_mut(id as usize) {
                    *l += bias;
                }
            }
            if let Some(constraint) = &mut self.constraint {
                constraint.restrict(&mut self.scratch);
            }
            &self.scratch[..]
        } else {
            logits
        };
        let mut token = if self.options.sampling.is_greedy() {
            argmax(logits)
        } else {
            sample(
                &self.options.sampling,
                logits,
                &mut self.candidates,
                &mut self.rng,
            )
        };
        if let Some(constraint) = &mut self.constraint {
            // Sampling's fast exp gives banned tokens a weight of ~1e-38, not 0: never take one.
            if !constraint.allows(token) {
                token = argmax(logits);
            }
            constraint.advance(token);
        }
        let logprobs = self
            .options
            .logprobs
            .map(|n| logprobs_of(logits, token, n as usize, &mut self.candidates));
        Picked { token, logprobs }
    }
}

/// Index of the largest logit (the first on ties; NaN ignored; 0 for none). Two passes that
/// the compiler vectorises, the maximum in lanes, then the first block holding it: 2.8x faster
/// than tracking an index per lane (`benches/picker.rs`: 4.9 against 13.6 us a 49,152 row).
pub fn argmax(logits: &[f32]) -> u32 {
    let best = max_value(logits);
    let mut blocks = logits.chunks_exact(LANES);
    for (b, block) in (&mut blocks).enumerate() {
        if block.iter().fold(false, |hit, &l| hit | (l == best)) {
            let at = block.iter().position(|&l| l == best).unwrap_or(0);
            return (b * LANES + at) as u32;
        }
    }
    let tail = logits.len() - blocks.remainder().len();
    blocks
        .remainder()
        .iter()
        .position(|&l| l == best)
        .map_or(0, |at| (tail + at) as u32)
}

/// Values per block in the vectorised scans.
const LANES: usize = 16;

/// The largest value (NaN ignored; -inf for none), in lanes the compiler vectorises.
fn max_value(values: &[f32]) -> f32 {
    let larger = |a: f32, b: f32| if b > a { b } else { a };
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut blocks = values.chunks_exact(LANES);
    for block in &mut blocks {
        for (lane, &v) in lanes.iter_mut().zip(block) {
            *lane = larger(*lane, v);
        }
    }
    blocks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |a, &b| larger(a, b))
}

/// Top-k, top-p, min-p, temperature and a draw, as llama.cpp chains them.
fn sample(
    p: &ResolvedSampling,
    logits: &[f32],
    candidates: &mut Vec<(u32, f32)>,
    rng: &mut StdRng,
) -> u32 {
    let k = if p.top_k == 0 {
        logits.len()
    } else {
        (p.top_k as usize).min(logits.len())
    };
    largest(logits, k, candidates);
    if candidates.is_empty() {
        return argmax(logits);
    }
    if p.top_p < 1.0 {
        let probs = softmax(candidates, 1.0);
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
    let probs = softmax(candidates, p.temperature);
    let mut draw: f32 = rng.random();
    for (c, q) in candidates.iter().zip(&probs) {
        if draw < *q {
            return c.0;
        }
        draw -= q;
    }
    candidates[candidates.len() - 1].0
}

/// The `k` largest finite logits as (id, logit), largest first, in one pass over the row.
fn largest(logits: &[f32], k: usize, out: &mut Vec<(u32, f32)>) {
    out.clear();
    if k == 0 {
        return;
    }
    // Once `out` holds k entries, `floor` is the smallest of them, at `floor_at`.
    let mut floor = f32::NEG_INFINITY;
    let mut floor_at = 0;
    for (i, &l) in logits.iter().enumerate() {
        // NaN compares as neither: skipped too.
        if l.partial_cmp(&floor) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        if out.len() < k {
            out.push((i as u32, l));
            if out.len() < k {
                continue;
            }
        } else {
            out[floor_at] = (i as u32, l);
        }
        (floor_at, floor) = out
            .iter()
            .enumerate()
            .map(|(j, c)| (j, c.1))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((0, f32::NEG_INFINITY));
    }
    out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// The log-probability of `token` and the `top` most likely tokens under `softmax(logits)`.
fn logprobs_of(
    logits: &[f32],
    token: u32,
    top: usize,
    scratch: &mut Vec<(u32, f32)>,
) -> PickedLogprobs {
    let lse = log_sum_exp(logits);
    largest(logits, top.min(logits.len()), scratch);
    PickedLogprobs {
        logprob: logits
            .get(token as usize)
            .map_or(f32::NEG_INFINITY, |l| l - lse),
        top: scratch.iter().map(|&(id, l)| (id, l - lse)).collect(),
    }
}

/// `ln(sum(exp(logits)))`, computed stably in eight lanes the compiler vectorises.
fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = max_value(logits);
    if !max.is_finite() {
        return max;
    }
    let mut lanes = [0f32; 8];
    let mut chunks = logits.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &l) in lanes.iter_mut().zip(chunk) {
            *lane += exp_nonpositive(l - max);
        }
    }
    let rest: f32 = chunks
        .remainder()
        .iter()
        .map(|&l| exp_nonpositive(l - max))
        .sum();
    max + (lanes.iter().sum::<f32>() + rest).ln()
}

/// `exp(x)` for `x <= 0` (relative error below 1e-5; NaN and anything below -87 count as -87,
/// about 1.6e-38), in branch-free arithmetic so that a loop over it vectorises:
/// `2^(x log2 e)` split into a whole power of two and a polynomial.
fn exp_nonpositive(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to a whole number held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let t = x.max(-87.0) * std::f32::consts::LOG2_E;
    let shifted = t + ROUND;
    let whole = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let f = t - (shifted - ROUND);
    // 2^f on [-0.5, 0.5]: Taylor series of e^(f ln 2) to the 6th power.
    const C: [f32; 6] = [
        std::f32::consts::LN_2,
        0.240_226_5,
        0.055_504_11,
        0.009_618_129,
        0.001_333_355_8,
        0.000_154_035_3,
    ];
    let poly = 1.0 + f * (C[0] + f * (C[1] + f * (C[2] + f * (C[3] + f * (C[4] + f * C[5])))));
    f32::from_bits(((whole + 127) << 23) as u32) * poly
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

    fn picker(f: impl FnOnce(&mut SamplingParams), seed: Option<u64>) -> TokenPicker {
        let mut p = SamplingParams::default();
        f(&mut p);
        TokenPicker::new(
            PickerOptions {
                sampling: p.resolve(),
                logit_bias: Vec::new(),
                logprobs: None,
            },
            seed,
        )
    }

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut s = picker(|p| p.temperature = Some(0.0), None);
        assert!(s.picks_on_device());
        assert_eq!(s.pick(&[0.1, 2.0, -1.0, 1.9], &[]).token, 1);
    }

    #[test]
    fn repeat_penalty_can_change_the_greedy_choice() {
        let mut s = picker(
            |p| {
                p.temperature = Some(0.0);
                p.repeat_penalty = Some(1.5);
            },
            None,
        );
        assert!(!s.picks_on_device());
        assert_eq!(s.pick(&[0.1, 2.0, -1.0, 1.9], &[1]).token, 3);
    }

    #[test]
    fn top_k_one_is_deterministic_and_seeds_repeat() {
        let mut s = picker(
            |p| {
                p.temperature = Some(1.0);
                p.top_k = Some(1);
            },
            None,
        );
        for _ in 0..20 {
            assert_eq!(s.pick(&[0.0, 1.0, 0.5], &[]).token, 1);
        }
        let draws = |seed| {
            let mut s = picker(
                |p| {
                    p.temperature = Some(1.5);
                    p.top_k = Some(0);
                    p.top_p = Some(1.0);
                    p.min_p = Some(0.0);
                },
                Some(seed),
            );
            (0..32)
                .map(|_| s.pick(&[0.0, 0.1, 0.2, 0.3], &[]).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let mut s = picker(
            |p| {
                p.temperature = Some(1.0);
                p.min_p = Some(0.5);
            },
            Some(1),
        );
        // exp(-3) < 0.5: token 1 can never be drawn.
        for _ in 0..50 {
            assert_eq!(s.pick(&[3.0, 0.0], &[]).token, 0);
        }
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        let mut row = vec![0.0f32; 1003];
        row[17] = 5.0;
        row[900] = 5.0;
        row[1001] = 5.0;
        row[3] = f32::NAN;
        assert_eq!(argmax(&row), 17);
        row[1002] = 6.0;
        assert_eq!(argmax(&row), 1002);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 1);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NAN; 40]), 0);
        let mut row = vec![f32::NEG_INFINITY; 40];
        assert_eq!(argmax(&row), 0);
        row[20] = -1.0;
        assert_eq!(argmax(&row), 20);
        row[35] = 1.0;
        assert_eq!(argmax(&row), 35);
    }

    #[test]
    fn largest_keeps_the_k_best_in_order() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32).collect();
        let mut out = Vec::new();
        largest(&logits, 5, &mut out);
        let values: Vec<f32> = out.iter().map(|c| c.1).collect();
        assert_eq!(values, vec![999.0, 998.0, 997.0, 996.0, 995.0]);
        for (id, l) in out {
            assert_eq!(logits[id as usize], l);
        }
        largest(&[f32::NAN, f32::NEG_INFINITY, 1.0], 3, &mut Vec::new());
    }

    #[test]
    fn fast_exp_matches_the_library() {
        for i in 0..2000 {
            let x = -(i as f32) * 0.05;
            let (fast, exact) = (exp_nonpositive(x), x.exp());
            assert!(
                (fast - exact).abs() <= 1e-5 * exact + 1e-36,
                "{x}: {fast} vs {exact}"
            );
        }
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 2e-38);
        assert!(exp_nonpositive(f32::NAN) < 2e-38);
    }

    #[test]
    fn logprobs_are_log_softmax_and_bias_forces_or_bans() {
        let logits = [1.0f32, 2.0, 3.0, 0.5];
        let mut s = TokenPicker::new(
            PickerOptions {
                sampling: SamplingParams::greedy().resolve(),
                logit_bias: Vec::new(),
                logprobs: Some(2),
            },
            None,
        );
        assert!(!s.picks_on_device());
        let picked = s.pick(&logits, &[]);
        let total: f32 = logits.iter().map(|l| l.exp()).sum();
        let lp = picked.logprobs.unwrap();
        assert_eq!(picked.token, 2);
        assert!((lp.logprob - (3.0f32.exp() / total).ln()).abs() < 1e-5);
        assert_eq!(lp.top.len(), 2);
        assert_eq!((lp.top[0].0, lp.top[1].0), (2, 1));
        assert_eq!(lp.top[0].1, lp.logprob);

        let biased = |bias: f32| {
            TokenPicker::new(
                PickerOptions {
                    sampling: SamplingParams::greedy().resolve(),
                    logit_bias: vec![(2, bias), (0, 0.0)],
                    logprobs: None,
                },
                None,
            )
            .pick(&logits, &[])
            .token
        };
        assert_eq!(biased(-100.0), 1);
        assert_eq!(biased(100.0), 2);
    }
}
