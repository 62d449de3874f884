//! Continuous batching over one engine's sequences. Up to [`Limits::sequences`] choices share
//! every step (one token each for generating choices, prompt chunks for new ones); requests join
//! between steps and finished ones leave. All sequences share [`Limits::kv_cells`] cells, so a
//! lone request may use the whole context; when concurrent requests together fill it, idle
//! prefix caches go first, then the most recently started generation ends with `length`.
//!
//! Prefix cache: a finished sequence leaves its tokens' KV state in its slot (unless its request
//! turned `cache_prompt` off). A new request goes to the free slot sharing the longest prompt
//! prefix and only the rest of its prompt is processed. A request with `n` choices processes
//! its prompt once; the other choices copy that KV state and pick their first tokens from the
//! same logits, each with its own seed. A slot's cache about to be overwritten or evicted is
//! copied to the prompt store (`prompt_store.rs`) first, and restored from there when a later
//! prompt continues it further than any slot does.
//!
//! Speculative decoding: a choice that drafts (`draft.rs`) is fed its next token and the
//! guesses after it in one step; `verify_draft` keeps the guesses its own picks agree with and
//! drops the KV state of the others.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use super::constraint::TokenConstraint;
use super::draft::{DraftModel, Drafter};
use super::evaluator::{BatchEntry, BatchToken, Evaluator, Limits, Vocabulary, Wanted};
use super::job::{Job, Work};
use super::picker::{Picked, TokenPicker};
use super::prompt_store::{common_prefix, PromptStore, MIN_STORED_TOKENS};
use super::sequence::{Ending, Outcome, Sequence};
use crate::error::{Error, Result};
use crate::response::FinishReason;

/// Where an admitted choice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Processing the prompt (the slot's KV holds a prefix of it).
    Prefill,
    /// Waiting for the choice in slot `leader` to process the shared prompt.
    Follow { leader: usize },
    /// Generating; this token is fed next.
    Feed(u32),
    /// Generating; the previous step picked the next token on the device at this row, and it
    /// has not been read back yet.
    Unread { row: usize },
}

struct Active {
    seq: Sequence,
    phase: Phase,
    /// Admission order: unique, and larger for newer choices.
    id: u64,
    /// Leave the KV state as a prefix cache when done (requests with `cache_prompt` off neither
    /// reuse a cache nor leave one, so their cells are free again at once).
    keep_cache: bool,
}

#[derive(Default)]
struct Slot {
    /// Tokens whose KV state the engine holds for this slot, in position order.
    kv: Vec<u32>,
    active: Option<Active>,
}

impl Slot {
    /// Cells this slot holds or has claimed.
    fn reserved(&self) -> usize {
        match &self.active {
            Some(a) if matches!(a.phase, Phase::Prefill | Phase::Follow { .. }) => {
                a.seq.prompt().len().max(self.kv.len())
            }
            _ => self.kv.len(),
        }
    }

    fn is_generating(&self) -> bool {
        self.active
            .as_ref()
            .is_some_and(|a| matches!(a.phase, Phase::Feed(_) | Phase::Unread { .. }))
    }
}

/// Picks queued by the last step, to be read after the next one is queued.
struct InFlight<P> {
    picks: P,
    /// (slot, choice id, row) of each pick.
    rows: Vec<(usize, u64, usize)>,
}

/// The scheduler of one model, owning its engine on the model's thread.
pub(crate) struct Scheduler<E: Evaluator> {
    engine: E,
    vocab: Arc<Vocabulary>,
    limits: Limits,
    slots: Vec<Slot>,
    waiting: VecDeque<Job>,
    in_flight: Option<InFlight<E::Picks>>,
    admitted: u64,
    draft_model: Option<DraftModel>,
    store: PromptStore,
    /// The store's size, for the model's handle to report.
    store_bytes: Arc<AtomicUsize>,
    /// Embedding requests, worked through one input between two generation steps, so that
    /// running generations keep streaming.
    embeddings: VecDeque<Embedding>,
}

/// An embedding request under way.
struct Embedding {
    inputs: Vec<Vec<u32>>,
    vectors: Vec<Vec<f32>>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>>>,
}

