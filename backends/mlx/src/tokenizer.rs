//! A model directory's tokenizer (`tokenizer.json` through the `tokenizers` crate) and chat
//! template, and the vocabulary the generation core detokenizes with: the raw bytes of every
//! token and the end-of-sequence ids.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use minerva_core::generation::Vocabulary;
use minerva_core::{ChatTemplate, Error, Result};
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::config::ModelConfig;

/// The tokenizer of one model (`tokenizer.json`, its BOS from `tokenizer_config.json`).
pub struct ModelTokenizer {
    tokenizer: Tokenizer,
    bos_text: Option<String>,
}

impl ModelTokenizer {
    /// Load the tokenizer files of `dir`, checking them against `config`; also the vocabulary
    /// (each token's bytes, empty for special tokens; end-of-sequence ids) and the chat template.
    pub fn load(
        dir: &Path,
        config: &ModelConfig,
    ) -> Result<(ModelTokenizer, Vocabulary, Option<ChatTemplate>)> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::invalid_model(
                &path,
                "missing: the MLX engine needs the model's tokenizer.json",
            ));
        }
        let raw: Value = read_json(&path)?;
        let tokenizer = Tokenizer::from_file(&path)
            .map_err(|e| Error::invalid_model(&path, format!("not a usable tokenizer: {e}")))?;
        let vocab = tokenizer.get_vocab(true);
        let size = vocab.values().max().map_or(0, |m| m + 1);
        if size as i64 > config.vocab_size as i64 {
            return Err(Error::invalid_model(
                &path,
                format!(
                    "the tokenizer has ids up to {} but config.json's vocab_size is {}: \
                     it does not belong to these weights",
                    size - 1,
                    config.vocab_size
                ),
            ));
        }
        let byte_level = uses_byte_level(raw.get("decoder"));
        let special: HashMap<u32, bool> = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (id, t.special))
            .collect();
        let added: HashMap<u32, String> = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| (id, t.content))
            .collect();
        let byte_of = byte_level_decoding_table();
        let mut pieces = vec![Vec::new(); size as usize];
        for (text, id) in &vocab {
            pieces[*id as usize] = match (special.get(id), added.get(id)) {
                (Some(true), _) => Vec::new(),
                (_, Some(content)) => content.as_bytes().to_vec(),
                _ if byte_level => text
                    .chars()
                    .filter_map(|c| byte_of.get(&c).copied())
                    .collect(),
                _ => sentencepiece_bytes(text),
            };
        }

        let tokenizer_config = read_json(&dir.join("tokenizer_config.json")).ok();
        let token_text = |key: &str| -> Option<String> {
            let v = tokenizer_config.as_ref()?.get(key)?;
            v.as_str()
                .or_else(|| v.get("content")?.as_str())
                .map(str::to_string)
        };
        let bos_text = token_text("bos_token").unwrap_or_default();
        let eos_text = token_text("eos_token").unwrap_or_default();
        let mut eos: BTreeSet<u32> = config
            .eos_token_id
            .iter()
            .flat_map(|ids| ids.to_vec())
            .collect();
        if let Ok(generation) = read_json(&dir.join("generation_config.json")) {
            if let Some(ids) = generation.get("eos_token_id") {
                eos.extend(
                    serde_json::from_value::<crate::config::TokenIds>(ids.clone())
                        .map(|ids| ids.to_vec())
                        .unwrap_or_default(),
                );
            }
        }
        eos.extend(tokenizer.token_to_id(&eos_text));
        if eos.is_empty() {
            tracing::warn!(dir = %dir.display(), "no end-of-sequence token found; generations run to their limit");
        }
        let template = match ChatTemplate::source_from_dir(dir)? {
            Some(source) => Some(ChatTemplate::new(&source, &bos_text, &eos_text)?),
            None => None,
        };
        // SentencePiece-style vocabularies mark word starts with a space; where the decoder drops
        // it at the start of a text (Llama 2's, not Gemma's), so does the first generated token.
        let strip = !byte_level && strips_first_space(raw.get("decoder"));
        let vocabulary = Vocabulary::new(pieces, eos, strip);
        let tokenizer = ModelTokenizer {
            tokenizer,
            bos_text: Some(bos_text).filter(|text| !text.is_empty()),
        };
        Ok((tokenizer, vocabulary, template))
    }
}

