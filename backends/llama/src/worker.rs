//! The decoding thread of one loaded model. It owns the llama.cpp context and runs continuous
//! batching: up to `slots` generations share every decode step (one token each for generating
//! sequences, prompt chunks for new ones), new requests join between steps and finished ones
//! leave. All sequences share one KV cache of `n_ctx` cells, so a single request may use the
//! whole context; when concurrent requests together fill it, the most recently started
//! generation ends with finish reason `length` so the older ones can go on. A request whose
//! reader went away (dropped stream, closed connection) is dropped at the next step.
//!
//! Prefix cache: a finished sequence leaves its tokens' KV state in its slot. A new request goes
//! to the free slot sharing the longest prompt prefix and only the rest of its prompt is
//! processed (agent loops and chats resend the whole conversation). Idle caches are evicted,
//! largest first, whenever live requests need their cells.

use std::collections::VecDeque;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use minerva_runtime::backend::done;
use minerva_runtime::{
    Error, FinishReason, GenerationRequest, JobOptions, Result, StreamEvent, TextAssembler,
    TokenStream, Usage,
};
use tokio::sync::mpsc;

use crate::engine::ENGINE_NAME;
use crate::sampler;
use minerva_runtime::sampler::argmax;

/// A request's event channel. Unbounded so that a reader that stops reading can never stall the
/// decoding thread (and with it every other request); what it buffers is bounded by the
/// request's token limit and the context size.
type Events = mpsc::UnboundedSender<Result<StreamEvent>>;

/// One generation to run.
pub struct Job {
    tokens: Vec<LlamaToken>,
    options: JobOptions,
    events: Option<Events>,
}

impl Job {
    /// A job for the prompt `tokens` with `request`'s options.
    pub fn new(tokens: Vec<LlamaToken>, request: &GenerationRequest) -> Self {
        Job {
            tokens,
            options: request.job_options(),
            events: None,
        }
    }
}

/// Handle to a model's decoding thread.
pub struct Worker {
    jobs: std_mpsc::Sender<Job>,
    n_ctx: u32,
}

impl Worker {
    /// Create the context (`slots` parallel sequences sharing its KV cache) and start the thread.
    pub fn spawn(
        model: Arc<LlamaModel>,
        backend: &'static LlamaBackend,
        params: LlamaContextParams,
        slots: usize,
        id: &str,
    ) -> Result<Worker> {
        let (jobs, inbox) = std_mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<u32>>();
        let params = params.with_n_seq_max(slots as u32).with_kv_unified(true);
        std::thread::Builder::new()
            .name(format!("llama:{id}"))
            .spawn(move || {
                let ctx = match model.new_context(backend, params) {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::engine(
                            ENGINE_NAME,
                            format!("creating the context failed: {e}"),
                        )));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(ctx.n_ctx()));
                Scheduler::new(&model, ctx, slots).run(inbox);
            })
            .map_err(|e| Error::engine(ENGINE_NAME, format!("starting worker thread: {e}")))?;
        let n_ctx = ready_rx
            .recv()
            .map_err(|_| Error::engine(ENGINE_NAME, "worker thread exited during start"))??;
        Ok(Worker { jobs, n_ctx })
    }

    /// KV cells of the context, as llama.cpp allocated them (it rounds the request up).
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// Queue `job`; its events arrive on the returned stream.
    pub fn submit(&self, mut job: Job) -> Result<TokenStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        job.events = Some(tx);
        self.jobs
            .send(job)
            .map_err(|_| Error::engine(ENGINE_NAME, "the model's worker thread has stopped"))?;
        let mut rx = rx;
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
    }
}

/// A generation occupying one sequence of the context.
struct Sequence {
    seq_id: i32,
    events: Events,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens already in the KV cache.
    prefilled: usize,
    sampler: LlamaSampler,
    /// Plain greedy (no penalties): pick the largest logit directly, skipping the sampler
    /// chain's per-token candidate array over the whole vocabulary.
    greedy: bool,
    text: TextAssembler,
    max_tokens: Option<u32>,
    ignore_eos: bool,
    generated: u32,
    /// The token sampled last, to be fed at the next step.
    pending: Option<LlamaToken>,
    /// Generated tokens already fed back (in the KV cache after the prompt).
    fed: Vec<LlamaToken>,
    /// Prompt tokens reused from the slot's cache.
    cached: usize,
    /// Index in the current batch whose logits this sequence samples from.
    logits_at: Option<i32>,
    /// Order of admission (older sequences win when the KV cache is full).
    started: u64,
}

impl Sequence {
    /// KV cells this sequence holds or has claimed: its whole prompt from admission on, plus
    /// every generated token already fed back.
    fn reserved(&self) -> usize {
        self.prompt.len() + self.generated.saturating_sub(1) as usize
    }

    /// The tokens whose KV state is in the cache now, in position order.
    fn kv_tokens(mut self) -> Vec<LlamaToken> {
        self.prompt.truncate(self.prefilled);
        if self.prefilled == self.prompt.len() {
            self.prompt.extend_from_slice(&self.fed);
        }
        self.prompt
    }