/// Where an admitted request's cached prompt prefix comes from.
enum Prefix {
    /// The slot's own cache.
    Own,
    /// Another slot's cache (a running request with the same start).
    Copy(usize),
    /// The prompt store's entry with this id.
    Stored(u64),
}

impl<E: Evaluator> Scheduler<E> {
    pub fn new(engine: E, vocab: Arc<Vocabulary>, store_bytes: Arc<AtomicUsize>) -> Self {
        let limits = engine.limits();
        Scheduler {
            engine,
            vocab,
            limits,
            slots: (0..limits.slots).map(|_| Slot::default()).collect(),
            waiting: VecDeque::new(),
            in_flight: None,
            admitted: 0,
            draft_model: None,
            store: PromptStore::new(limits.prompt_store_bytes),
            store_bytes,
            embeddings: VecDeque::new(),
        }
    }

    fn busy(&self) -> bool {
        self.in_flight.is_some() || self.slots.iter().any(|s| s.active.is_some())
    }

    /// Serve work from `inbox` until its senders are gone.
    pub fn run(mut self, inbox: Receiver<Work>) {
        loop {
            if !self.busy() && self.waiting.is_empty() && self.embeddings.is_empty() {
                if let Err(e) = self.engine.settle() {
                    tracing::warn!("finishing queued work failed: {e}");
                }
                match inbox.recv() {
                    Ok(work) => self.take_work(work),
                    Err(_) => return,
                }
            }
            loop {
                match inbox.try_recv() {
                    Ok(work) => self.take_work(work),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.shut_down(),
                }
            }
            self.admit();
            self.embed_next();
            if !self.busy() {
                // Nothing runs, yet the first waiting request does not fit in an empty cache.
                if let Some(job) = self.waiting.pop_front() {
                    let _ = job.events.send(Err(Error::ContextOverflow {
                        prompt_tokens: job.prompt.len(),
                        context_size: self.limits.kv_cells,
                    }));
                }
                continue;
            }
            if let Err(e) = self.step() {
                self.fail_all(e);
            }
        }
    }

    /// Queue a generation or an embedding request.
    fn take_work(&mut self, work: Work) {
        match work {
            Work::Generate(job) => self.waiting.push_back(*job),
            Work::Embed { inputs, reply } => self.embeddings.push_back(Embedding {
                vectors: Vec::with_capacity(inputs.len()),
                inputs,
                reply,
            }),
            Work::AttachDraft(model) => self.draft_model = Some(model),
        }
    }

    /// Embed the next input of the oldest embedding request; answer it once all are done. A
    /// request whose client has gone is dropped.
    fn embed_next(&mut self) {
        let Some(job) = self.embeddings.front_mut() else {
            return;
        };
        let finished = match job.reply.is_closed() {
            true => None,
            false => match self.engine.embed(&job.inputs[job.vectors.len()]) {
                Ok(vector) => {
                    job.vectors.push(l2_normalized(vector));
                    (job.vectors.len() == job.inputs.len()).then_some(Ok(()))
                }
                Err(e) => Some(Err(e)),
            },
        };
        if job.reply.is_closed() || finished.is_some() {
            let job = self.embeddings.pop_front().expect("the front job exists");
            if let Some(result) = finished {
                let _ = job.reply.send(result.map(|()| job.vectors));
            }
        }
    }

    /// The model is being unloaded: end what runs with an error.
    fn shut_down(mut self) {
        let gone = || Error::engine("generation", "the model was unloaded");
        for job in self.waiting.drain(..) {
            let _ = job.events.send(Err(gone()));
        }
        for slot in &mut self.slots {
            if let Some(a) = slot.active.take() {
                a.seq.fail(gone());
            }
        }
        let _ = self.engine.settle();
    }

