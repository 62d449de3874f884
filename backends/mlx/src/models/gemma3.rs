//! Gemma 3 (text): sliding-window layers with a RoPE of their own between global ones, four
//! norms per block storing `w` for a `1 + w` scale, RMSNorm on query and key heads, GeGLU,
//! scaled embeddings and `query_pre_attn_scalar` for the attention scale. The multimodal
//! wrapper (`gemma3`) reaches here as its text model (see `config`).

use std::path::Path;

use minerva_core::{Error, Result};

use super::{Activation, ArchOptions, Family, Layer};
use crate::config::ModelConfig;

/// Gemma 3's options and layers from its config (family defaults already filled in).
pub fn family(config: &ModelConfig, config_path: &Path) -> Result<Family> {
    let bad = |m: String| Error::invalid_model(config_path, m);
    let window = config
        .sliding_window
        .filter(|&w| w > 0)
        .ok_or_else(|| bad("sliding_window must be positive".into()))?;
    let layers = config.num_hidden_layers;
    let sliding: Vec<bool> = match &config.layer_types {
        Some(types) if types.len() != layers => {
            return Err(bad(format!(
                "layer_types names {} layers, num_hidden_layers is {layers}",
                types.len()
            )))
        }
        Some(types) => types.iter().map(|t| t == "sliding_attention").collect(),
        None => {
            let pattern = config.sliding_window_pattern.unwrap_or(6).max(1);
            (0..layers).map(|i| (i + 1) % pattern != 0).collect()
        }
    };
    let local_base = config.rope_local_base_freq.unwrap_or(10_000.0);
    let scalar = config.query_pre_attn_scalar.unwrap_or(256.0) as f64;
    Ok(Family {
        options: ArchOptions {
            qk_norm: true,
            norm_offset: true,
            sandwich_norms: true,
            clipped_residual: true,
            activation: Activation::GeluTanh,
            embed_scale: true,
            attention_scale: Some(scalar.powf(-0.5) as f32),
            ..ArchOptions::default()
        },
        layers: sliding
            .into_iter()
            .map(|sliding| match sliding {
                true => Layer {
                    window: Some(window),
                    rope_base: Some(local_base),
                    experts: false,
                },
                false => Layer::default(),
            })
            .collect(),
    })
}
