//! What differs between the GGUF architectures the converter writes: tensor names, llama.cpp's
//! changes to the Hugging Face weights that must be undone, and `config.json`.

use serde_json::{json, Value};

use minerva_core::format::gguf::GgufFile;

/// GGUF architectures the converter writes.
pub const SUPPORTED: &[&str] = &["llama", "gemma3"];

/// Gemma 3 in llama.cpp: local layers use this RoPE base and every sixth layer is global (neither
/// is in the GGUF).
const GEMMA3_LOCAL_ROPE_BASE: f64 = 10_000.0;
const GEMMA3_SLIDING_WINDOW_PATTERN: u64 = 6;

/// One architecture's conversion rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama, SmolLM, Mistral: q/k rows permuted by llama.cpp for its rotary layout.
    Llama,
    /// Gemma 3: norms stored as `1 + w` by llama.cpp, four norms per block.
    Gemma3,
}

impl Arch {
    /// The rules for GGUF architecture `name`, if it is supported.
    pub fn of(name: &str) -> Option<Arch> {
        match name {
            "llama" => Some(Arch::Llama),
            "gemma3" => Some(Arch::Gemma3),
            _ => None,
        }
    }

    /// Whether llama.cpp permuted the rows of q and k (interleaved rotary halves).
    pub fn permutes_qk(self) -> bool {
        self == Arch::Llama
    }

    /// What llama.cpp added to norm weights (Gemma stores `w` and applies `1 + w`; its GGUF
    /// holds `1 + w`).
    pub fn norm_offset(self) -> f32 {
        match self {
            Arch::Llama => 0.0,
            Arch::Gemma3 => 1.0,
        }
    }

    /// GGUF tensor name -> Hugging Face / MLX name.
    pub fn hf_name(self, gguf: &str) -> Option<String> {
        let fixed = match gguf {
            "token_embd.weight" => Some("model.embed_tokens.weight"),
            "output_norm.weight" => Some("model.norm.weight"),
            "output.weight" => Some("lm_head.weight"),
            _ => None,
        };
        if let Some(name) = fixed {
            return Some(name.to_string());
        }
        let rest = gguf.strip_prefix("blk.")?;
        let (layer, part) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let module = match (self, part) {
            (_, "attn_q.weight") => "self_attn.q_proj.weight",
            (_, "attn_k.weight") => "self_attn.k_proj.weight",
            (_, "attn_v.weight") => "self_attn.v_proj.weight",
            (_, "attn_output.weight") => "self_attn.o_proj.weight",
            (_, "ffn_gate.weight") => "mlp.gate_proj.weight",
            (_, "ffn_up.weight") => "mlp.up_proj.weight",
            (_, "ffn_down.weight") => "mlp.down_proj.weight",
            (_, "attn_norm.weight") => "input_layernorm.weight",
            (Arch::Llama, "ffn_norm.weight") => "post_attention_layernorm.weight",
            (Arch::Gemma3, "attn_q_norm.weight") => "self_attn.q_norm.weight",
            (Arch::Gemma3, "attn_k_norm.weight") => "self_attn.k_norm.weight",
            (Arch::Gemma3, "post_attention_norm.weight") => "post_attention_layernorm.weight",
            (Arch::Gemma3, "ffn_norm.weight") => "pre_feedforward_layernorm.weight",
            (Arch::Gemma3, "post_ffw_norm.weight") => "post_feedforward_layernorm.weight",
            _ => return None,
        };
        Some(format!("model.layers.{layer}.{module}"))
    }

    /// The architecture's part of `config.json` (model type, its own hyper-parameters).
    pub fn config(self, gguf: &GgufFile, n_head: usize) -> Value {
        let key = |k: &str| format!("{}.{k}", gguf.architecture().unwrap_or(""));
        let u = |k: &str| gguf.arch_u64(k);
        let f = |k: &str| gguf.get(&key(k)).and_then(|v| v.as_f64());
        match self {
            Arch::Llama => {
                let mut config = json!({
                    "model_type": "llama",
                    "architectures": ["LlamaForCausalLM"],
                    "hidden_act": "silu",
                    "attention_bias": false,
                    "mlp_bias": false,
                });
                if let Some(head_dim) = u("rope.dimension_count") {
                    config["head_dim"] = json!(head_dim);
                }
                config
            }
            Arch::Gemma3 => {
                let head_dim = u("attention.key_length").unwrap_or(256);
                let (hidden, layers) = (
                    u("embedding_length").unwrap_or(0),
                    u("block_count").unwrap_or(0),
                );
                // As llama.cpp scales Gemma 3's attention: by the head width, except for the
                // 27B model (62 layers), by hidden / heads.
                let query_pre_attn_scalar = if layers == 62 {
                    hidden / n_head as u64
                } else {
                    head_dim
                };
                let mut config = json!({
                    "model_type": "gemma3_text",
                    "architectures": ["Gemma3ForCausalLM"],
                    "hidden_activation": "gelu_pytorch_tanh",
                    "head_dim": head_dim,
                    "query_pre_attn_scalar": query_pre_attn_scalar,
                    "sliding_window": u("attention.sliding_window").unwrap_or(512),
                    "sliding_window_pattern": GEMMA3_SLIDING_WINDOW_PATTERN,
                    "rope_local_base_freq": GEMMA3_LOCAL_ROPE_BASE,
                });
                let scaling = gguf.get_str(&key("rope.scaling.type"));
                if let (Some("linear"), Some(factor)) = (scaling, f("rope.scaling.factor")) {
                    config["rope_scaling"] = json!({"rope_type": "linear", "factor": factor});
                }
                config
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_each_layout() {
        let llama = Arch::Llama;
        assert_eq!(
            llama.hf_name("blk.3.attn_q.weight").unwrap(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            llama.hf_name("blk.3.ffn_norm.weight").unwrap(),
            "model.layers.3.post_attention_layernorm.weight"
        );
        assert_eq!(
            Arch::Gemma3.hf_name("blk.3.ffn_norm.weight").unwrap(),
            "model.layers.3.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            llama.hf_name("token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert!(llama.hf_name("blk.x.attn_q.weight").is_none());
        assert!(llama.hf_name("blk.0.post_ffw_norm.weight").is_none());
    }
}