    fn send(&self, event: StreamEvent) -> bool {
        self.events.send(Ok(event)).is_ok()
    }

    fn fail(&self, message: String) {
        let _ = self.events.send(Err(Error::engine(ENGINE_NAME, message)));
    }

    fn finish(&mut self, reason: FinishReason) {
        let rest = self.text.finish();
        if !rest.is_empty() && !self.send(StreamEvent::Delta(rest)) {
            return;
        }
        self.send(done(
            reason,
            Usage {
                prompt_tokens: self.prompt.len() as u32,
                completion_tokens: self.generated,
                cached_tokens: self.cached as u32,
            },
        ));
    }
}

/// What happened to a sequence after sampling.
enum Outcome {
    Continue,
    Finished(FinishReason),
    Cancelled,
}

struct Scheduler<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    slots: Vec<Option<Sequence>>,
    /// Tokens whose KV state an idle slot still holds (empty for active slots).
    caches: Vec<Vec<LlamaToken>>,
    waiting: VecDeque<Job>,
    n_ctx: usize,
    n_batch: usize,
    admitted: u64,
}

impl<'m> Scheduler<'m> {
    fn new(model: &'m LlamaModel, ctx: LlamaContext<'m>, slots: usize) -> Self {
        let n_ctx = ctx.n_ctx() as usize;
        let n_batch = ctx.n_batch() as usize;
        Scheduler {
            model,
            ctx,
            slots: (0..slots).map(|_| None).collect(),
            caches: vec![Vec::new(); slots],
            waiting: VecDeque::new(),
            n_ctx,
            n_batch,
            admitted: 0,
        }
    }

    fn active(&self) -> impl Iterator<Item = &Sequence> {
        self.slots.iter().flatten()
    }

    /// Cells claimed by live sequences plus those held by idle caches.
    fn reserved_cells(&self) -> usize {
        self.active().map(Sequence::reserved).sum::<usize>()
            + self.caches.iter().map(Vec::len).sum::<usize>()
    }

