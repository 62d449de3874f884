//! Qwen2 / Qwen2.5: biased q, k and v projections, plain output projection and MLP.

use super::ArchOptions;
use crate::config::ModelConfig;

/// Qwen2's fixed options.
pub fn options(_config: &ModelConfig) -> ArchOptions {
    ArchOptions {
        qkv_bias: true,
        ..ArchOptions::default()
    }
}
