//! Drafting for speculative decoding: guesses of the next tokens taken from text the answer is
//! likely to repeat — the predicted output a request gives (OpenAI's `prediction`) and the
//! prompt and answer so far (prompt lookup: where the last few tokens occurred before, what
//! followed them then) — or from a smaller model with the same vocabulary ([`DraftModel`]). The
//! scheduler feeds the guesses after the next token in one step and keeps those the model would
//! have picked itself, so the output is exactly what decoding one token at a time gives.

use std::any::Any;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::evaluator::Vocabulary;
use super::job::{Job, Work};
use super::picker::PickerOptions;
use crate::error::{Error, Result};
use crate::response::StreamEvent;
use crate::sampling::SamplingParams;

/// Longest run of recent tokens looked up; shorter ones are tried when it is not found.
const MAX_NGRAM: usize = 3;

/// How one choice drafts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Drafter {
    /// Most tokens per draft (the current, adaptive length stays within it).
    max_tokens: usize,
    /// Look up the prompt and the answer so far.
    prompt_lookup: bool,
    /// Ask the model's draft model when the prediction has nothing.
    draft_model: bool,
    /// The predicted output's tokens.
    prediction: Vec<u32>,
    /// The draft length to propose next: grows while drafts are accepted whole, shrinks to
    /// what was accepted otherwise.
    length: usize,
    /// Where in the prediction the answer was last found: the answer follows it in order, so
    /// the next lookup searches forward from here first.
    cursor: usize,
}

impl Drafter {
    /// A drafter proposing at most `max_tokens` at once, from the prompt and answer so far
    /// (`prompt_lookup`), from `prediction`, and from the model's draft model (`draft_model`).
    pub fn new(
        max_tokens: usize,
        prompt_lookup: bool,
        draft_model: bool,
        prediction: Vec<u32>,
    ) -> Self {
        Drafter {
            max_tokens,
            prompt_lookup,
            draft_model,
            prediction,
            length: max_tokens,
            cursor: 0,
        }
    }

    /// Whether it ever drafts.
    pub fn is_active(&self) -> bool {
        self.max_tokens > 0
            && (self.prompt_lookup || self.draft_model || !self.prediction.is_empty())
    }

    /// How many tokens the draft model is asked for when [`Drafter::propose`] found none (0:
    /// this choice does not use one).
    pub fn model_tokens(&self, room: usize) -> usize {
        match self.draft_model {
            true => self.length.min(room),
            false => 0,
        }
    }

    /// Tokens likely to follow `context` (the prompt and the `generated` tokens of the answer
    /// so far, the last of them about to be fed), at most `room`.
    pub fn propose(&mut self, context: &[u32], generated: usize, room: usize) -> Vec<u32> {
        let want = self.length.min(room);
        if want == 0 || !self.is_active() || context.is_empty() {
            return Vec::new();
        }
        // An answer just begun follows the predicted output from its start.
        if generated == 1 && self.prediction.first() == context.last() {
            self.cursor = 1;
            return self.prediction[1..].iter().take(want).copied().collect();
        }
        for n in (1..=MAX_NGRAM.min(context.len())).rev() {
            let key = &context[context.len() - n..];
            if let Some(at) = self.find_in_prediction(key) {
                self.cursor = at;
                let found: Vec<u32> = self.prediction[at..].iter().take(want).copied().collect();
                if !found.is_empty() {
                    return found;
                }
            }
            // The history without the key itself: its latest earlier occurrence.
            if self.prompt_lookup {
                if let Some(found) = follow(&context[..context.len() - 1], key, want) {
                    return found;
                }
            }
        }
        Vec::new()
    }

    /// Where `key` ends in the prediction: its first occurrence from the cursor on (the
    /// answer moves forward through the prediction), else its latest before.
    fn find_in_prediction(&self, key: &[u32]) -> Option<usize> {
        let n = key.len();
        if self.prediction.len() < n {
            return None;
        }
        let from = self.cursor.saturating_sub(n);
        let ends_at = |i: usize| i + n;
        (from..=self.prediction.len() - n)
            .find(|&i| &self.prediction[i..i + n] == key)
            .or_else(|| (0..from).rev().find(|&i| &self.prediction[i..i + n] == key))
            .map(ends_at)
    }

