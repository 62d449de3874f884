//! A Hugging Face `tokenizer.json` rebuilt from GGUF tokenizer metadata: byte-level BPE (`gpt2`)
//! from its merges, or SentencePiece BPE (`llama`: Llama 2, Gemma, Mistral's older models) with
//! merges derived from the pieces' scores, as Hugging Face's own converter derives them.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use minerva_core::format::gguf::GgufFile;
use minerva_core::{Error, Result};

/// GGUF `tokenizer.ggml.pre` values whose pre-tokenization is plain GPT-2 byte-level.
const BYTE_LEVEL_PRE: &[&str] = &["default", "gpt2", "smollm"];

/// Token types (llama.cpp's `llama_token_type`) that are special tokens.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// How text becomes pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// GPT-2 byte-level BPE.
    ByteLevel,
    /// SentencePiece BPE: spaces are `▁`, unknown characters fall back to `<0xNN>` bytes.
    SentencePiece {
        /// A `▁` is put before the text.
        add_space_prefix: bool,
    },
}

/// The vocabulary, merges and special tokens of a GGUF model.
pub struct Tokenizer {
    kind: Kind,
    tokens: Vec<String>,
    types: Vec<i64>,
    /// `"left right"` strings (GGUF's own), or `[left, right]` pairs (pieces may hold spaces).
    merges: Vec<Value>,
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
        let kind = match model {
            "gpt2" => Kind::ByteLevel,
            "llama" => Kind::SentencePiece {
                add_space_prefix: gguf
                    .get("tokenizer.ggml.add_space_prefix")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(true),
            },
            _ => {
                return Err(invalid(format!(
                    "tokenizer model `{model}` cannot be converted yet (supported: byte-level \
                     BPE `gpt2`, SentencePiece BPE `llama`)"
                )))
            }
        };
        let pre = gguf.get_str("tokenizer.ggml.pre").unwrap_or("default");
        if kind == Kind::ByteLevel && !BYTE_LEVEL_PRE.contains(&pre) {
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
        let types = match gguf
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
        {
            Some(values) => values
                .iter()
                .map(|v| match v {
                    minerva_core::format::gguf::GgufValue::Int(i) => *i,
                    minerva_core::format::gguf::GgufValue::Uint(u) => *u as i64,
                    _ => 1,
                })
                .collect(),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(invalid("token_type and tokens differ in length".into()));
        }
        let merges = match kind {
            Kind::ByteLevel => strings("tokenizer.ggml.merges")?
                .into_iter()
                .map(Value::String)
                .collect(),
            Kind::SentencePiece { .. } => {
                let scores: Vec<f64> = gguf
                    .get("tokenizer.ggml.scores")
                    .and_then(|v| v.as_array())
                    .ok_or_else(|| invalid("`tokenizer.ggml.scores` is missing".into()))?
                    .iter()
                    .map(|v| v.as_f64().unwrap_or(0.0))
                    .collect();
                if scores.len() != tokens.len() {
                    return Err(invalid("scores and tokens differ in length".into()));
                }
                merges_from_scores(&tokens, &scores)
            }
        };
        let id = |key: &str| gguf.get_u64(key).filter(|&i| (i as usize) < tokens.len());
        Ok(Tokenizer {
            kind,
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
        let sentencepiece = matches!(self.kind, Kind::SentencePiece { .. });
        let added: Vec<Value> = self
            .types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == CONTROL || t == USER_DEFINED)
            .map(|(i, &t)| {
                // llama.cpp matches a SentencePiece model's user-defined pieces (runs of newlines
                // and tabs, ...) in the raw text.
                let normalized = t == USER_DEFINED && !sentencepiece;
                json!({
                    "id": i, "content": self.tokens[i], "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": normalized, "special": t == CONTROL,
                })
            })
            .collect();
        let model = |byte_fallback: bool, unk: Value| {
            json!({
                "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": byte_fallback, "byte_fallback": byte_fallback,
                "ignore_merges": false, "vocab": vocab, "merges": self.merges,
            })
        };
        let (normalizer, pre_tokenizer, post_processor, decoder, model) = match self.kind {
            Kind::ByteLevel => {
                let byte_level = |add_prefix_space: bool, trim_offsets: bool| json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": trim_offsets, "use_regex": true});
                (
                    Value::Null,
                    byte_level(false, true),
                    byte_level(true, false),
                    byte_level(true, true),
                    model(false, Value::Null),
                )
            }
            Kind::SentencePiece { add_space_prefix } => {
                let space =
                    json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
                let mut normalizers = vec![];
                if add_space_prefix {
                    normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
                }
                normalizers.push(space);
                let mut decoders = vec![
                    json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                    json!({"type": "ByteFallback"}),
                    json!({"type": "Fuse"}),
                ];
                if add_space_prefix {
                    decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
                }
                (
                    json!({"type": "Sequence", "normalizers": normalizers}),
                    Value::Null,
                    self.bos_processor(),
                    json!({"type": "Sequence", "decoders": decoders}),
                    model(true, self.text(self.unk)),
                )
            }
        };
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": decoder,
            "model": model,
        })
    }

    /// A post-processor putting the BOS token first when the model wants one.
    fn bos_processor(&self) -> Value {
        let Some(bos) = self.bos.filter(|_| self.add_bos) else {
            return Value::Null;
        };
        let text = &self.tokens[bos as usize];
        let piece = |id: &str| json!({"Sequence": {"id": id, "type_id": 0}});
        json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": text, "type_id": 0}}, piece("A")],
            "pair": [{"SpecialToken": {"id": text, "type_id": 0}}, piece("A"), piece("B")],
            "special_tokens": {text.clone(): {"id": text, "ids": [bos], "tokens": [text]}},
        })
    }

    /// `tokenizer_config.json`, with the chat template if the GGUF has one.
    pub fn tokenizer_config(&self, chat_template: Option<&str>, max_length: Option<u64>) -> Value {
        let class = match self.kind {
            Kind::ByteLevel => "GPT2Tokenizer",
            // Transformers' SentencePiece classes rebuild the pipeline from their own defaults
            // (Llama's prepends a space, Gemma's does not); this one reads tokenizer.json as is.
            Kind::SentencePiece { .. } => "PreTrainedTokenizerFast",
        };
        let mut config = json!({
            "tokenizer_class": class,
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

/// BPE merges of a SentencePiece BPE vocabulary, as Hugging Face derives them: every split of a
/// piece into two pieces of the vocabulary is a merge, ranked by the whole piece's score (highest
/// first), then by the two halves' ids. Merging the best-ranked pair first then gives the pieces
/// SentencePiece (and llama.cpp) would pick.
fn merges_from_scores(tokens: &[String], scores: &[f64]) -> Vec<Value> {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let mut local = Vec::new();
        for (at, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(at);
            if let (Some(&l), Some(&r)) = (ids.get(left), ids.get(right)) {
                local.push((scores[id], id, l, r));
            }
        }
        local.sort_by_key(|&(_, _, l, r)| (l, r));
        merges.extend(local);
    }
    // Stable: equal scores keep the vocabulary's order.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges
        .into_iter()
        .map(|(_, _, l, r)| json!([tokens[l], tokens[r]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentencepiece_merges_follow_the_merged_pieces_scores() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        // "bc" scores higher than "ab"; "abc" splits two ways, both ranked by its own score.
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        assert_eq!(
            merges_from_scores(&tokens, &scores),
            [["b", "c"], ["a", "b"], ["a", "bc"], ["ab", "c"]].map(|m| json!(m))
        );
    }
}
