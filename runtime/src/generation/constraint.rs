//! Structured output: a request's [`Constraint`] compiled by llguidance against the model's
//! vocabulary, then applied token by token in the picker (tokens the grammar cannot take next
//! get a logit of minus infinity; end of generation is allowed once the grammar is complete).
//! Compiled grammars are cached per model and constraint; each choice gets its own copy.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};

use super::engine::Vocabulary;
use crate::error::{Error, Result};
use crate::request::Constraint;

/// Compiled grammars kept per model.
const CACHED_GRAMMARS: usize = 32;

/// The request field constraints come from, for errors.
const PARAM: &str = "response_format";

/// One model's grammar compiler and cache of compiled grammars.
pub struct Grammars {
    vocab: Arc<Vocabulary>,
    factory: OnceLock<std::result::Result<ParserFactory, String>>,
    /// Most recently used first: the constraint (as JSON) and its compiled, unstarted matcher.
    compiled: Mutex<VecDeque<(String, Matcher)>>,
}

impl Grammars {
    /// Grammars over `vocab` (the factory is built on first use).
    pub fn new(vocab: Arc<Vocabulary>) -> Self {
        Grammars {
            vocab,
            factory: OnceLock::new(),
            compiled: Mutex::new(VecDeque::new()),
        }
    }

    /// A fresh matcher for `constraint`: compiled once, then copied from the cache. An invalid
    /// schema or grammar, or a schema feature llguidance cannot enforce, is an error naming it.
    pub fn matcher(&self, constraint: &Constraint) -> Result<TokenConstraint> {
        let key = serde_json::to_string(constraint).unwrap_or_default();
        {
            let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = compiled.iter().position(|(k, _)| *k == key) {
                let entry = compiled.remove(at).expect("position is in range");
                let matcher = entry.1.deep_clone();
                compiled.push_front(entry);
                return Ok(TokenConstraint::new(matcher));
            }
        }
        let factory = self
            .factory
            .get_or_init(|| build_factory(&self.vocab))
            .as_ref()
            .map_err(|e| Error::engine("constraint", e.clone()))?;
        let started = Instant::now();
        let grammar = match constraint {
            Constraint::JsonObject => TopLevelGrammar::from_json_schema(single_line(
                serde_json::json!({"type": "object"}),
            )),
            Constraint::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(single_line(schema.clone()))
            }
            Constraint::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
            Constraint::Regex(regex) => TopLevelGrammar::from_regex(regex),
        };
        let parser = factory
            .create_parser(grammar)
            .map_err(|e| Error::param(PARAM, format!("{}: {e}", describe(constraint))))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::param(
                PARAM,
                format!("{}: {e}", describe(constraint)),
            ));
        }
        tracing::debug!(
            kind = describe(constraint),
            compile_ms = started.elapsed().as_secs_f64() * 1e3,
            "grammar compiled"
        );
        let fresh = matcher.deep_clone();
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        compiled.push_front((key, matcher));
        compiled.truncate(CACHED_GRAMMARS);
        Ok(TokenConstraint::new(fresh))
    }
}

/// JSON on one line with `, ` and `: ` between items (as OpenAI's and Python's defaults write
/// it), unless the schema sets llguidance's own `x-guidance` options: free whitespace lets small
/// models wander into runs of blank lines.
fn single_line(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(map) = schema.as_object_mut() {
        map.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            })
        });
    }
    schema
}

fn describe(constraint: &Constraint) -> &'static str {
    match constraint {
        Constraint::JsonObject => "json_object",
        Constraint::JsonSchema(_) => "json_schema",
        Constraint::Lark(_) => "lark grammar",
        Constraint::Regex(_) => "regex",
    }
}

/// llguidance's view of the vocabulary: each token's bytes; control tokens (no bytes) get a
/// name behind llguidance's special-token marker, so no text ever matches them.
fn build_factory(vocab: &Vocabulary) -> std::result::Result<ParserFactory, String> {
    let started = Instant::now();
    let words: Vec<Vec<u8>> = (0..vocab.len() as u32)
        .map(|id| match vocab.piece(id, false) {
            [] => [&[0xFF][..], format!("<control_{id}>").as_bytes()].concat(),
            piece => piece.to_vec(),
        })
        .collect();
    let eos = vocab
        .end_of_generation_ids()
        .next()
        .ok_or("the vocabulary has no end-of-generation token")?;
    let info = TokRxInfo::new(vocab.len() as u32, eos);
    let trie = TokTrie::from(&info, &words);
    let env: Arc<dyn TokenizerEnv + Sync> = Arc::new(ApproximateTokEnv::new(trie));
    let mut factory = ParserFactory::new(
        &env,
        Default::default(),
        &llguidance::earley::SlicedBiasComputer::general_slices(),
    )
    .map_err(|e| format!("preparing constrained decoding: {e}"))?;
    factory.quiet();
    tracing::debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        "constrained decoding ready for this vocabulary"
    );
    Ok(factory)
}

/// One choice's constraint: which tokens may come next, advanced by each token taken.
pub struct TokenConstraint {
    matcher: Matcher,
    mask: Option<SimpleVob>,
}

impl std::fmt::Debug for TokenConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenConstraint")
    }
}

impl TokenConstraint {
    fn new(matcher: Matcher) -> Self {
        TokenConstraint {
            matcher,
            mask: None,
        }
    }

    /// An independent copy for another choice of the same request.
    pub fn fork(&self) -> Self {
        TokenConstraint::new(self.matcher.deep_clone())
    }

    /// Set every token the grammar does not allow next to minus infinity. A matcher that fails
    /// allows only end of generation, ending the choice.
    pub fn restrict(&mut self, logits: &mut [f32]) {
        let mask = match self.matcher.compute_mask_or_eos() {
            Ok(mask) => mask,
            Err(e) => {
                tracing::warn!("constrained decoding failed, ending the choice: {e}");
                self.matcher.tok_env().map_or_else(
                    |_| SimpleVob::alloc(logits.len()),
                    |env| env.tok_trie().eos_token_set(),
                )
            }
        };
        for (word, chunk) in mask.as_slice().iter().zip(logits.chunks_mut(32)) {
            if *word == u32::MAX {
                continue;
            }
            for (bit, logit) in chunk.iter_mut().enumerate() {
                if word >> bit & 1 == 0 {
                    *logit = f32::NEG_INFINITY;
                }
            }
        }
        self.mask = Some(mask);
    }

    /// Whether the last mask allows `token`.
    pub fn allows(&self, token: u32) -> bool {
        self.mask.as_ref().is_none_or(|m| m.is_allowed(token))
    }

    /// Advance past the token taken.
    pub fn advance(&mut self, token: u32) {
        if !self.matcher.is_stopped() {
            if let Err(e) = self.matcher.consume_token(token) {
                tracing::warn!("constrained decoding could not take token {token}: {e}");
            }
        }
    }
}
