//! The generation core: everything about generating text that is not engine-specific, written
//! once for every engine. An engine implements [`Evaluator`] (evaluate token batches into logits
//! or device-picked tokens, keep each sequence's KV cache) and describes its [`Vocabulary`]; the
//! core owns the rest: sequences (end of generation, stop strings, limits, usage, cancellation),
//! token picking (sampling, logit bias, log-probabilities), `n` choices per request,
//! speculative decoding (prompt lookup, predictions, draft models), and the continuous-batching
//! scheduler with its prefix cache, prompt store and KV-full policy.
//!
//! Each loaded model has one [`Generator`]: a thread that owns the engine's evaluator and runs
//! the scheduler, and a handle that submits requests to it.

mod constraint;
mod draft;
mod evaluator;
mod job;
mod picker;
mod prompt_store;
mod scheduler;
mod sequence;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use tokio::sync::mpsc;

pub use draft::DraftModel;
pub use evaluator::{
    BatchEntry, BatchToken, Evaluator, Limits, SavedState, Tokenizer, Vocabulary, Wanted,
};
pub use picker::{argmax, Picked, PickedLogprobs, PickerOptions, TokenPicker};

use crate::backend::Embeddings;
use crate::error::{Error, Result};
use crate::request::GenerationRequest;
use crate::response::TokenStream;
use constraint::Grammars;
use job::{Job, Work};
use scheduler::Scheduler;

/// What the model's thread reports once its evaluator is ready.
struct Ready<T> {
    limits: Limits,
    vocab: Arc<Vocabulary>,
    store_bytes: Arc<AtomicUsize>,
    extra: T,
}

/// Given to the thread started by [`Generator::spawn`]: it either serves an evaluator or says
/// why it could not make one.
pub struct Starter<T> {
    ready: std_mpsc::Sender<Result<Ready<T>>>,
    inbox: std_mpsc::Receiver<Work>,
}

impl<T> Starter<T> {
    /// Report that the evaluator could not be made.
    pub fn fail(self, error: Error) {
        let _ = self.ready.send(Err(error));
    }

    /// Report readiness (with `extra` for the caller of [`Generator::spawn`]), then run the
    /// scheduler over `engine` until the [`Generator`] is dropped.
    pub fn serve<E: Evaluator>(self, engine: E, vocab: Vocabulary, extra: T) {
        let vocab = Arc::new(vocab);
        let store_bytes = Arc::new(AtomicUsize::new(0));
        let ready = Ready {
            limits: engine.limits(),
            vocab: Arc::clone(&vocab),
            store_bytes: Arc::clone(&store_bytes),
            extra,
        };
        if self.ready.send(Ok(ready)).is_err() {
            return;
        }
        Scheduler::new(engine, vocab, store_bytes).run(self.inbox);
    }
}

/// Handle to one model's generation thread. Dropping it ends the thread (requests still
/// running get an error) and waits for it, so no engine work outlives the model.
pub struct Generator {
    jobs: Option<std_mpsc::Sender<Work>>,
    thread: Option<std::thread::JoinHandle<()>>,
    limits: Limits,
    vocab: Arc<Vocabulary>,
    store_bytes: Arc<AtomicUsize>,
    grammars: Arc<Grammars>,
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// An embeddings request's tokens, in context windows.
pub const EMBEDDING_CONTEXTS: usize = 16;

impl Generator {
    /// Start the thread `name`, on which `start` builds the engine's evaluator and hands it to
    /// [`Starter::serve`]. Blocks until it is ready; returns the handle and what `start` passed
    /// along.
    pub fn spawn<T, F>(name: &str, start: F) -> Result<(Generator, T)>
    where
        T: Send + 'static,
        F: FnOnce(Starter<T>) + Send + 'static,
    {
        let (jobs, inbox) = std_mpsc::channel();
        let (ready, wait) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || start(Starter { ready, inbox }))
            .map_err(|e| Error::engine("generation", format!("starting the model thread: {e}")))?;
        let ready = wait.recv().map_err(|_| {
            Error::engine("generation", "the model thread stopped while starting")
        })??;
        Ok((
            Generator {
                jobs: Some(jobs),
                thread: Some(thread),
                limits: ready.limits,
                vocab: Arc::clone(&ready.vocab),
                store_bytes: ready.store_bytes,
                grammars: Grammars::new(ready.vocab),
            },
            ready.extra,
        ))
    }

