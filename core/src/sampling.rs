//! Sampling options shared by every engine, with one set of defaults.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Sampling options; `None` takes the default documented on each resolved field of
/// [`ResolvedSampling`]. Used in requests, in config (per-model defaults) and on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Keep only the k most likely tokens (0 disables).
    pub top_k: Option<u32>,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: Option<f32>,
    /// Multiplicative penalty on recently seen tokens (1 disables).
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: Option<u32>,
    /// Additive penalty on tokens already present (OpenAI semantics).
    pub presence_penalty: Option<f32>,
    /// Additive penalty proportional to a token's count (OpenAI semantics).
    pub frequency_penalty: Option<f32>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
}

/// Sampling options with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResolvedSampling {
    /// Default 0.8.
    pub temperature: f32,
    /// Default 0.95.
    pub top_p: f32,
    /// Default 40.
    pub top_k: u32,
    /// Default 0.05.
    pub min_p: f32,
    /// Default 1.0 (off).
    pub repeat_penalty: f32,
    /// Default 64.
    pub repeat_last_n: u32,
    /// Default 0.
    pub presence_penalty: f32,
    /// Default 0.
    pub frequency_penalty: f32,
    /// Default: a fresh random seed per request.
    pub seed: Option<u64>,
}

impl ResolvedSampling {
    /// Whether sampling is greedy (temperature 0).
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Whether any token penalty is active.
    pub fn is_plain_greedy(&self) -> bool {
        self.is_greedy() && !self.has_penalties()
    }

    /// Whether any repetition, presence or frequency penalty is active.
    pub fn has_penalties(&self) -> bool {
        self.repeat_penalty != 1.0 || self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: Some(0.0),
            ..Default::default()
        }
    }

    /// These options, with fields unset here taken from `base`.
    pub fn or(self, base: SamplingParams) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature.or(base.temperature),
            top_p: self.top_p.or(base.top_p),
            top_k: self.top_k.or(base.top_k),
            min_p: self.min_p.or(base.min_p),
            repeat_penalty: self.repeat_penalty.or(base.repeat_penalty),
            repeat_last_n: self.repeat_last_n.or(base.repeat_last_n),
            presence_penalty: self.presence_penalty.or(base.presence_penalty),
            frequency_penalty: self.frequency_penalty.or(base.frequency_penalty),
            seed: self.seed.or(base.seed),
        }
    }

    /// Fill in the defaults.
    pub fn resolve(&self) -> ResolvedSampling {
        ResolvedSampling {
            temperature: self.temperature.unwrap_or(0.8),
            top_p: self.top_p.unwrap_or(0.95),
            top_k: self.top_k.unwrap_or(40),
            min_p: self.min_p.unwrap_or(0.05),
            repeat_penalty: self.repeat_penalty.unwrap_or(1.0),
            repeat_last_n: self.repeat_last_n.unwrap_or(64),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            seed: self.seed,
        }
    }

    /// Reject values outside their meaningful ranges.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, value: Option<f32>, ok: fn(f32) -> bool, range: &str| match value {
            Some(v) if !v.is_finite() || !ok(v) => Err(Error::param(
                name,
                format!("`{name}` must be {range}, got {v}"),
            )),
            _ => Ok(()),
        };
        check(
            "temperature",
            self.temperature,
            |v| (0.0..=100.0).contains(&v),
            "between 0 and 100",
        )?;
        check("top_p", self.top_p, |v| v > 0.0 && v <= 1.0, "in (0, 1]")?;
        check(
            "min_p",
            self.min_p,
            |v| (0.0..=1.0).contains(&v),
            "in [0, 1]",
        )?;
        check(
            "repeat_penalty",
            self.repeat_penalty,
            |v| v > 0.0,
            "positive",
        )?;
        check(
            "presence_penalty",
            self.presence_penalty,
            |v| (-2.0..=2.0).contains(&v),
            "between -2 and 2",
        )?;
        check(
            "frequency_penalty",
            self.frequency_penalty,
            |v| (-2.0..=2.0).contains(&v),
            "between -2 and 2",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_values_win_over_model_defaults() {
        let model = SamplingParams {
            temperature: Some(0.2),
            top_k: Some(10),
            ..Default::default()
        };
        let request = SamplingParams {
            temperature: Some(0.0),
            ..Default::default()
        };
        let r = request.or(model).resolve();
        assert_eq!(r.temperature, 0.0);
        assert_eq!(r.top_k, 10);
        assert_eq!(r.top_p, 0.95);
        assert!(r.is_greedy());
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let p = SamplingParams {
            top_p: Some(1.5),
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("top_p"));
        let p = SamplingParams {
            temperature: Some(f32::NAN),
            ..Default::default()
        };
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("temperature"));
    }
}
