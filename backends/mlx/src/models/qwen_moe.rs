//! Qwen2 MoE and Qwen3 MoE: their dense model's attention, and mixtures of experts in every
//! `decoder_sparse_step`-th layer outside `mlp_only_layers`. The router's softmax weighs the
//! `top_k` likeliest experts (renormalised if `norm_topk_prob`); Qwen2 MoE adds a shared expert
//! behind a sigmoid gate.

use std::path::Path;

use minerva_core::{Error, Result};

use super::experts::Routing;
use super::{qwen2, qwen3, ArchOptions, Family, Layer, Moe};
use crate::config::ModelConfig;

/// Qwen2 MoE's or Qwen3 MoE's options and layers from its config.
pub fn family(config: &ModelConfig, config_path: &Path) -> Result<Family> {
    let qwen3 = config.model_type == "qwen3_moe";
    let (experts, top_k) = expert_counts(config.num_experts, config, config_path)?;
    let moe = Moe {
        experts,
        top_k,
        routing: Routing::SoftmaxThenTopK {
            renormalize: config.norm_topk_prob,
        },
        path: "mlp",
        per_expert: ["gate_proj", "up_proj", "down_proj"],
        shared_expert: !qwen3,
    };
    let dense = match qwen3 {
        true => qwen3::options(config),
        false => qwen2::options(config),
    };
    let step = config.decoder_sparse_step.unwrap_or(1).max(1);
    let layers = (0..config.num_hidden_layers)
        .map(|i| Layer {
            experts: !config.mlp_only_layers.contains(&i) && (i + 1) % step == 0,
            ..Layer::default()
        })
        .collect();
    Ok(Family {
        options: ArchOptions {
            moe: Some(moe),
            ..dense
        },
        layers,
    })
}

/// Experts per mixture (`experts`, the family's own field) and per token, checked.
pub fn expert_counts(
    experts: Option<i32>,
    config: &ModelConfig,
    config_path: &Path,
) -> Result<(i32, i32)> {
    match (experts, config.num_experts_per_tok) {
        (Some(n), Some(k)) if n > 0 && (1..=n).contains(&k) => Ok((n, k)),
        (n, k) => Err(Error::invalid_model(
            config_path,
            format!(
                "a mixture of experts needs a positive expert count and 1 to that many experts \
                 per token (num_experts_per_tok); found {n:?} and {k:?}"
            ),
        )),
    }
}
