//! Structured output: a request's [`Constraint`] compiled by llguidance against the model's
//! vocabulary, then applied token by token in the picker (tokens the grammar cannot take next
//! get a logit of minus infinity; end of generation is allowed once the grammar is complete).
//! Compiled grammars are cached per model and constraint; each choice gets its own copy.
//!
//! A constraint is any client's input, so preparing one is bounded: its text has a size limit
//! and a nesting limit, checked before anything is compiled; compilation runs on a thread of its
//! own with a large stack (llguidance recurses over the grammar's structure), never on the
//! model's or the server's threads, and a request waits for it at most [`PREPARE_TIME`]; at most
//! [`PREPARING_AT_ONCE`] constraints of a model compile at a time. Over a limit the request
//! fails with a 400 naming `response_format` and the limit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use tokio::sync::{oneshot, Semaphore};

use super::evaluator::Vocabulary;
use crate::error::{Error, Result};
use crate::request::Constraint;

/// Compiled grammars kept per model.
const CACHED_GRAMMARS: usize = 32;

/// The request field constraints come from, for errors.
const PARAM: &str = "response_format";

/// Longest constraint text (the schema as JSON, the grammar or the regex).
pub const MAX_CONSTRAINT_BYTES: usize = 128 * 1024;

/// Deepest nesting of brackets in a constraint's text (JSON objects and arrays, grammar or regex
/// groups).
pub const MAX_CONSTRAINT_NESTING: usize = 64;

/// Longest a request waits for its constraint to compile.
pub const PREPARE_TIME: Duration = Duration::from_secs(10);

/// Constraints of one model compiling at once (a compilation past [`PREPARE_TIME`] still holds
/// its place until llguidance's own limits end it).
pub const PREPARING_AT_ONCE: usize = 2;

/// Most Earley items in one row of a grammar's parse: a flat alternation of `n` choices needs
/// `n + 1` (llguidance's default of 2,000 ended answers to larger ones after their first
/// token); the size limit above keeps any grammar's alternations within it, and each step's
/// work stays bounded by llguidance's own `step_max_items` (50,000).
const MAX_ITEMS_IN_ROW: usize = 50_000;

/// Stack of a compiling thread: llguidance's recursion over a grammar within the limits above
/// stays far inside it.
const PREPARE_STACK_BYTES: usize = 256 * 1024 * 1024;

/// One model's grammar compiler and cache of compiled grammars.
pub struct Grammars {
    vocab: Arc<Vocabulary>,
    factory: OnceLock<std::result::Result<ParserFactory, String>>,
    /// Most recently used first: the constraint (as JSON) and its compiled, unstarted matcher.
    compiled: Mutex<VecDeque<(String, Matcher)>>,
    /// Places for compilations running now.
    preparing: Arc<Semaphore>,
}

impl Grammars {
    /// Grammars over `vocab` (the factory is built on first use).
    pub fn new(vocab: Arc<Vocabulary>) -> Arc<Self> {
        Arc::new(Grammars {
            vocab,
            factory: OnceLock::new(),
            compiled: Mutex::new(VecDeque::new()),
            preparing: Arc::new(Semaphore::new(PREPARING_AT_ONCE)),
        })
    }

    /// A fresh matcher for `constraint`: compiled once, on a thread of its own within the
    /// limits above, then copied from the cache. An invalid schema or grammar, a schema feature
    /// llguidance cannot enforce, or a limit exceeded is an error naming it.
    pub async fn matcher(self: &Arc<Self>, constraint: &Constraint) -> Result<TokenConstraint> {
        let key = serde_json::to_string(constraint).unwrap_or_default();
        if let Some(matcher) = self.cached(&key) {
            return Ok(TokenConstraint::new(matcher));
        }
        check_size(constraint, &key)?;
        let started = Instant::now();
        let over_time = || {
            Error::param(
                PARAM,
                format!(
                    "the {} took longer than {} s to prepare; simplify it",
                    describe(constraint),
                    PREPARE_TIME.as_secs()
                ),
            )
        };
        let place = tokio::time::timeout(PREPARE_TIME, Arc::clone(&self.preparing).acquire_owned())
            .await
            .map_err(|_| over_time())?
            .map_err(|_| Error::engine("constraint", "the model is shutting down"))?;
        let (done, result) = oneshot::channel();
        let (grammars, owned) = (Arc::clone(self), constraint.clone());
        std::thread::Builder::new()
            .name("constraint".into())
            .stack_size(PREPARE_STACK_BYTES)
            .spawn(move || {
                let compiled = grammars.compile(&owned, key);
                drop(place);
                let _ = done.send(compiled);
            })
            .map_err(|e| Error::engine("constraint", format!("starting a thread: {e}")))?;
        let left = PREPARE_TIME.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, result).await {
            Ok(Ok(compiled)) => compiled.map(TokenConstraint::new),
            Ok(Err(_)) => Err(Error::engine(
                "constraint",
                format!("preparing the {} failed", describe(constraint)),
            )),
            Err(_) => Err(over_time()),
        }
    }

    /// A copy of the compiled matcher for `key`, if it is cached.
    fn cached(&self, key: &str) -> Option<Matcher> {
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        let at = compiled.iter().position(|(k, _)| k == key)?;
        let entry = compiled.remove(at).expect("position is in range");
        let matcher = entry.1.deep_clone();
        compiled.push_front(entry);
        Some(matcher)
    }

    /// Compile `constraint` (cached under `key`) and return a fresh copy.
    fn compile(&self, constraint: &Constraint, key: String) -> Result<Matcher> {
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
        Ok(fresh)
    }
}

