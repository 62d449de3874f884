//! Qwen3: RMSNorm on every query and key head before RoPE; attention biases only if configured.

use super::ArchOptions;
use crate::config::ModelConfig;

/// Qwen3's options from its config.
pub fn options(config: &ModelConfig) -> ArchOptions {
    ArchOptions {
        qkv_bias: config.attention_bias,
        o_bias: config.attention_bias,
        mlp_bias: false,
        qk_norm: true,
        ..ArchOptions::default()
    }
}