    /// Adapt the next draft's length to how much of the last one (`proposed` tokens) was kept.
    pub fn observe(&mut self, proposed: usize, accepted: usize) {
        self.length = if accepted == proposed {
            (self.length * 2).clamp(1, self.max_tokens)
        } else {
            (accepted + 1).clamp(1, self.max_tokens)
        };
    }
}

/// A model drafting for another with the same vocabulary: the draft's generation thread, asked
/// for greedy continuations. Each asked context reuses the draft's prefix cache, so only the
/// tokens accepted since its last draft are evaluated again.
pub struct DraftModel {
    jobs: std_mpsc::Sender<Work>,
    vocab: Arc<Vocabulary>,
    /// Keeps the draft model loaded while this handle lives (dropped after `jobs`, so the
    /// draft's thread sees its inbox close before its owner waits for it).
    _owner: Option<Arc<dyn Any + Send + Sync>>,
}

impl DraftModel {
    pub(crate) fn new(jobs: std_mpsc::Sender<Work>, vocab: Arc<Vocabulary>) -> Self {
        DraftModel {
            jobs,
            vocab,
            _owner: None,
        }
    }

    /// This handle, keeping `owner` (the loaded draft model) alive as long as it lives.
    pub fn owned_by(mut self, owner: Arc<dyn Any + Send + Sync>) -> Self {
        self._owner = Some(owner);
        self
    }

    /// The draft's vocabulary.
    pub(crate) fn vocabulary(&self) -> &Vocabulary {
        &self.vocab
    }

    /// Greedy continuations of each `(context, tokens)`, asked together so that the draft
    /// batches them. A failed draft is empty: drafts never change the answer, only its speed.
    pub(crate) fn draft(&self, asks: &[(Vec<u32>, usize)]) -> Vec<Vec<u32>> {
        let pending: Vec<_> = asks
            .iter()
            .map(|(context, tokens)| self.ask(context.clone(), *tokens))
            .collect();
        pending
            .into_iter()
            .map(|pending| match pending {
                Ok((events, ids)) => collect_draft(events, ids).unwrap_or_else(|e| {
                    tracing::debug!("the draft model gave no draft: {e}");
                    Vec::new()
                }),
                Err(e) => {
                    tracing::debug!("the draft model gave no draft: {e}");
                    Vec::new()
                }
            })
            .collect()
    }

    /// Queue one greedy continuation of `context`, `tokens` long.
    fn ask(&self, context: Vec<u32>, tokens: usize) -> Result<PendingDraft> {
        let (events, events_rx) = mpsc::unbounded_channel();
        let (ids, ids_rx) = std_mpsc::channel();
        let greedy = SamplingParams {
            temperature: Some(0.0),
            ..SamplingParams::default()
        };
        let job = Job {
            prompt: context,
            picker: PickerOptions {
                sampling: greedy.resolve(),
                logit_bias: Vec::new(),
                logprobs: None,
            },
            constraint: None,
            seed: None,
            stop: Vec::new(),
            max_tokens: Some(tokens as u32),
            // An end-of-generation guess is the draft's last: nothing follows it.
            ignore_eos: false,
            cache_prompt: true,
            n: 1,
            drafting: None,
            prediction: Vec::new(),
            events,
            token_ids: Some(ids),
        };
        self.jobs
            .send(Work::Generate(Box::new(job)))
            .map_err(|_| Error::engine("generation", "the draft model has stopped"))?;
        Ok((events_rx, ids_rx))
    }
}

/// A queued draft: its events (for its end) and its token ids.
type PendingDraft = (
    mpsc::UnboundedReceiver<Result<StreamEvent>>,
    std_mpsc::Receiver<u32>,
);

