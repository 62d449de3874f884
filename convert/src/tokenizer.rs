//! A Hugging Face `tokenizer.json` (byte-level BPE) rebuilt from GGUF tokenizer metadata.

use serde_json::{json, Map, Value};

use minerva_runtime::format::gguf::GgufFile;
use minerva_runtime::{Error, Result};

/// GGUF `tokenizer.ggml.pre` values whose pre-tokenization is plain GPT-2 byte-level.
const BYTE_LEVEL_PRE: &[&str] = &["default", "gpt2", "smollm"];

/// Token types (llama.cpp's `llama_token_type`) that are special tokens.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// The vocabulary, merges and special tokens of a GGUF model.
pub struct Tokenizer {
    tokens: Vec<String>,
    types: Vec<i64>,
    merges: Vec<String>,
    bos: Option<u64>,
    eos: Option<u64>,
    unk: Option<u64>,
    pad: Option<u64>,
    add_bos: bool,
}

impl Tokenizer {
    /// Read the tokenizer of `gguf` (loaded with its arrays kept).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let invalid = |m: String| Error::invalid_model(&gguf.path, m);
        let model = gguf.get_str("tokenizer.ggml.model").unwrap_or("none");
        if model != "gpt2" {
            return Err(invalid(format!(
                "tokenizer model `{model}` cannot be converted yet (byte-level BPE `gpt2` only)"
            )));
        }
        let pre = gguf.get_str("tokenizer.ggml.pre").unwrap_or("default");
        if !BYTE_LEVEL_PRE.contains(&pre) {
            return Err(invalid(format!(
                "pre-tokenizer `{pre}` cannot be converted yet (supported: {})",
                BYTE_LEVEL_PRE.join(", ")
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            gguf.get(key)
                .and_then(|v| v.as_array())
                .ok_or_else(|| invalid(format!("`{key}` is missing")))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| invalid(format!("`{key}` holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types = match gguf
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
        {
            Some(values) => values
                .iter()
                .map(|v| match v {
                    minerva_runtime::format::gguf::GgufValue::Int(i) => *i,
                    minerva_runtime::format::gguf::GgufValue::Uint(u) => *u as i64,
                    _ => 1,
                })
                .collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(invalid("token_type and tokens differ in length".into()));
        }
        let id = |key: &str| gguf.get_u64(key).filter(|&i| (i as usize) < tokens.len());
        Ok(Tokenizer {
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            unk: id("tokenizer.ggml.unknown_token_id"),
            pad: id("tokenizer.ggml.padding_token_id"),
            add_bos: gguf
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            tokens,
            types,
            merges,
        })
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Beginning-of-sequence token id.
    pub fn bos_id(&self) -> Option<u64> {
        self.bos
    }

    /// End-of-sequence token id.
    pub fn eos_id(&self) -> Option<u64> {
        self.eos
    }

    fn text(&self, id: Option<u64>) -> Value {
        id.map_or(Value::Null, |i| {
            Value::String(self.tokens[i as usize].clone())
        })
    }

    /// `tokenizer.json`.
    pub fn tokenizer_json(&self) -> Value {
        let vocab: Map<String, Value> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let added: Vec<Value> = self
            .types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == CONTROL || t == USER_DEFINED)
            .map(|(i, &t)| {
                json!({
                    "id": i, "content": self.tokens[i], "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": t == USER_DEFINED, "special": t == CONTROL,
                })
            })
            .collect();
        let byte_level = |add_prefix_space: bool, trim_offsets: bool| json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets, "use_regex": true});
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": byte_level(false, true),
            "post_processor": byte_level(true, false),
            "decoder": byte_level(true, true),
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": false, "vocab": vocab, "merges": self.merges,
            },
        })
    }

    /// `tokenizer_config.json`, with the chat template if the GGUF has one.
    pub fn tokenizer_config(&self, chat_template: Option<&str>, max_length: Option<u64>) -> Value {
        let mut config = json!({
            "tokenizer_class": "GPT2Tokenizer",
            "add_bos_token": self.add_bos,
            "add_eos_token": false,
            "bos_token": self.text(self.bos),
            "eos_token": self.text(self.eos),
            "unk_token": self.text(self.unk),
            "pad_token": self.text(self.pad),
            "clean_up_tokenization_spaces": false,
            "model_max_length": max_length,
        });
        if let Some(template) = chat_template {
            config["chat_template"] = Value::String(template.to_string());
        }
        config
    }
}
