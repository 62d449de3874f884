//! [`LlamaTokenizer`]: llama.cpp's tokenizer of a loaded GGUF model, for the runtime's model
//! object.

use std::sync::Arc;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use minerva_core::generation::Tokenizer;
use minerva_core::Result;

/// The model's own tokenizer (from its GGUF vocabulary).
pub(crate) struct LlamaTokenizer {
    model: Arc<LlamaModel>,
    /// The BOS token's text when the model adds one (`tokenizer.ggml.add_bos_token`).
    bos_text: Option<String>,
}

impl LlamaTokenizer {
    pub(crate) fn new(model: Arc<LlamaModel>) -> Self {
        let vocab = model.vocab();
        let bos_text = vocab
            .should_add_bos()
            .then(|| token_text(&model, vocab.bos()))
            .filter(|text| !text.is_empty());
        LlamaTokenizer { model, bos_text }
    }
}

/// A token's text as the vocabulary spells it (special tokens included).
pub(crate) fn token_text(model: &LlamaModel, token: LlamaToken) -> String {
    model
        .vocab()
        .text(token)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Tokenizer for LlamaTokenizer {
    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        // llama.cpp adds the model's BOS (and EOS) where its metadata says to.
        Ok(self
            .model
            .vocab()
            .tokenize(text.as_bytes(), add_special, true)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect())
    }

    fn bos_text(&self) -> Option<&str> {
        self.bos_text.as_deref()
    }
}