/// The size and nesting limits, on the constraint's own text (`key` is it as JSON).
fn check_size(constraint: &Constraint, key: &str) -> Result<()> {
    let text = match constraint {
        Constraint::JsonObject | Constraint::JsonSchema(_) => key,
        Constraint::Lark(text) | Constraint::Regex(text) => text,
    };
    let refuse = |what: String| {
        Err(Error::param(
            PARAM,
            format!("the {} {what}; simplify it", describe(constraint)),
        ))
    };
    if text.len() > MAX_CONSTRAINT_BYTES {
        return refuse(format!(
            "is {} bytes long, over the limit of {MAX_CONSTRAINT_BYTES}",
            text.len()
        ));
    }
    let (mut depth, mut deepest) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_CONSTRAINT_NESTING {
        return refuse(format!(
            "nests {deepest} levels deep, over the limit of {MAX_CONSTRAINT_NESTING}"
        ));
    }
    Ok(())
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
    factory.limits_mut().max_items_in_row = MAX_ITEMS_IN_ROW;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Grammars over a byte-level vocabulary: every byte a token, and an end-of-sequence token.
    fn grammars() -> Arc<Grammars> {
        let mut pieces: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        pieces.push(Vec::new());
        Grammars::new(Arc::new(Vocabulary::new(pieces, [256], false)))
    }

    fn alternatives(n: usize) -> Constraint {
        let words: Vec<String> = (0..n).map(|i| format!("\"w{i}\"")).collect();
        Constraint::Lark(format!("start: {}", words.join(" | ")))
    }

    #[tokio::test]
    async fn a_grammar_of_thousands_of_alternatives_compiles_and_is_followed() {
        // 5,000 alternatives overflowed a 2 MiB stack; on the compiling thread's they compile,
        // and a whole answer follows them (past the first token, where llguidance's default
        // row limit ended it).
        let mut constraint = grammars().matcher(&alternatives(5_000)).await.unwrap();
        for (byte, not) in [
            (b'w', b'x'),
            (b'4', b'w'),
            (b'9', b'x'),
            (b'9', b'x'),
            (b'9', b'x'),
        ] {
            let mut logits = vec![0.0; 257];
            constraint.restrict(&mut logits);
            assert!(constraint.allows(u32::from(byte)), "{}", byte as char);
            assert!(!constraint.allows(u32::from(not)), "{}", not as char);
            constraint.advance(u32::from(byte));
        }
        let mut logits = vec![0.0; 257];
        constraint.restrict(&mut logits);
        assert!(
            constraint.allows(256),
            "w4999 is complete: end of generation"
        );
        assert!(!constraint.allows(u32::from(b'0')));
    }

    #[tokio::test]
    async fn over_a_size_or_nesting_limit_is_a_parameter_error_naming_it() {
        let g = grammars();
        let err = g.matcher(&alternatives(30_000)).await.err().unwrap();
        assert!(
            matches!(&err, Error::InvalidParam { param, message } if param == PARAM
                && message.contains("bytes long, over the limit")),
            "{err}"
        );
        let deep = format!("{}a{}", "(".repeat(1_000), ")".repeat(1_000));
        let err = g.matcher(&Constraint::Regex(deep)).await.err().unwrap();
        assert!(err.to_string().contains("1000 levels deep"), "{err}");
        let mut schema = serde_json::json!({"type": "string"});
        for _ in 0..200 {
            schema = serde_json::json!({"type": "array", "items": schema});
        }
        let err = g
            .matcher(&Constraint::JsonSchema(schema))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("levels deep"), "{err}");
    }
}
