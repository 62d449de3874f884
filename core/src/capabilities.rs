//! What an engine can honour. A request option an engine cannot honour is refused with an error
//! naming it, never silently dropped.

use crate::error::{Error, Result};
use crate::request::{GenerationRequest, Input};

/// A request option that an engine may or may not support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Raw text prompts.
    TextInput,
    /// Chat messages rendered with the model's template.
    ChatInput,
    /// `top_p`.
    TopP,
    /// `top_k`.
    TopK,
    /// `min_p`.
    MinP,
    /// `repeat_penalty` and `repeat_last_n`.
    RepeatPenalty,
    /// `presence_penalty`.
    PresencePenalty,
    /// `frequency_penalty`.
    FrequencyPenalty,
    /// `seed`.
    Seed,
    /// Stop strings.
    Stop,
    /// Generating past end-of-sequence.
    IgnoreEos,
    /// Log-probabilities of the generated tokens (and alternatives).
    Logprobs,
    /// `logit_bias`.
    LogitBias,
    /// More than one choice per request (`n`).
    MultipleChoices,
    /// Structured output: a JSON schema, a grammar or a regex the text must match.
    Constrained,
    /// Tools offered to the model.
    Tools,
}

impl Feature {
    /// Every feature, for engines that support them all.
    pub const ALL: &'static [Feature] = &[
        Feature::TextInput,
        Feature::ChatInput,
        Feature::TopP,
        Feature::TopK,
        Feature::MinP,
        Feature::RepeatPenalty,
        Feature::PresencePenalty,
        Feature::FrequencyPenalty,
        Feature::Seed,
        Feature::Stop,
        Feature::IgnoreEos,
        Feature::Logprobs,
        Feature::LogitBias,
        Feature::MultipleChoices,
        Feature::Constrained,
        Feature::Tools,
    ];

    /// The option's name as users write it.
    pub fn option_name(self) -> &'static str {
        match self {
            Feature::TextInput => "prompt",
            Feature::ChatInput => "messages",
            Feature::TopP => "top_p",
            Feature::TopK => "top_k",
            Feature::MinP => "min_p",
            Feature::RepeatPenalty => "repeat_penalty",
            Feature::PresencePenalty => "presence_penalty",
            Feature::FrequencyPenalty => "frequency_penalty",
            Feature::Seed => "seed",
            Feature::Stop => "stop",
            Feature::IgnoreEos => "ignore_eos",
            Feature::Logprobs => "logprobs",
            Feature::LogitBias => "logit_bias",
            Feature::MultipleChoices => "n",
            Feature::Constrained => "response_format",
            Feature::Tools => "tools",
        }
    }
}

/// The features one engine supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Supported request features.
    pub features: Vec<Feature>,
}

impl Capabilities {
    /// An engine that supports every feature.
    pub fn all() -> Self {
        Capabilities {
            features: Feature::ALL.to_vec(),
        }
    }

    /// Whether `feature` is supported.
    pub fn supports(&self, feature: Feature) -> bool {
        self.features.contains(&feature)
    }

    /// Refuse `request` if it uses a feature `engine` lacks.
    pub fn check(&self, engine: &str, request: &GenerationRequest) -> Result<()> {
        match features_used(request)
            .into_iter()
            .find(|f| !self.supports(*f))
        {
            Some(f) => Err(Error::Unsupported {
                engine: engine.to_string(),
                option: f.option_name().to_string(),
            }),
            None => Ok(()),
        }
    }
}

/// The features a request relies on (set options only).
pub fn features_used(request: &GenerationRequest) -> Vec<Feature> {
    let s = &request.sampling;
    let mut used = vec![match request.input {
        Input::Text(_) | Input::Tokens(_) => Feature::TextInput,
        Input::Chat(_) => Feature::ChatInput,
    }];
    let flags = [
        (s.top_p.is_some(), Feature::TopP),
        (s.top_k.is_some(), Feature::TopK),
        (s.min_p.is_some(), Feature::MinP),
        (
            s.repeat_penalty.is_some() || s.repeat_last_n.is_some(),
            Feature::RepeatPenalty,
        ),
        (s.presence_penalty.is_some(), Feature::PresencePenalty),
        (s.frequency_penalty.is_some(), Feature::FrequencyPenalty),
        (s.seed.is_some(), Feature::Seed),
        (!request.stop.is_empty(), Feature::Stop),
        (request.ignore_eos, Feature::IgnoreEos),
        (request.logprobs.is_some(), Feature::Logprobs),
        (!request.logit_bias.is_empty(), Feature::LogitBias),
        (request.n > 1, Feature::MultipleChoices),
        (request.constraint.is_some(), Feature::Constrained),
        (!request.tools.is_empty(), Feature::Tools),
    ];
    used.extend(flags.into_iter().filter(|(on, _)| *on).map(|(_, f)| f));
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_option_is_named() {
        let caps = Capabilities {
            features: vec![Feature::ChatInput, Feature::TopP],
        };
        let mut req = GenerationRequest::chat("hi", None);
        req.sampling.top_p = Some(0.5);
        assert!(caps.check("x", &req).is_ok());
        req.sampling.min_p = Some(0.1);
        let err = caps.check("x", &req).unwrap_err().to_string();
        assert!(err.contains("`min_p`") && err.contains("`x`"), "{err}");
        let mut req = GenerationRequest::chat("hi", None);
        req.n = 2;
        let err = caps.check("x", &req).unwrap_err().to_string();
        assert!(err.contains("`n`"), "{err}");
    }
}