    /// An engine step failed: fail every running choice and forget every cache.
    fn fail_all(&mut self, error: Error) {
        let message = error.to_string();
        self.in_flight = None;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(a) = slot.active.take() {
                a.seq.fail(Error::engine("generation", message.clone()));
            }
            slot.kv.clear();
            let _ = self.engine.truncate(i, 0);
        }
    }

    fn reserved(&self) -> usize {
        self.slots.iter().map(Slot::reserved).sum()
    }

    /// Drop the largest idle cache outside `keep`; false if there was none.
    fn evict_one(&mut self, keep: &[usize]) -> bool {
        let largest = (0..self.slots.len())
            .filter(|i| !keep.contains(i))
            .filter(|&i| self.slots[i].active.is_none() && !self.slots[i].kv.is_empty())
            .max_by_key(|&i| self.slots[i].kv.len());
        match largest {
            Some(i) => {
                self.keep_in_store(i);
                self.slots[i].kv.clear();
                if let Err(e) = self.engine.truncate(i, 0) {
                    tracing::warn!("dropping a cached prefix failed: {e}");
                }
                true
            }
            None => false,
        }
    }

    /// Copy idle slot `slot`'s KV state into the prompt store before its cache is overwritten,
    /// when it is worth keeping.
    fn keep_in_store(&mut self, slot: usize) {
        if !self.store.wants(&self.slots[slot].kv) {
            return;
        }
        match self.engine.save_state(slot) {
            Ok(Some(state)) => {
                let tokens = self.slots[slot].kv.clone();
                tracing::debug!(
                    slot,
                    tokens = tokens.len(),
                    bytes = state.bytes,
                    "prompt store: keeping a conversation"
                );
                self.store.insert(tokens, state);
                self.store_bytes.store(self.store.used(), Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("copying a KV state to the prompt store failed: {e}"),
        }
    }

    /// Move waiting requests into free slots while their prompts fit in the KV cells: the first
    /// choice into the free slot whose cache shares the longest prefix with the prompt, the
    /// others into the free slots with the smallest caches.
    fn admit(&mut self) {
        self.waiting.retain(|job| !job.events.is_closed());
        while let Some(job) = self.waiting.front() {
            let mut free: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].active.is_none())
                .collect();
            if free.len() < job.n as usize {
                return;
            }
            free.sort_by_key(|&i| self.slots[i].kv.len());
            let common = |i: usize| match job.cache_prompt {
                true => common_prefix(&self.slots[i].kv, &job.prompt),
                false => 0,
            };
            // The smallest cache among the longest shared prefixes.
            let Some(mut leader) = free.iter().rev().copied().max_by_key(|&i| common(i)) else {
                return;
            };
            // A running choice may hold a longer prefix (requests sharing a system prompt
            // arrive together): then the smallest free cache gets a copy of it.
            let busy = (0..self.slots.len())
                .filter(|&i| self.slots[i].active.is_some())
                .max_by_key(|&i| common(i))
                .filter(|&i| common(i) > common(leader));
            let mut source = busy.map(|i| (Prefix::Copy(i), common(i)));
            // The prompt store may hold more of it than any slot.
            let shared = source.as_ref().map_or_else(|| common(leader), |(_, n)| *n);
            if let Some((entry, n)) = self
                .store
                .best(&job.prompt)
                .filter(|&(_, n)| job.cache_prompt && n > shared && n - shared >= MIN_STORED_TOKENS)
            {
                source = Some((Prefix::Stored(entry), n));
            }
            if source.is_some() {
                leader = free[0];
            }
            // Keep at least one prompt token to process: its logits give the first pick.
            let longest = source.as_ref().map_or_else(|| common(leader), |(_, n)| *n);
            let reuse = longest.min(job.prompt.len() - 1);
            let mut chosen = vec![leader];
            chosen.extend(
                free.iter()
                    .copied()
                    .filter(|&i| i != leader)
                    .take(job.n as usize - 1),
            );
            let needed = job.n as usize * (job.prompt.len() + 1);
            loop {
                let others: usize = (0..self.slots.len())
                    .filter(|i| !chosen.contains(i))
                    .map(|i| self.slots[i].reserved())
                    .sum();
                if others + needed <= self.limits.kv_cells {
                    break;
                }
                if !self.evict_one(&chosen) {
                    return;
                }
            }
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            let prefix = source.map_or(Prefix::Own, |(p, _)| p);
            self.start(job, &chosen, reuse, prefix);
        }
    }

    /// Admit `job` into the `chosen` slots (its first choice first), reusing `reuse` prompt
    /// tokens from `prefix` in the first slot. What a slot's cache loses is offered to the
    /// prompt store first.
    fn start(&mut self, job: Job, chosen: &[usize], reuse: usize, prefix: Prefix) {
        let prompt = Arc::new(job.prompt);
        // Out of the store before anything else goes in.
        let stored = match prefix {
            Prefix::Stored(id) => Some(self.store.take(id)),
            _ => None,
        };
        self.store_bytes.store(self.store.used(), Ordering::Relaxed);
        let mut prefix = Some(prefix);
        for (choice, &slot) in chosen.iter().enumerate() {
            let keep = if choice == 0 { reuse } else { 0 };
            let own = matches!(prefix, Some(Prefix::Own)) && choice == 0;
            if !own || self.slots[slot].kv.len() > keep + MIN_STORED_TOKENS {
                self.keep_in_store(slot);
            }
            let kept = match prefix.take().filter(|_| choice == 0) {
                Some(Prefix::Copy(from)) => self.engine.copy_prefix(from, slot, keep),
                Some(Prefix::Stored(_)) => match &stored {
                    Some(Some(entry)) => self
                        .engine
                        .truncate(slot, 0)
                        .and_then(|()| self.engine.restore_state(slot, &entry.state))
                        .and_then(|()| self.engine.truncate(slot, keep)),
                    _ => Err(Error::engine(
                        "generation",
                        "the stored prompt was dropped before its restore",
                    )),
                },
                _ => self.engine.truncate(slot, keep),
            };
            match kept {
                Ok(()) => self.slots[slot].kv = prompt[..keep].to_vec(),
                Err(e) => {
                    self.slots[slot].kv.clear();
                    let _ = self.engine.truncate(slot, 0);
                    tracing::warn!("reusing a cached prefix failed: {e}");
                }
            }
            let picker = TokenPicker::new(
                job.picker.clone(),
                job.seed.map(|s| s.wrapping_add(choice as u64)),
            )
            .constrained(job.constraint.as_ref().map(TokenConstraint::fork));
            let mut seq = Sequence::new(
                choice as u32,
                job.events.clone(),
                Arc::clone(&prompt),
                picker,
                job.stop.clone(),
                Ending {
                    max_tokens: job.max_tokens,
                    ignore_eos: job.ignore_eos,
                    kv_cells: self.limits.kv_cells,
                },
            );
            seq.set_cached(self.slots[chosen[0]].kv.len());
            if let Some(drafting) = job.drafting {
                // A leading BOS or other control token is no guess at the answer.
                let vocab = &self.vocab;
                let prediction: Vec<u32> = job
                    .prediction
                    .iter()
                    .copied()
                    .skip_while(|&t| vocab.piece(t, false).is_empty())
                    .collect();
                seq.drafter = Drafter::new(
                    drafting.max_tokens as usize,
                    drafting.prompt_lookup,
                    drafting.draft_model && self.draft_model.is_some(),
                    prediction,
                );
            }
            seq.token_ids = job.token_ids.clone();
            self.admitted += 1;
            self.slots[slot].active = Some(Active {
                seq,
                phase: match choice {
                    0 => Phase::Prefill,
                    _ => Phase::Follow { leader: chosen[0] },
                },
                id: self.admitted,
                keep_cache: job.cache_prompt,
            });
        }
    }

    /// End the newest generations until every generating choice has a cell for its next token.
    fn make_room(&mut self) {
        loop {
            let feeding = self.slots.iter().filter(|s| s.is_generating()).count();
            if self.reserved() + feeding <= self.limits.kv_cells {
                return;
            }
            if self.evict_one(&[]) {
                continue;
            }
            let newest = (0..self.slots.len())
                .filter(|&i| self.slots[i].is_generating())
                .max_by_key(|&i| self.slots[i].active.as_ref().map_or(0, |a| a.id));
            let Some(i) = newest else {
                return;
            };
            if let Some(mut a) = self.release(i) {
                a.seq.finish(FinishReason::Length);
            }
        }
    }

    /// End the choice in `slot`: its KV state stays as the slot's prefix cache unless its
    /// request asked for no caching.
    fn release(&mut self, slot: usize) -> Option<Active> {
        let active = self.slots[slot].active.take()?;
        if !active.keep_cache {
            self.slots[slot].kv.clear();
            if let Err(e) = self.engine.truncate(slot, 0) {
                tracing::warn!("freeing a sequence's cells failed: {e}");
            }
        }
        Some(active)
    }

    /// One evaluation step over every running choice.
    fn step(&mut self) -> Result<()> {
        for i in 0..self.slots.len() {
            if self.slots[i]
                .active
                .as_ref()
                .is_some_and(|a| a.seq.is_cancelled())
            {
                self.release(i);
            }
        }
        self.fail_orphans();
        self.make_room();
        let drafts = self.drafts();
        let (batch, routes, fed_unread) = self.build_batch(drafts);
        let previous = self.in_flight.take();
        let picks = match batch.is_empty() {
            true => None,
            false => Some(
                self.engine
                    .evaluate(&batch, previous.as_ref().map(|p| &p.picks))?,
            ),
        };
        if let Some(previous) = previous {
            let ids = self.engine.read_picks(&previous.picks)?;
            for (slot, id, row) in previous.rows {
                if let Some(&token) = ids.get(row) {
                    self.take_unread(slot, id, token, fed_unread[slot]);
                }
            }
        }
        let mut device_rows = Vec::new();
        let (mut pick_row, mut logits_row) = (0, 0);
        for (entry, &(slot, id)) in batch.iter().zip(&routes) {
            match entry.wanted {
                Wanted::Nothing => {}
                Wanted::Pick => {
                    device_rows.push((slot, id, pick_row));
                    pick_row += 1;
                }
                Wanted::Logits(1) => {
                    self.pick_on_host(slot, id, logits_row)?;
                    logits_row += 1;
                }
                Wanted::Logits(n) => {
                    let fed: Vec<u32> = entry
                        .tokens
                        .iter()
                        .filter_map(|t| match t {
                            BatchToken::Id(id) => Some(*id),
                            BatchToken::Picked(_) => None,
                        })
                        .collect();
                    self.verify_draft(slot, id, logits_row, &fed, entry.start)?;
                    logits_row += n;
                }
            }
        }
        if let Some(picks) = picks.filter(|_| !device_rows.is_empty()) {
            if self.engine.pipelined() {
                for &(slot, id, row) in &device_rows {
                    if let Some(a) = self.active_mut(slot, id) {
                        a.phase = Phase::Unread { row };
                    }
                }
                self.in_flight = Some(InFlight {
                    picks,
                    rows: device_rows,
                });
            } else {
                let ids = self.engine.read_picks(&picks)?;
                for (slot, id, row) in device_rows {
                    if let Some(&token) = ids.get(row) {
                        self.take(slot, id, Picked::plain(token));
                    }
                }
            }
        }
        Ok(())
    }

    /// Followers whose leader is gone can never start: fail them.
    fn fail_orphans(&mut self) {
        for i in 0..self.slots.len() {
            let Some(Phase::Follow { leader }) = self.slots[i].active.as_ref().map(|a| a.phase)
            else {
                continue;
            };
            let leading = self.slots[leader]
                .active
                .as_ref()
                .is_some_and(|a| a.phase == Phase::Prefill);
            if !leading {
                if let Some(a) = self.release(i) {
                    a.seq.fail(Error::engine(
                        "generation",
                        "the request's prompt could not be processed",
                    ));
                }
            }
        }
    }

    /// Each slot's guesses at the tokens after the one it feeds next: from its drafter, else
    /// from the draft model (asked for every such slot at once, so that it batches them).
    fn drafts(&mut self) -> Vec<Vec<u32>> {
        let mut drafts = vec![Vec::new(); self.slots.len()];
        let mut asks = Vec::new();
        let most = self.limits.batch_tokens.saturating_sub(1);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            if !matches!(a.phase, Phase::Feed(_)) || !a.seq.drafter.is_active() {
                continue;
            }
            // The last token the answer may have needs no guesses after it.
            let room = most.min(a.seq.remaining().saturating_sub(1));
            drafts[i] = a.seq.propose_draft(room);
            let ask = a.seq.drafter.model_tokens(room);
            if drafts[i].is_empty() && ask > 0 {
                asks.push((i, a.seq.tokens().to_vec(), ask));
            }
        }
        if let (Some(model), false) = (&self.draft_model, asks.is_empty()) {
            let contexts: Vec<(Vec<u32>, usize)> =
                asks.iter().map(|(_, c, n)| (c.clone(), *n)).collect();
            for ((i, _, _), draft) in asks.iter().zip(model.draft(&contexts)) {
                drafts[*i] = draft;
            }
        }
        drafts
    }

    /// This step's entries (generating choices first, one token each, so new prompts never
    /// stall them; then prompt chunks within the token budget), each entry's (slot, choice id),
    /// and which slots were fed their unread token. `drafts`: each slot's guesses after its
    /// next token, cut to the cells and budget left.
    fn build_batch(
        &mut self,
        mut drafts: Vec<Vec<u32>>,
    ) -> (Vec<BatchEntry>, Vec<(usize, u64)>, Vec<bool>) {
        let mut batch = Vec::new();
        let mut routes = Vec::new();
        let mut fed_unread = vec![false; self.slots.len()];
        let mut budget = self.limits.batch_tokens;
        // Cells left for drafts once every generating choice has one for its next token.
        let generating = self.slots.iter().filter(|s| s.is_generating()).count();
        let mut spare_cells = self
            .limits
            .kv_cells
            .saturating_sub(self.reserved() + generating);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            let token = match a.phase {
                Phase::Feed(t) => BatchToken::Id(t),
                // Only when the unread token cannot be the last one.
                Phase::Unread { row } if a.seq.may_generate_after(a.seq.generated() + 1) => {
                    BatchToken::Picked(row)
                }
                _ => continue,
            };
            if budget == 0 {
                break;
            }
            budget -= 1;
            // Speculative decoding: guesses after the known next token, verified together.
            let mut draft = std::mem::take(&mut drafts[i]);
            draft.truncate(budget.min(spare_cells));
            budget -= draft.len();
            spare_cells -= draft.len();
            let mut tokens = vec![token];
            tokens.extend(draft.iter().map(|&t| BatchToken::Id(t)));
            batch.push(BatchEntry {
                slot: i,
                start: slot.kv.len(),
                tokens,
                wanted: match draft.len() {
                    0 => wanted(&a.seq, false),
                    n => Wanted::Logits(n + 1),
                },
            });
            routes.push((i, a.id));
            match token {
                BatchToken::Id(t) => {
                    slot.kv.push(t);
                    slot.kv.extend_from_slice(&draft);
                }
                BatchToken::Picked(_) => fed_unread[i] = true,
            }
        }
        let leaders: Vec<usize> = self
            .slots
            .iter()
            .filter_map(|s| match s.active.as_ref()?.phase {
                Phase::Follow { leader } => Some(leader),
                _ => None,
            })
            .collect();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = slot.active.as_ref().filter(|a| a.phase == Phase::Prefill) else {
                continue;
            };
            let prompt = a.seq.prompt();
            let done = slot.kv.len();
            let take = (prompt.len() - done).min(budget);
            if take == 0 {
                continue;
            }
            budget -= take;
            let last = done + take == prompt.len();
            batch.push(BatchEntry {
                slot: i,
                start: done,
                tokens: prompt[done..done + take]
                    .iter()
                    .map(|&t| BatchToken::Id(t))
                    .collect(),
                wanted: match last {
                    false => Wanted::Nothing,
                    true => wanted(&a.seq, leaders.contains(&i)),
                },
            });
            routes.push((i, a.id));
            slot.kv.extend_from_slice(&prompt[done..done + take]);
        }
        (batch, routes, fed_unread)
    }

    fn active_mut(&mut self, slot: usize, id: u64) -> Option<&mut Active> {
        self.slots[slot].active.as_mut().filter(|a| a.id == id)
    }

    /// Pick from logits row `row` for the choice in `slot`, and for the choices following it
    /// (which first copy its prompt's KV state).
    fn pick_on_host(&mut self, slot: usize, id: u64, row: usize) -> Result<()> {
        let Some(leader) = self.active_mut(slot, id) else {
            return Ok(());
        };
        let prefilled = leader.phase == Phase::Prefill;
        let mut group = vec![(slot, id)];
        if prefilled {
            for f in 0..self.slots.len() {
                let Some(a) = self.slots[f].active.as_ref() else {
                    continue;
                };
                if a.phase == (Phase::Follow { leader: slot }) {
                    let (prompt, follower) = (Arc::clone(a.seq.prompt()), a.id);
                    self.engine.copy_prefix(slot, f, prompt.len())?;
                    self.slots[f].kv = prompt.to_vec();
                    group.push((f, follower));
                }
            }
        }
        let logits = self.engine.logits(row)?;
        let picks: Vec<(usize, u64, Picked)> = group
            .into_iter()
            .filter_map(|(s, id)| {
                let a = self.slots[s].active.as_mut()?;
                Some((s, id, a.seq.pick(logits)))
            })
            .collect();
        for (s, id, picked) in picks {
            self.take(s, id, picked);
        }
        Ok(())
    }

    /// Check a draft: `fed` (the known next token, then the guesses) was evaluated from position
    /// `start`, its logits from row `first_row` on. Pick from each row in turn as without a
    /// draft; while the pick equals the next guess, that guess is part of the answer and its KV
    /// state is already right. The first pick that differs is fed next; the KV state of the
    /// guesses after it is dropped. A pick from the target distribution that equals the guess
    /// is exactly how speculative sampling accepts a deterministic draft, so sampled output
    /// follows the model's distribution and a seeded request gives the same tokens as without.
    fn verify_draft(
        &mut self,
        slot: usize,
        id: u64,
        first_row: usize,
        fed: &[u32],
        start: usize,
    ) -> Result<()> {
        let drafted = fed.len() - 1;
        let vocab = Arc::clone(&self.vocab);
        if let Some(a) = self.active_mut(slot, id) {
            a.seq.count_drafted(drafted);
        }
        for row in 0..fed.len() {
            let logits = self.engine.logits(first_row + row)?;
            let Some(a) = self.slots[slot].active.as_mut().filter(|a| a.id == id) else {
                return Ok(());
            };
            let picked = a.seq.pick(logits);
            let token = picked.token;
            let guessed = row < drafted && token == fed[row + 1];
            if guessed {
                a.seq.count_accepted();
            }
            let outcome = a.seq.accept(picked, &vocab);
            if guessed && outcome == Outcome::Continue {
                continue;
            }
            let accepted = row + usize::from(guessed);
            a.seq.drafter.observe(drafted, accepted);
            if outcome == Outcome::Continue {
                a.phase = Phase::Feed(token);
            }
            // Positions start..start + 1 + accepted hold fed tokens the answer kept.
            let valid = start + 1 + accepted;
            if self.slots[slot].kv.len() > valid {
                self.slots[slot].kv.truncate(valid);
                self.engine.truncate(slot, valid)?;
            }
            if outcome != Outcome::Continue {
                self.release(slot);
            }
            return Ok(());
        }
        Ok(())
    }

    /// Give a picked token to its choice; it is fed next step unless the choice has ended.
    fn take(&mut self, slot: usize, id: u64, picked: Picked) {
        let token = picked.token;
        let vocab = Arc::clone(&self.vocab);
        let Some(a) = self.active_mut(slot, id) else {
            return;
        };
        if a.seq.accept(picked, &vocab) == Outcome::Continue {
            a.phase = Phase::Feed(token);
        } else {
            self.release(slot);
        }
    }

    /// The previous step's device pick for `slot`, now read back. If this step already fed it,
    /// its KV state is in the cache and this step's pick (if the choice goes on) comes next.
    fn take_unread(&mut self, slot: usize, id: u64, token: u32, fed: bool) {
        if self.active_mut(slot, id).is_none() {
            return;
        }
        if fed {
            self.slots[slot].kv.push(token);
        }
        self.take(slot, id, Picked::plain(token));
    }
}

/// What a choice wants from the last position of its entry: a choice that drafts picks on the
/// host, so that its next token is known when the next step's draft is made.
fn wanted(seq: &Sequence, shared_with_followers: bool) -> Wanted {
    if seq.picker.picks_on_device() && !shared_with_followers && !seq.drafter.is_active() {
        Wanted::Pick
    } else {
        Wanted::Logits(1)
    }
}

/// `v` scaled to unit length (OpenAI's embeddings are); a zero vector stays zero.
fn l2_normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}