    /// The sizes the model schedules within.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Token ids in the model's vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The text `tokens` stand for, spelled as in an answer: control tokens have none (unless
    /// kept as markup), and a SentencePiece word-start space that a text's decoder drops is
    /// dropped from the first token. Bytes that are not UTF-8 become U+FFFD.
    pub fn detokenize(&self, tokens: &[u32]) -> Result<String> {
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.vocab.len()) {
            return Err(Error::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.vocab.len()
            )));
        }
        let bytes: Vec<u8> = tokens
            .iter()
            .enumerate()
            .flat_map(|(i, &t)| self.vocab.piece(t, i == 0).iter().copied())
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Write these control tokens as text in answers from now on (set once, before the first
    /// request; see [`Vocabulary::keep_markup`]).
    pub fn keep_markup(&self, tokens: impl IntoIterator<Item = (u32, Vec<u8>)>) {
        self.vocab.keep_markup(tokens);
    }

    /// Bytes the prompt store holds now (within [`Limits::prompt_store_bytes`]).
    pub fn prompt_store_bytes(&self) -> usize {
        self.store_bytes.load(Ordering::Relaxed)
    }

    /// Start generating `request`'s choices from `prompt` (its token ids). Requests that cannot
    /// fit the model are refused here, before any token; dropping the stream cancels them.
    pub async fn submit(
        &self,
        prompt: Vec<u32>,
        request: &GenerationRequest,
    ) -> Result<TokenStream> {
        self.check(&prompt, request)?;
        let constraint = match &request.constraint {
            Some(c) => Some(self.grammars.matcher(c).await?),
            None => None,
        };
        let sampling = request.sampling.resolve();
        let (events, mut rx) = mpsc::unbounded_channel();
        let job = Job {
            prompt,
            picker: PickerOptions {
                sampling,
                logit_bias: request.logit_bias.clone(),
                logprobs: request.logprobs,
            },
            constraint,
            seed: sampling.seed,
            stop: request.stop.clone(),
            max_tokens: request.max_tokens,
            ignore_eos: request.ignore_eos,
            cache_prompt: request.cache_prompt,
            n: request.n,
            drafting: request.drafting,
            prediction: request.prediction_tokens.clone(),
            events,
            token_ids: None,
        };
        self.send(Work::Generate(Box::new(job)))?;
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
    }

    /// A handle through which another model with the same vocabulary drafts with this one
    /// (see [`Generator::attach_draft`]).
    pub fn draft_model(&self) -> Result<DraftModel> {
        let jobs = self
            .jobs
            .clone()
            .ok_or_else(|| Error::engine("generation", "the model is shutting down"))?;
        Ok(DraftModel::new(jobs, Arc::clone(&self.vocab)))
    }

    /// Let requests that ask for a draft model draft with `draft`, whose vocabulary must be
    /// this model's, token for token.
    pub fn attach_draft(&self, draft: DraftModel) -> Result<()> {
        if let Some(difference) = draft::vocabulary_difference(&self.vocab, draft.vocabulary()) {
            return Err(Error::Config(format!(
                "the draft model's vocabulary is not the model's: {difference}"
            )));
        }
        self.send(Work::AttachDraft(draft))
    }

    /// One L2-normalised embedding per input (token ids): the mean of the model's last hidden
    /// states, computed on the model's thread one input between two generation steps. All
    /// inputs together hold at most [`EMBEDDING_CONTEXTS`] times the context's tokens.
    pub async fn embed(&self, inputs: Vec<Vec<u32>>) -> Result<Embeddings> {
        let cells = self.limits.kv_cells;
        if let Some(longest) = inputs.iter().map(Vec::len).max().filter(|&n| n > cells) {
            return Err(Error::ContextOverflow {
                prompt_tokens: longest,
                context_size: cells,
            });
        }
        if inputs.is_empty() || inputs.iter().any(Vec::is_empty) {
            return Err(Error::param("input", "embedding inputs must not be empty"));
        }
        let total: usize = inputs.iter().map(Vec::len).sum();
        let most = EMBEDDING_CONTEXTS * cells;
        if total > most {
            return Err(Error::param(
                "input",
                format!(
                    "the inputs have {total} tokens, over the limit of {most} per request \
                     ({EMBEDDING_CONTEXTS} times the context size)"
                ),
            ));
        }
        let prompt_tokens = total as u32;
        let (reply, vectors) = tokio::sync::oneshot::channel();
        self.send(Work::Embed { inputs, reply })?;
        let vectors = vectors
            .await
            .map_err(|_| Error::engine("generation", "the model's thread has stopped"))??;
        Ok(Embeddings {
            vectors,
            prompt_tokens,
        })
    }

    fn send(&self, work: Work) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(|| Error::engine("generation", "the model is shutting down"))?
            .send(work)
            .map_err(|_| Error::engine("generation", "the model's thread has stopped"))
    }

    fn check(&self, prompt: &[u32], request: &GenerationRequest) -> Result<()> {
        let cells = self.limits.kv_cells;
        if prompt.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        if prompt.len() >= cells {
            return Err(Error::ContextOverflow {
                prompt_tokens: prompt.len(),
                context_size: cells,
            });
        }
        if let Some(bad) = prompt.iter().find(|&&t| t as usize >= self.vocab.len()) {
            return Err(Error::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.vocab.len()
            )));
        }
        if let Some((bad, _)) = request
            .logit_bias
            .iter()
            .find(|(t, _)| *t as usize >= self.vocab.len())
        {
            return Err(Error::param(
                "logit_bias",
                format!(
                    "logit_bias names token {bad}, outside the vocabulary of {} tokens",
                    self.vocab.len()
                ),
            ));
        }
        let n = request.n as usize;
        if n > self.limits.slots {
            return Err(Error::param(
                "n",
                format!(
                    "n = {n} but this model generates at most {} sequences at once (its `parallel` setting)",
                    self.limits.slots
                ),
            ));
        }
        if n * (prompt.len() + 1) > cells {
            return Err(Error::param(
                "n",
                format!(
                    "{n} choices of a {}-token prompt do not fit the context of {cells} tokens",
                    prompt.len()
                ),
            ));
        }
        Ok(())
    }
}
