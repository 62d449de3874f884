//! `config.json` of a Hugging Face / MLX model directory: the fields the supported architectures
//! read, with the defaults their reference implementations use.

use std::path::Path;

use minerva_core::{Error, Result};
use serde::Deserialize;
use serde_json::Value;

/// The architectures this engine runs, by `model_type`.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma3_text",
    "gemma3",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
];

/// Transformer hyper-parameters.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    /// One of [`SUPPORTED_MODEL_TYPES`]; a wrapper's text model's type (`gemma3` -> `gemma3_text`).
    pub model_type: String,
    /// Where the text model's tensors are named from (`language_model.` in a multimodal
    /// wrapper's checkpoint, whose other towers are never read).
    #[serde(skip)]
    pub weight_prefix: String,
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
    /// Attention scale is this to the power -1/2 rather than the head width's (Gemma).
    pub query_pre_attn_scalar: Option<f32>,
    /// Keys a sliding-window layer attends to, its query's position included.
    pub sliding_window: Option<i32>,
    /// Every n-th layer attends globally, the others over the window (Gemma 3).
    pub sliding_window_pattern: Option<usize>,
    /// Per layer, `sliding_attention` or `full_attention` (newer configs' form of the pattern).
    pub layer_types: Option<Vec<String>>,
    /// RoPE base of the sliding-window layers (Gemma 3).
    pub rope_local_base_freq: Option<f32>,
    /// Experts of a mixture-of-experts layer (Qwen MoE).
    pub num_experts: Option<i32>,
    /// Experts of a mixture-of-experts layer (Mixtral).
    pub num_local_experts: Option<i32>,
    /// Experts each token goes through.
    pub num_experts_per_tok: Option<i32>,
    /// The chosen experts' weights are renormalised to sum to one (Qwen3 MoE).
    #[serde(default)]
    pub norm_topk_prob: bool,
    /// Every n-th layer is a mixture of experts (Qwen MoE; 1 when absent).
    pub decoder_sparse_step: Option<usize>,
    /// Layers with a dense MLP all the same (Qwen MoE).
    #[serde(default)]
    pub mlp_only_layers: Vec<usize>,
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

/// The text model's configuration, its family's defaults filled in where the file is silent (as
/// the reference implementation's), and the prefix of its tensors' names. A multimodal wrapper
/// (`gemma3`) holds its text model's fields in `text_config`.
fn text_model(value: &Value) -> (Value, &'static str) {
    let mut merged = serde_json::Map::new();
    let mut put = |fields: &Value| {
        if let Some(fields) = fields.as_object() {
            merged.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    };
    match value.get("model_type").and_then(Value::as_str) {
        Some("gemma3") => {
            put(&gemma3_text_defaults());
            // The wrapper's own defaults: mlx_lm's `gemma3.ModelArgs`.
            put(&serde_json::json!({"num_attention_heads": 8, "num_key_value_heads": 4}));
            let mut outer = value.clone();
            if let Some(o) = outer.as_object_mut() {
                o.remove("text_config");
                o.remove("vision_config");
            }
            put(&outer);
            put(value.get("text_config").unwrap_or(&Value::Null));
            // The wrapper's vocabulary size (or its default) wins, as in mlx_lm.
            let vocab = value.get("vocab_size").cloned().unwrap_or(262208.into());
            merged.insert("vocab_size".into(), vocab);
            merged.insert("model_type".into(), "gemma3_text".into());
            (Value::Object(merged), "language_model.")
        }
        Some("gemma3_text") => {
            put(&gemma3_text_defaults());
            put(value);
            (Value::Object(merged), "")
        }
        _ => (value.clone(), ""),
    }
}

/// mlx_lm's `gemma3_text.ModelArgs` defaults (Gemma 3 1B's shape).
fn gemma3_text_defaults() -> Value {
    serde_json::json!({
        "hidden_size": 1152, "num_hidden_layers": 26, "intermediate_size": 6912,
        "num_attention_heads": 4, "head_dim": 256, "rms_norm_eps": 1e-6, "vocab_size": 262144,
        "num_key_value_heads": 1, "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
        "query_pre_attn_scalar": 256.0, "sliding_window": 512, "sliding_window_pattern": 6,
        "max_position_embeddings": 32768,
    })
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
        let (value, weight_prefix) = text_model(value);
        let mut config: ModelConfig = serde_json::from_value(value)
            .map_err(|e| Error::invalid_model(path, format!("unusable config: {e}")))?;
        config.weight_prefix = weight_prefix.to_string();
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
