//! One choice being generated: its tokens, how it picks the next one, when it ends (end of
//! generation, stop strings, `max_tokens`, a full context) and what its reader receives (text
//! deltas with log-probabilities, then the finish reason and usage).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::draft::Drafter;
use super::evaluator::Vocabulary;
use super::picker::{Picked, TokenPicker};
use crate::error::{Error, Result};
use crate::response::{FinishReason, StreamEvent, TokenLogprob, TokenProb, Usage};
use crate::text_stream::TextAssembler;

/// A request's event channel. Unbounded so that a reader that stops reading can never stall the
/// model's thread (and with it every other request); what it buffers is bounded by the request's
/// token limit and the context size.
pub(crate) type Events = mpsc::UnboundedSender<Result<StreamEvent>>;

/// What a sequence does after taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Feed the token and go on.
    Continue,
    /// The sequence has ended; its final event is sent.
    Finished,
    /// The reader is gone.
    Cancelled,
}

/// The limits and end conditions of one choice.
pub(crate) struct Ending {
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// KV cells: prompt plus generated tokens never exceed them.
    pub kv_cells: usize,
}

/// One choice of a request.
pub(crate) struct Sequence {
    choice: u32,
    events: Events,
    /// The prompt, shared by the request's choices.
    prompt: Arc<Vec<u32>>,
    /// Prompt followed by the tokens generated so far (the penalties' history).
    tokens: Vec<u32>,
    /// The picker.
    pub picker: TokenPicker,
    text: TextAssembler,
    ending: Ending,
    cached: u32,
    /// Log-probabilities of tokens whose text has not been sent yet.
    unsent: Vec<TokenLogprob>,
    /// Where its speculative drafts come from (inactive by default).
    pub drafter: Drafter,
    /// Draft tokens evaluated, and those that became part of the answer.
    drafted: u32,
    accepted: u32,
    /// Where each taken token's id goes (a draft model's answers).
    pub token_ids: Option<std::sync::mpsc::Sender<u32>>,
}

impl Sequence {
    /// Choice `choice` of a request for `prompt`, sending on `events`.
    pub fn new(
        choice: u32,
        events: Events,
        prompt: Arc<Vec<u32>>,
        picker: TokenPicker,
        stop: Vec<String>,
        ending: Ending,
    ) -> Self {
        Sequence {
            choice,
            events,
            tokens: prompt.to_vec(),
            prompt,
            picker,
            text: TextAssembler::new(stop),
            ending,
            cached: 0,
            unsent: Vec::new(),
            drafter: Drafter::default(),
            drafted: 0,
            accepted: 0,
            token_ids: None,
        }
    }

    /// Up to `room` guesses at the tokens after the last one taken.
    pub fn propose_draft(&mut self, room: usize) -> Vec<u32> {
        let generated = self.generated();
        self.drafter.propose(&self.tokens, generated, room)
    }

    /// Most tokens it may generate: `max_tokens`, within the context.
    fn limit(&self) -> usize {
        let room = self.ending.kv_cells.saturating_sub(self.prompt.len());
        self.ending
            .max_tokens
            .map_or(room, |m| (m as usize).min(room))
    }

    /// Tokens it may still generate.
    pub fn remaining(&self) -> usize {
        self.limit().saturating_sub(self.generated())
    }

    /// Count `n` draft tokens about to be verified (before any is taken, so that usage is
    /// right whenever the sequence ends).
    pub fn count_drafted(&mut self, n: usize) {
        self.drafted += n as u32;
    }

    /// Count one draft token that the answer keeps (before taking it).
    pub fn count_accepted(&mut self) {
        self.accepted += 1;
    }

    /// The prompt followed by the tokens taken so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The prompt.
    pub fn prompt(&self) -> &Arc<Vec<u32>> {
        &self.prompt
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt.len()
    }

    /// Record that `n` prompt tokens came from the prefix cache.
    pub fn set_cached(&mut self, n: usize) {
        self.cached = n as u32;
    }

    /// Whether the reader has gone away.
    pub fn is_cancelled(&self) -> bool {
        self.events.is_closed()
    }

    /// Whether a sequence that has generated `generated` tokens may generate another.
    pub fn may_generate_after(&self, generated: usize) -> bool {
        generated < self.limit()
    }

    /// Pick from `logits` (host-side picking).
    pub fn pick(&mut self, logits: &[f32]) -> Picked {
        self.picker.pick(logits, &self.tokens)
    }

    /// Take the next token; sends its text if any is ready.
    pub fn accept(&mut self, picked: Picked, vocab: &Vocabulary) -> Outcome {
        let token = picked.token;
        let first = self.generated() == 0;
        self.tokens.push(token);
        if let Some(ids) = &self.token_ids {
            let _ = ids.send(token);
        }
        if !self.ending.ignore_eos && vocab.is_end_of_generation(token) {
            return self.finish(FinishReason::Stop);
        }
        if let Some(lp) = picked.logprobs {
            let prob = |id: u32, logprob: f32| TokenProb {
                id,
                bytes: vocab.piece(id, false).to_vec(),
                logprob,
            };
            self.unsent.push(TokenLogprob {
                token: prob(token, lp.logprob),
                top: lp.top.into_iter().map(|(id, l)| prob(id, l)).collect(),
            });
        }
        let pushed = self.text.push(vocab.piece(token, first));
        if !pushed.text.is_empty() && !self.send_text(pushed.text) {
            return Outcome::Cancelled;
        }
        if pushed.stopped {
            // Tokens past the stop string's start are not part of the answer.
            self.unsent.clear();
            return self.finish(FinishReason::Stop);
        }
        if !self.may_generate_after(self.generated()) {
            return self.finish(FinishReason::Length);
        }
        Outcome::Continue
    }

    /// End the sequence: send the held-back text and the final event.
    pub fn finish(&mut self, reason: FinishReason) -> Outcome {
        let rest = self.text.finish();
        if (!rest.is_empty() || !self.unsent.is_empty()) && !self.send_text(rest) {
            return Outcome::Cancelled;
        }
        let usage = Usage {
            prompt_tokens: self.prompt.len() as u32,
            completion_tokens: self.generated() as u32,
            cached_tokens: self.cached,
            accepted_prediction_tokens: self.accepted,
            rejected_prediction_tokens: self.drafted - self.accepted,
            reasoning_tokens: 0,
        };
        let done = StreamEvent::Done {
            choice: self.choice,
            finish_reason: reason,
            usage,
            stop_sequence: self.text.matched_stop().map(str::to_string),
        };
        if self.events.send(Ok(done)).is_err() {
            return Outcome::Cancelled;
        }
        Outcome::Finished
    }

    /// Fail the sequence with an engine error.
    pub fn fail(&self, error: Error) {
        let _ = self.events.send(Err(error));
    }

    fn send_text(&mut self, text: String) -> bool {
        let event = StreamEvent::Delta {
            choice: self.choice,
            text,
            logprobs: std::mem::take(&mut self.unsent),
        };
        self.events.send(Ok(event)).is_ok()
    }
}
