//! Mixtral: Llama's attention, and in every layer a mixture of experts whose router keeps the
//! `top_k` largest logits and weighs those experts by their softmax.

use std::path::Path;

use minerva_core::Result;

use super::experts::Routing;
use super::{llama, qwen_moe, Family, Moe};
use crate::config::ModelConfig;

/// Mixtral's options from its config.
pub fn family(config: &ModelConfig, config_path: &Path) -> Result<Family> {
    let (experts, top_k) = qwen_moe::expert_counts(config.num_local_experts, config, config_path)?;
    let moe = Moe {
        experts,
        top_k,
        routing: Routing::TopKThenSoftmax,
        path: "block_sparse_moe",
        per_expert: ["w1", "w3", "w2"],
        shared_expert: false,
    };
    let options = super::ArchOptions {
        moe: Some(moe),
        ..llama::options(config)
    };
    Ok(Family::uniform(options, config))
}
