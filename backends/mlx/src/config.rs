//! `config.json` of a Hugging Face / MLX model directory: the fields the supported architectures
//! read, with the defaults their reference implementations use.

use std::path::Path;

use minerva_runtime::{Error, Result};
use serde::Deserialize;
use serde_json::Value;

/// The architectures this engine runs, by `model_type`.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2", "qwen3"];

/// Transformer hyper-parameters.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    /// `llama`, `mistral`, `qwen2`, `qwen3`.
    pub model_type: String,
    /// Width of the residual stream.
    pub hidden_size: i32,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: i32,
    /// Key/value heads (grouped-query attention); the query heads when absent.
    pub num_key_value_heads: Option<i32>,
    /// Per-head width; hidden_size / heads when absent.
    pub head_dim: Option<i32>,
    /// Epsilon of every RMSNorm.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f32,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    /// RoPE scaling (`llama3`, `linear`), if any.
    pub rope_scaling: Option<Value>,
    /// Output head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Training context.
    pub max_position_embeddings: Option<u32>,
    /// Rows of the embedding matrix.
    pub vocab_size: i32,
    /// Bias on q/k/v/o projections (llama family option).
    #[serde(default)]
    pub attention_bias: bool,
    /// Bias on the MLP projections (llama family option).
    #[serde(default)]
    pub mlp_bias: bool,
    /// End-of-sequence token id(s).
    pub eos_token_id: Option<TokenIds>,
    /// MLX quantization: `{"group_size", "bits"}` plus per-layer overrides.
    pub quantization: Option<Value>,
}

/// One token id or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

fn default_rms_norm_eps() -> f32 {
    1e-6
}

fn default_rope_theta() -> f32 {
    10_000.0
}

impl ModelConfig {
    /// Read the parsed `config.json` (at `path`), refusing architectures this engine does not
    /// implement.
    pub fn from_json(value: &Value, path: &Path) -> Result<ModelConfig> {
        let model_type = value.get("model_type").and_then(Value::as_str);
        match model_type {
            Some(t) if SUPPORTED_MODEL_TYPES.contains(&t) => {}
            other => {
                return Err(Error::invalid_model(
                    path,
                    format!(
                        "model_type {} is not supported by the MLX engine; supported: {}",
                        other.map_or("(missing)".to_string(), |t| format!("`{t}`")),
                        SUPPORTED_MODEL_TYPES.join(", ")
                    ),
                ))
            }
        }
        let config: ModelConfig = serde_json::from_value(value.clone())
            .map_err(|e| Error::invalid_model(path, format!("unusable config: {e}")))?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::invalid_model(path, m));
        if self.hidden_size <= 0 || self.num_attention_heads <= 0 || self.vocab_size <= 0 {
            return bad("hidden_size, num_attention_heads and vocab_size must be positive".into());
        }
        if self.num_hidden_layers == 0 {
            return bad("num_hidden_layers must be positive".into());
        }
        let kv = self.kv_heads();
        if kv <= 0 || self.num_attention_heads % kv != 0 {
            return bad(format!(
                "num_key_value_heads ({kv}) must divide num_attention_heads ({})",
                self.num_attention_heads
            ));
        }
        if self.head_dim.is_none() && self.hidden_size % self.num_attention_heads != 0 {
            return bad("hidden_size is not a multiple of num_attention_heads".into());
        }
        Ok(())
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> i32 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> i32 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// (group size, bits) of the layer whose weights start with `prefix`: its own entry in
    /// `quantization`, else the global one.
    pub fn quantization_of(&self, prefix: &str) -> Option<(i32, i32)> {
        let q = self.quantization.as_ref()?;
        let read = |v: &Value| {
            Some((
                v.get("group_size")?.as_i64()? as i32,
                v.get("bits")?.as_i64()? as i32,
            ))
        };
        q.get(prefix).and_then(read).or_else(|| read(q))
    }
}