impl minerva_core::generation::Tokenizer for ModelTokenizer {
    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, add_special).map_err(|e| {
            Error::InvalidRequest(format!("the prompt could not be tokenized: {e}"))
        })?;
        Ok(encoding.get_ids().to_vec())
    }

    fn bos_text(&self) -> Option<&str> {
        self.bos_text.as_deref()
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::invalid_model(path, format!("invalid JSON: {e}")))
}

/// Whether the tokenizer's decoder is (or contains) GPT-2 style ByteLevel.
fn uses_byte_level(decoder: Option<&Value>) -> bool {
    let Some(decoder) = decoder else {
        return false;
    };
    match decoder.get("type").and_then(Value::as_str) {
        Some("ByteLevel") => true,
        Some("Sequence") => decoder
            .get("decoders")
            .and_then(Value::as_array)
            .is_some_and(|list| list.iter().any(|d| uses_byte_level(Some(d)))),
        _ => false,
    }
}

/// Whether the decoder drops the space that starts a text: a `Strip` of one leading space, or
/// a `Metaspace` that prefixes one.
fn strips_first_space(decoder: Option<&Value>) -> bool {
    let Some(decoder) = decoder else {
        return false;
    };
    match decoder.get("type").and_then(Value::as_str) {
        Some("Strip") => {
            decoder.get("content").and_then(Value::as_str) == Some(" ")
                && decoder.get("start").and_then(Value::as_u64).unwrap_or(0) > 0
        }
        Some("Metaspace") => {
            let scheme = decoder.get("prepend_scheme").and_then(Value::as_str);
            let legacy = decoder.get("add_prefix_space").and_then(Value::as_bool);
            scheme.map_or(legacy.unwrap_or(true), |s| s != "never")
        }
        Some("Sequence") => decoder
            .get("decoders")
            .and_then(Value::as_array)
            .is_some_and(|list| list.iter().any(|d| strips_first_space(Some(d)))),
        _ => false,
    }
}

/// GPT-2's byte <-> printable character table, inverted: character -> byte.
fn byte_level_decoding_table() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).expect("valid code point")
        };
        table.insert(c, b);
    }
    table
}

/// A SentencePiece token's bytes: `▁` is a space, `<0xNN>` a raw byte.
fn sentencepiece_bytes(text: &str) -> Vec<u8> {
    if let Some(hex) = text.strip_prefix("<0x").and_then(|t| t.strip_suffix('>')) {
        if let Ok(byte) = u8::from_str_radix(hex, 16) {
            return vec![byte];
        }
    }
    text.replace('\u{2581}', " ").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_covers_every_byte() {
        let table = byte_level_decoding_table();
        assert_eq!(table.len(), 256);
        assert_eq!(table[&'\u{0120}'], b' ');
        assert_eq!(table[&'\u{010A}'], b'\n');
        assert_eq!(table[&'a'], b'a');
    }

    #[test]
    fn first_space_dropped_only_where_the_decoder_drops_it() {
        let llama2 = serde_json::json!({"type": "Sequence", "decoders": [
            {"type": "Replace"}, {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]});
        let gemma = serde_json::json!({"type": "Sequence", "decoders": [
            {"type": "Replace"}, {"type": "ByteFallback"}, {"type": "Fuse"}]});
        let metaspace = serde_json::json!({"type": "Metaspace", "prepend_scheme": "always"});
        let never = serde_json::json!({"type": "Metaspace", "prepend_scheme": "never"});
        assert!(strips_first_space(Some(&llama2)));
        assert!(!strips_first_space(Some(&gemma)));
        assert!(strips_first_space(Some(&metaspace)));
        assert!(!strips_first_space(Some(&never)));
        assert!(!strips_first_space(None));
    }

    #[test]
    fn sentencepiece_pieces() {
        assert_eq!(sentencepiece_bytes("\u{2581}Paris"), b" Paris");
        assert_eq!(sentencepiece_bytes("<0x0A>"), b"\n");
    }
}