    /// Drop the largest idle cache other than `keep`; false if there was none.
    fn evict_one(&mut self, keep: Option<usize>) -> bool {
        let largest = (0..self.caches.len())
            .filter(|&i| Some(i) != keep && !self.caches[i].is_empty())
            .max_by_key(|&i| self.caches[i].len());
        match largest {
            Some(i) => {
                self.caches[i].clear();
                let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), None, None);
                true
            }
            None => false,
        }
    }

    fn run(mut self, inbox: std_mpsc::Receiver<Job>) {
        loop {
            // Block only when there is nothing to do; otherwise take what has arrived.
            if self.active().next().is_none() && self.waiting.is_empty() {
                match inbox.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return,
                }
            }
            self.waiting.extend(inbox.try_iter());
            self.admit();
            if self.active().next().is_none() {
                // Everything waiting was cancelled, or cannot start until space frees up.
                if self.waiting.is_empty() {
                    continue;
                }
                // Nothing active yet nothing fits: only an oversized prompt can cause this.
                if let Some(job) = self.waiting.pop_front() {
                    if let Some(events) = job.events {
                        let _ = events.send(Err(Error::ContextOverflow {
                            prompt_tokens: job.tokens.len(),
                            context_size: self.n_ctx,
                        }));
                    }
                }
                continue;
            }
            self.step();
        }
    }

    /// Move waiting jobs into free slots while their prompts fit in the KV cache, each into the
    /// free slot whose cache shares the longest prefix with its prompt.
    fn admit(&mut self) {
        self.waiting
            .retain(|job| job.events.as_ref().is_some_and(|e| !e.is_closed()));
        loop {
            let Some(job) = self.waiting.front() else {
                return;
            };
            let best = (0..self.slots.len())
                .filter(|&i| self.slots[i].is_none())
                .map(|i| match job.options.cache_prompt {
                    true => (i, common_prefix(&self.caches[i], &job.tokens)),
                    // Any free slot: the whole prompt is processed again.
                    false => (i, 0),
                })
                .max_by_key(|&(_, common)| common);
            let Some((slot, common)) = best else {
                return;
            };
            // Keep at least one prompt token to process: its logits give the first sample.
            let reuse = common.min(job.tokens.len() - 1);
            let needed = job.tokens.len() + 1;
            while self.reserved_cells() - self.caches[slot].len() + needed > self.n_ctx {
                if !self.evict_one(Some(slot)) {
                    return;
                }
            }
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            let Some(events) = job.events else {
                continue;
            };
            self.caches[slot].clear();
            let _ = self
                .ctx
                .clear_kv_cache_seq(Some(slot as u32), Some(reuse as u32), None);
            let mut sampler = sampler::build(&job.options.sampling, self.model.n_vocab());
            if job.options.sampling.has_penalties() {
                sampler.accept_many(&job.tokens);
            }
            self.admitted += 1;
            self.slots[slot] = Some(Sequence {
                seq_id: slot as i32,
                events,
                prompt: job.tokens,
                prefilled: reuse,
                sampler,
                greedy: job.options.sampling.is_plain_greedy(),
                text: TextAssembler::new(job.options.stop),
                max_tokens: job.options.max_tokens,
                ignore_eos: job.options.ignore_eos,
                generated: 0,
                pending: None,
                fed: Vec::new(),
                cached: reuse,
                logits_at: None,
                started: self.admitted,
            });
        }
    }

    /// End the newest generations until every generating sequence has a cell for its next token.
    fn make_room(&mut self) {
        loop {
            let needed = self.active().filter(|s| s.pending.is_some()).count();
            if self.reserved_cells() + needed <= self.n_ctx {
                return;
            }
            if self.evict_one(None) {
                continue;
            }
            let newest = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    s.as_ref()
                        .filter(|s| s.pending.is_some())
                        .map(|s| (i, s.started))
                })
                .max_by_key(|&(_, started)| started)
                .map(|(i, _)| i);
            match newest {
                Some(i) => self.release(i, Some(FinishReason::Length)),
                None => return,
            }
        }
    }

    /// Free slot `i`, sending the final event if `reason` is given; its KV state stays as the
    /// slot's prefix cache.
    fn release(&mut self, i: usize, reason: Option<FinishReason>) {
        if let Some(mut seq) = self.slots[i].take() {
            if let Some(reason) = reason {
                seq.finish(reason);
            }
            self.caches[i] = seq.kv_tokens();
        }
    }

    /// One decode step over every active sequence.
    fn step(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|s| s.events.is_closed()) {
                self.release(i, None);
            }
        }
        self.make_room();
        let mut batch = LlamaBatch::new(self.n_batch, self.slots.len() as i32);
        let mut budget = self.n_batch;
        // Generating sequences first (one token each), so new prompts never stall them.
        for seq in self.slots.iter_mut().flatten() {
            seq.logits_at = None;
            if let Some(token) = seq.pending.take() {
                // The pending token goes right after the prompt and the tokens fed before it.
                let pos = seq.reserved() as i32;
                if batch.add(token, pos, &[seq.seq_id], true).is_ok() {
                    seq.logits_at = Some(batch.n_tokens() - 1);
                    seq.fed.push(token);
                    budget -= 1;
                }
            }
        }
        // Then prompt chunks of sequences still prefilling.
        for seq in self.slots.iter_mut().flatten() {
            if budget == 0 || seq.prefilled == seq.prompt.len() || seq.generated > 0 {
                continue;
            }
            let take = (seq.prompt.len() - seq.prefilled).min(budget);
            for k in 0..take {
                let pos = seq.prefilled + k;
                let last = pos + 1 == seq.prompt.len();
                if batch
                    .add(seq.prompt[pos], pos as i32, &[seq.seq_id], last)
                    .is_err()
                {
                    break;
                }
                if last {
                    seq.logits_at = Some(batch.n_tokens() - 1);
                }
            }
            seq.prefilled += take;
            budget -= take;
        }
        if batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut batch) {
            for seq in self.slots.iter_mut().filter_map(Option::take) {
                seq.fail(format!("decode failed: {e}"));
            }
            self.caches.iter_mut().for_each(Vec::clear);
            self.ctx.clear_kv_cache();
            return;
        }
        for i in 0..self.slots.len() {
            let outcome = match self.slots[i].as_mut() {
                Some(seq) if seq.logits_at.is_some() => {
                    sample(self.model, &self.ctx, seq, self.n_ctx)
                }
                _ => continue,
            };
            match outcome {
                Outcome::Continue => {}
                Outcome::Finished(reason) => self.release(i, Some(reason)),
                Outcome::Cancelled => self.release(i, None),
            }
        }
    }
}

/// Length of the common prefix of two token lists.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Sample the next token of `seq` from the logits of the step just decoded.
fn sample(model: &LlamaModel, ctx: &LlamaContext<'_>, seq: &mut Sequence, n_ctx: usize) -> Outcome {
    let Some(at) = seq.logits_at.take() else {
        return Outcome::Continue;
    };
    let token = if seq.greedy {
        LlamaToken(argmax(ctx.get_logits_ith(at)) as i32)
    } else {
        seq.sampler.sample(ctx, at)
    };
    let vocab = model.vocab();
    if !seq.ignore_eos && vocab.is_eog(token) {
        return Outcome::Finished(FinishReason::Stop);
    }
    seq.generated += 1;
    let pushed = seq.text.push(&vocab.token_to_piece(token, false, None));
    if !pushed.text.is_empty() && !seq.send(StreamEvent::Delta(pushed.text)) {
        return Outcome::Cancelled;
    }
    if pushed.stopped {
        return Outcome::Finished(FinishReason::Stop);
    }
    let next_pos = seq.prompt.len() + seq.generated as usize;
    if seq.max_tokens.is_some_and(|max| seq.generated >= max) || next_pos >= n_ctx {
        return Outcome::Finished(FinishReason::Length);
    }
    seq.pending = Some(token);
    Outcome::Continue
}
