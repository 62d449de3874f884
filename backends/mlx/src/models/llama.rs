//! The llama family (Llama 2/3, SmolLM, Mistral): biases only where the config asks.

use super::ArchOptions;
use crate::config::ModelConfig;

/// Llama's options from its config.
pub fn options(config: &ModelConfig) -> ArchOptions {
    ArchOptions {
        qkv_bias: config.attention_bias,
        o_bias: config.attention_bias,
        mlp_bias: config.mlp_bias,
        ..ArchOptions::default()
    }
}