/// Wait for a draft's end, then take its token ids.
fn collect_draft(
    mut events: mpsc::UnboundedReceiver<Result<StreamEvent>>,
    ids: std_mpsc::Receiver<u32>,
) -> Result<Vec<u32>> {
    loop {
        match events.blocking_recv() {
            Some(Ok(StreamEvent::Done { .. })) => return Ok(ids.try_iter().collect()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(Error::engine("generation", "the draft model has stopped")),
        }
    }
}

/// Where two vocabularies differ, if they do (ids, bytes, end-of-generation tokens aside).
pub(crate) fn vocabulary_difference(model: &Vocabulary, draft: &Vocabulary) -> Option<String> {
    if model.len() != draft.len() {
        return Some(format!(
            "{} tokens against the model's {}",
            draft.len(),
            model.len()
        ));
    }
    (0..model.len() as u32)
        .find(|&id| model.piece(id, false) != draft.piece(id, false))
        .map(|id| {
            format!(
                "token {id} is {:?} in the draft and {:?} in the model",
                String::from_utf8_lossy(draft.piece(id, false)),
                String::from_utf8_lossy(model.piece(id, false))
            )
        })
}

/// Up to `want` tokens that follow the latest occurrence of `key` in `text` (none when the key
/// is not there or nothing follows it).
fn follow(text: &[u32], key: &[u32], want: usize) -> Option<Vec<u32>> {
    if key.is_empty() || text.len() <= key.len() {
        return None;
    }
    (0..text.len() - key.len())
        .rev()
        .find(|&i| &text[i..i + key.len()] == key)
        .map(|i| {
            let from = i + key.len();
            text[from..(from + want).min(text.len())].to_vec()
        })
        .filter(|draft| !draft.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lookup_proposes_what_followed_the_last_tokens() {
        let mut drafter = Drafter::new(4, true, false, Vec::new());
        // ... 5 6 7 8 9 ... then the answer reaches 5 6 (next 7): propose 8 9 1 2.
        let context = [1, 5, 6, 7, 8, 9, 1, 2, 3, 5, 6, 7];
        assert_eq!(drafter.propose(&context, 3, 8), vec![8, 9, 1, 2]);
        assert_eq!(drafter.propose(&context, 3, 2), vec![8, 9]);
        // Nothing like it before: no draft.
        assert!(drafter.propose(&[1, 2, 3, 4], 1, 8).is_empty());
    }

    #[test]
    fn a_prediction_is_followed_in_order() {
        // "12 13" occurs twice; the answer is past the first, so the second is meant.
        let mut drafter = Drafter::new(3, false, false, vec![10, 12, 13, 20, 21, 12, 13, 30, 31]);
        assert_eq!(drafter.propose(&[1, 10], 1, 8), vec![12, 13, 20]);
        assert_eq!(
            drafter.propose(&[1, 10, 12, 13, 20, 21, 12, 13], 7, 8),
            vec![30, 31]
        );
    }

    #[test]
    fn a_prediction_drafts_from_its_start_and_where_the_answer_rejoins_it() {
        let mut drafter = Drafter::new(3, false, false, vec![10, 11, 12, 13, 14, 15]);
        assert_eq!(drafter.propose(&[1, 2, 10], 1, 8), vec![11, 12, 13]);
        // The answer diverged, then came back to 12 13.
        assert_eq!(drafter.propose(&[1, 2, 10, 99, 12, 13], 4, 8), vec![14, 15]);
        assert!(!Drafter::new(3, false, false, Vec::new()).is_active());
    }

    #[test]
    fn the_draft_length_adapts() {
        let mut drafter = Drafter::new(8, true, false, Vec::new());
        drafter.observe(8, 2);
        assert_eq!(drafter.length, 3);
        drafter.observe(3, 3);
        assert_eq!(drafter.length, 6);
        drafter.observe(6, 0);
        assert_eq!(drafter.length, 1);
    }
}
