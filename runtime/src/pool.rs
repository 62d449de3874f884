//! Loaded models for a long-running process: each configured model is loaded once, on first use
//! (concurrent first requests share one load) or up front, and admits a bounded number of
//! requests at a time so overload turns into a clear error instead of unbounded memory. A model
//! that fails (its runner process died) is loaded again on its next request; one that keeps
//! dying while loading is retried only after a growing back-off, so it never crash-loops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::request::GenerationRequest;
use crate::response::{Completion, TokenStream};
use crate::runtime::{ModelHandle, Runtime};

/// Longest wait between load attempts of a model that keeps crashing while loading.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Longest a load waits for busy models to become idle so that they can be evicted.
const EVICTION_WAIT: Duration = Duration::from_secs(120);

/// One configured model's place in the pool: its model once loaded, its failures, and its
/// admissions.
struct PoolEntry {
    state: Mutex<EntryState>,
    /// Held while loading, so that racing requests share one load.
    loading: tokio::sync::Mutex<()>,
    admission: Arc<Semaphore>,
}

#[derive(Default)]
struct EntryState {
    model: Option<ModelHandle>,
    /// The last failure, until a load succeeds.
    failure: Option<Failure>,
    /// Engine crashes so far (while loading or serving).
    crashes: u64,
    /// When a request last started or ended.
    last_used: Option<Instant>,
    /// The loaded model's estimated memory (with `memory_budget`), bytes.
    estimate: u64,
    /// The last request's `keep_alive` (seconds; over the configured one, as Ollama does).
    requested_keep_alive: Option<i64>,
    /// Loads, unloads (idle, asked for or evicted) and evictions so far.
    loads: u64,
    unloads: u64,
    evictions: u64,
}

struct Failure {
    reason: String,
    at: Instant,
    /// Loads in a row that crashed (0: the model died while serving; reload at once).
    crashed_loads: u32,
}

impl Failure {
    fn retry_at(&self) -> Instant {
        match self.crashed_loads {
            0 => self.at,
            n => self.at + Duration::from_secs(1 << (n - 1).min(6)).min(MAX_BACKOFF),
        }
    }
}

impl EntryState {
    /// A loaded model that has failed is dropped and its failure recorded.
    fn settle(&mut self) {
        let failed = self.model.as_ref().and_then(|m| m.model().failure());
        if let Some(reason) = failed {
            self.model = None;
            self.crashes += 1;
            self.failure = Some(Failure {
                reason,
                at: Instant::now(),
                crashed_loads: 0,
            });
        }
    }

    fn ready(&mut self) -> Option<ModelHandle> {
        self.settle();
        self.model.clone()
    }

    /// Drop the model (requests in flight keep their handle until they end).
    fn unload(&mut self) -> bool {
        let was_loaded = self.model.take().is_some();
        self.estimate = 0;
        self.unloads += u64::from(was_loaded);
        was_loaded
    }
}

/// What the pool knows of one configured model now.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelStatus {
    /// Loaded and healthy.
    pub loaded: bool,
    /// The last failure, while the model is not loaded again.
    pub failure: Option<String>,
    /// The model's runner process, when it has one.
    pub runner_pid: Option<u32>,
    /// Where the loaded model's layers run (empty when not loaded or not said).
    pub placement: Vec<crate::backend::ModelPart>,
    /// Engine crashes so far.
    pub crashes: u64,
    /// Loads, unloads and evictions so far.
    pub loads: u64,
    /// Unloads (idle, asked for, evicted).
    pub unloads: u64,
    /// Evictions to make room for another model.
    pub evictions: u64,
    /// Seconds until an idle model is unloaded (`None`: kept, or busy).
    pub expires_in_s: Option<u64>,
}

/// Lazily loaded, admission-controlled models of one [`Runtime`].
pub struct ModelPool {
    runtime: Runtime,
    queue_limit: usize,
    entries: Mutex<HashMap<String, Arc<PoolEntry>>>,
    pulls: Arc<crate::pull::Pulls>,
}

impl ModelPool {
    /// A pool over the configured models of `runtime`, admitting at most `queue_limit` requests
    /// per model (running plus waiting).
    pub fn new(runtime: Runtime, queue_limit: usize) -> Self {
        ModelPool {
            runtime,
            queue_limit: queue_limit.max(1),
            entries: Mutex::new(HashMap::new()),
            pulls: Arc::default(),
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn entry(&self, id: &str) -> Result<Arc<PoolEntry>> {
        // A configured model, or one in the Hugging Face cache by its repo id (pulled, maybe
        // over HTTP); never an arbitrary path a client names.
        let cached = || {
            crate::resolve::parse_repo_reference(id).is_some()
                && crate::resolve::resolve_model_path(id, None, None).is_ok()
        };
        if self.runtime.config().model(id).is_none() && !cached() {
            return Err(Error::ModelNotFound(format!(
                "no model `{id}` is configured or in the Hugging Face cache"
            )));
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::clone(entries.entry(id.to_string()).or_insert_with(
            || {
                Arc::new(PoolEntry {
                    state: Mutex::default(),
                    loading: tokio::sync::Mutex::new(()),
                    admission: Arc::new(Semaphore::new(self.queue_limit)),
                })
            },
        )))
    }

    /// The loaded model `id`, loading it first if needed (one load however many callers race;
    /// a failed model is loaded again, after a back-off if it crashed while loading).
    pub async fn get(&self, id: &str) -> Result<ModelHandle> {
        let entry = self.entry(id)?;
        if let Some(model) = entry.lock().ready() {
            return Ok(model);
        }
        let _loading = entry.loading.lock().await;
        let crashed_loads = {
            let mut state = entry.lock();
            if let Some(model) = state.ready() {
                return Ok(model);
            }
            match &state.failure {
                Some(failure) => {
                    let wait = failure.retry_at().saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        return Err(Error::ModelUnavailable {
                            model: id.to_string(),
                            reason: failure.reason.clone(),
                            retry_after_s: wait.as_secs_f64().ceil() as u64,
                        });
                    }
                    failure.crashed_loads
                }
                None => 0,
            }
        };
        let need = self.memory_need(id).await?;
        self.make_room(id, need).await?;
        let loaded = self.runtime.load(id).await;
        let mut state = entry.lock();
        match loaded {
            Ok(model) => {
                state.failure = None;
                state.model = Some(model.clone());
                state.estimate = need;
                state.loads += 1;
                state.last_used = Some(Instant::now());
                Ok(model)
            }
            Err(e) => {
                if let Error::EngineCrashed { reason, .. } = &e {
                    state.crashes += 1;
                    state.failure = Some(Failure {
                        reason: format!("its runner process died: {reason}"),
                        at: Instant::now(),
                        crashed_loads: crashed_loads + 1,
                    });
                }
                Err(e)
            }
        }
    }

    /// Follow the download of `reference` (`org/name[:QUANT]`) into the Hugging Face cache,
    /// starting it unless it is running already; the model is then served by that reference.
    pub fn pull(&self, reference: &str) -> tokio::sync::watch::Receiver<crate::pull::PullState> {
        self.pulls.follow(reference)
    }

    /// Unload model `reference` and remove its files from the Hugging Face cache (see
    /// [`remove_cached`](crate::resolve::remove_cached)); returns the bytes freed. A configured
    /// model whose files are not the cache's (a local path) is refused.
    pub fn delete(&self, reference: &str) -> Result<u64> {
        let configured = self.runtime.config().model(reference);
        let path = configured.map_or(reference, |m| m.path.as_str());
        let repo = crate::resolve::parse_repo_reference(path).is_some();
        if configured.is_none() && !repo {
            return Err(Error::ModelNotFound(format!(
                "no model `{reference}` is configured or in the Hugging Face cache"
            )));
        }
        if !repo {
            return Err(Error::InvalidRequest(format!(
                "`{reference}` is the local path {path}, not a model in the Hugging Face cache: \
                 only cached models are deleted"
            )));
        }
        match self.unload(reference) {
            Ok(_) | Err(Error::ModelNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let freed = crate::resolve::remove_cached(path)?;
        tracing::info!(model = reference, bytes = freed, "deleted from the cache");
        Ok(freed)
    }

    /// Drop model `id` from the pool: requests in flight finish on it, then its engine is
    /// released (a runner process exits). Whether it was loaded.
    pub fn unload(&self, id: &str) -> Result<bool> {
        let entry = self.entry(id)?;
        let mut state = entry.lock();
        state.settle();
        let was_loaded = state.unload();
        if was_loaded {
            tracing::info!(model = id, "model unloaded");
        }
        Ok(was_loaded)
    }

    /// With `memory_budget`: what loading `id` is estimated to take (pulling it first when it
    /// is to be pulled, so that its files can be read); else 0.
    async fn memory_need(&self, id: &str) -> Result<u64> {
        if self.runtime.config().memory_budget.is_none() {
            return Ok(0);
        }
        self.runtime
            .pull_if_missing(id, Arc::new(crate::pull::LoggedProgress::default()))
            .await?;
        let entry = self.runtime.entry(id)?;
        Ok(self.runtime.inspect(&entry)?.memory_estimate.total())
    }

    /// A model's idle time before it is unloaded (`None`: never) and whether it is pinned:
    /// the last request's `keep_alive`, else the model's, else the global one.
    fn lifetime(&self, id: &str, requested: Option<i64>) -> (Option<Duration>, bool) {
        let config = self.runtime.config();
        let model = config.model(id);
        let keep = requested
            .or(model.and_then(|m| m.keep_alive))
            .or(config.keep_alive)
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs);
        let pinned = model.is_some_and(|m| m.pinned);
        (if pinned { None } else { keep }, pinned)
    }

    fn in_flight(&self, entry: &PoolEntry) -> usize {
        self.queue_limit - entry.admission.available_permits()
    }

    /// Unload the models idle for longer than their `keep_alive`; returns their ids. Called
    /// periodically by the server ([`ModelPool::reap_idle_models`]).
    pub fn unload_idle(&self) -> Vec<String> {
        let entries: Vec<(String, Arc<PoolEntry>)> = {
            let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            map.iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect()
        };
        let mut unloaded = Vec::new();
        for (id, entry) in entries {
            let busy = self.in_flight(&entry) > 0;
            let mut state = entry.lock();
            let (Some(keep), _) = self.lifetime(&id, state.requested_keep_alive) else {
                continue;
            };
            let idle_for = state.last_used.map_or(Duration::MAX, |t| t.elapsed());
            if !busy && state.model.is_some() && idle_for >= keep && state.unload() {
                tracing::info!(model = %id, idle_s = idle_for.as_secs(), "idle model unloaded");
                unloaded.push(id);
            }
        }
        unloaded
    }

    /// Unload idle models every quarter second until the pool is dropped.
    pub fn reap_idle_models(pool: std::sync::Weak<ModelPool>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                match pool.upgrade() {
                    Some(pool) => {
                        pool.unload_idle();
                    }
                    None => return,
                }
            }
        });
    }

    /// Before loading `id` (estimated at `need` bytes): while `max_loaded_models` or
    /// `memory_budget` would be exceeded, evict the least recently used model that is idle and
    /// not pinned; while every candidate is busy, wait (up to [`EVICTION_WAIT`]) for one to
    /// finish.
    async fn make_room(&self, id: &str, need: u64) -> Result<()> {
        let config = self.runtime.config();
        let max = config.max_loaded_models;
        let budget = config.memory_budget.map(u64::from);
        if max.is_none() && budget.is_none() {
            return Ok(());
        }
        if let Some(budget) = budget.filter(|b| need > *b) {
            return Err(Error::ModelUnavailable {
                model: id.to_string(),
                reason: format!(
                    "it needs about {} MiB (weights, KV cache for its context, engine) but memory_budget is {} MiB; lower its context_size or raise the budget",
                    need >> 20,
                    budget >> 20
                ),
                retry_after_s: 60,
            });
        }
        let started = Instant::now();
        loop {
            let others: Vec<(String, Arc<PoolEntry>)> = {
                let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                map.iter()
                    .filter(|(k, _)| k.as_str() != id)
                    .map(|(k, v)| (k.clone(), Arc::clone(v)))
                    .collect()
            };
            let loaded: Vec<&(String, Arc<PoolEntry>)> = others
                .iter()
                .filter(|(_, e)| {
                    let mut state = e.lock();
                    state.settle();
                    state.model.is_some()
                })
                .collect();
            let used: u64 = loaded.iter().map(|(_, e)| e.lock().estimate).sum();
            let too_many = max.is_some_and(|m| loaded.len() >= m);
            let too_big = budget.is_some_and(|b| used + need > b);
            if !too_many && !too_big {
                return Ok(());
            }
            let unpinned: Vec<&&(String, Arc<PoolEntry>)> = loaded
                .iter()
                .filter(|(k, _)| !self.lifetime(k, None).1)
                .collect();
            let victim = unpinned
                .iter()
                .filter(|(_, e)| self.in_flight(e) == 0)
                .min_by_key(|(_, e)| e.lock().last_used);
            if let Some((victim, entry)) = victim {
                let mut state = entry.lock();
                let freed = state.estimate;
                if state.unload() {
                    state.evictions += 1;
                    tracing::info!(model = %victim, for_model = id, freed_mib = freed >> 20, "least recently used model evicted");
                }
                continue;
            }
            let why = if too_many {
                format!("{} models are loaded (max_loaded_models)", loaded.len())
            } else {
                format!(
                    "the loaded models take {} MiB of the {} MiB memory_budget",
                    used >> 20,
                    budget.unwrap_or(0) >> 20
                )
            };
            if unpinned.is_empty() || started.elapsed() >= EVICTION_WAIT {
                return Err(Error::ModelUnavailable {
                    model: id.to_string(),
                    reason: format!("{why} and each is busy or pinned"),
                    retry_after_s: 1,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ids of the models loaded (and healthy) now.
    pub fn loaded(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .statuses()
            .into_iter()
            .filter(|(_, s)| s.loaded)
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids
    }

    /// What the pool knows of each model it has seen a request for.
    pub fn statuses(&self) -> HashMap<String, ModelStatus> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|(id, entry)| {
                let busy = self.in_flight(entry) > 0;
                let mut state = entry.lock();
                let (keep, _) = self.lifetime(id, state.requested_keep_alive);
                state.settle();
                let expires_in_s = match (keep, &state.model, state.last_used, busy) {
                    (Some(keep), Some(_), Some(used), false) => {
                        Some(keep.saturating_sub(used.elapsed()).as_secs())
                    }
                    _ => None,
                };
                let status = ModelStatus {
                    loaded: state.model.is_some(),
                    failure: state.failure.as_ref().map(|f| f.reason.clone()),
                    runner_pid: state.model.as_ref().and_then(|m| m.model().process_id()),
                    placement: state
                        .model
                        .as_ref()
                        .map(|m| m.model().descriptor().placement.clone())
                        .unwrap_or_default(),
                    crashes: state.crashes,
                    loads: state.loads,
                    unloads: state.unloads,
                    evictions: state.evictions,
                    expires_in_s,
                };
                (id.clone(), status)
            })
            .collect()
    }

    /// Requests admitted but not finished, per model.
    pub fn queue_depths(&self) -> Vec<(String, usize)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut depths: Vec<(String, usize)> = entries
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    self.queue_limit - s.admission.available_permits(),
                )
            })
            .collect();
        depths.sort();
        depths
    }

    /// Take one of model `id`'s admissions (or fail with `Overloaded`), then load it if needed.
    async fn admit(&self, id: &str, keep_alive: Option<i64>) -> Result<(Admission, ModelHandle)> {
        let entry = self.entry(id)?;
        let permit = Arc::clone(&entry.admission)
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded {
                model: id.to_string(),
                limit: self.queue_limit,
            })?;
        {
            let mut state = entry.lock();
            state.last_used = Some(Instant::now());
            if keep_alive.is_some() {
                state.requested_keep_alive = keep_alive;
            }
        }
        let admission = Admission {
            _permit: permit,
            entry,
        };
        Ok((admission, self.get(id).await?))
    }

    /// Admit, load if needed, and stream `request` on model `id`; the admission is held until the
    /// stream ends or is dropped.
    pub async fn stream(
        &self,
        id: &str,
        request: GenerationRequest,
    ) -> Result<(ModelHandle, TokenStream)> {
        let (permit, model) = self.admit(id, request.keep_alive).await?;
        let stream = model.stream(request).await?;
        let stream = stream.map(move |event| {
            let _held = &permit;
            event
        });
        Ok((model, Box::pin(stream)))
    }

    /// Admit, load if needed, and embed `inputs` with model `id`.
    pub async fn embed(&self, id: &str, inputs: Vec<String>) -> Result<crate::backend::Embeddings> {
        let (_permit, model) = self.admit(id, None).await?;
        model.embed(inputs).await
    }

    /// Admit, load if needed, and tokenize `input` with model `id` (chat messages through its
    /// template, as a generation's prompt would be).
    pub async fn tokenize(&self, id: &str, input: crate::request::Input) -> Result<Vec<u32>> {
        let (_permit, model) = self.admit(id, None).await?;
        let loaded = Arc::clone(model.model());
        crate::threads::run_blocking("tokenize", move || loaded.tokenize(&input)).await?
    }

    /// The text model `id`'s `tokens` stand for (see [`LoadedModel::detokenize`]), loading the
    /// model if needed.
    pub async fn detokenize(&self, id: &str, tokens: Vec<u32>) -> Result<String> {
        let (_permit, model) = self.admit(id, None).await?;
        let loaded = Arc::clone(model.model());
        crate::threads::run_blocking("detokenize", move || loaded.detokenize(&tokens)).await?
    }

    /// The prompt text model `id`'s template renders for the chat `request` (prepared as for
    /// generation: `tool_choice: none` drops the tools), loading the model if needed.
    pub async fn render(&self, id: &str, request: GenerationRequest) -> Result<String> {
        let (_permit, model) = self.admit(id, None).await?;
        let request = model.prepare(request)?;
        let loaded = Arc::clone(model.model());
        crate::threads::run_blocking("render", move || loaded.render(&request)).await?
    }

    /// Admit, load if needed, and generate a whole completion on model `id`.
    pub async fn generate(
        &self,
        id: &str,
        request: GenerationRequest,
    ) -> Result<(ModelHandle, Completion)> {
        let (_permit, model) = self.admit(id, request.keep_alive).await?;
        let completion = model.generate(request).await?;
        Ok((model, completion))
    }
}

/// One admitted request: holds its place in the queue and marks the model used when it ends.
struct Admission {
    _permit: OwnedSemaphorePermit,
    entry: Arc<PoolEntry>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.entry.lock().last_used = Some(Instant::now());
    }
}

impl PoolEntry {
    fn lock(&self) -> std::sync::MutexGuard<'_, EntryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{InferenceBackend, LoadSpec};
    use crate::capabilities::Capabilities;
    use crate::config::{Config, ModelConfig};
    use crate::format::ModelFormat;
    use crate::model::EngineParts;
    use crate::router::Router;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    /// An engine that counts loads; its models are the generation core's toy evaluator
    /// (unit-tests the pool only; the real engines are tested in tests/).
    struct Counting(Arc<AtomicUsize>);

    /// The toy's tokenizer: a byte per token, none of them its end-of-generation token.
    struct Bytes;

    impl crate::generation::Tokenizer for Bytes {
        fn encode(&self, text: &str, _: bool) -> Result<Vec<u32>> {
            Ok(text.bytes().map(|b| u32::from(b) % 15).collect())
        }
        fn bos_text(&self) -> Option<&str> {
            None
        }
    }

    /// A model on the toy evaluator, with a template that writes the messages' contents.
    fn toy_parts() -> EngineParts {
        let (generator, _) = minerva_core::testing::toy(false, 64, 4);
        let template =
            crate::ChatTemplate::new("{% for m in messages %}{{ m.content }}{% endfor %}", "", "")
                .unwrap();
        EngineParts::new(generator, Box::new(Bytes), Some(template))
    }

    #[async_trait]
    impl InferenceBackend for Counting {
        fn name(&self) -> &str {
            "llama"
        }
        fn version(&self) -> String {
            "test".into()
        }
        fn formats(&self) -> &[ModelFormat] {
            &[ModelFormat::Gguf]
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::all()
        }
        async fn load_model(&self, _: &LoadSpec) -> Result<EngineParts> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(toy_parts())
        }
    }

    fn pool(loads: &Arc<AtomicUsize>, queue: usize) -> ModelPool {
        pool_of(Arc::new(Counting(Arc::clone(loads))), queue)
    }

    fn pool_of(engine: Arc<dyn InferenceBackend>, queue: usize) -> ModelPool {
        pool_with(engine, queue, |_| {})
    }

    /// A pool over models `m` and `n` (the same tiny GGUF), with `edit` applied to the config.
    fn pool_with(
        engine: Arc<dyn InferenceBackend>,
        queue: usize,
        edit: impl FnOnce(&mut Config),
    ) -> ModelPool {
        let dir = std::env::temp_dir().join(format!("minerva-pool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // One file per pool: tests run in parallel, and a file being rewritten reads as empty.
        static POOLS: AtomicUsize = AtomicUsize::new(0);
        let gguf = dir.join(format!(
            "tiny-{}.gguf",
            POOLS.fetch_add(1, Ordering::SeqCst)
        ));
        minerva_core::testing::write_tiny_gguf(&gguf);
        let path = gguf.display().to_string();
        let mut config = Config {
            models: vec![ModelConfig::new("m", &path), ModelConfig::new("n", &path)],
            ..Default::default()
        };
        edit(&mut config);
        ModelPool::new(Runtime::new(config, Router::new(vec![engine])), queue)
    }

    #[tokio::test]
    async fn idle_models_unload_after_keep_alive_but_never_with_requests_in_flight() {
        let loads = Arc::new(AtomicUsize::new(0));
        let engine = Arc::new(Counting(Arc::clone(&loads)));
        let pool = pool_with(engine, 4, |c| {
            c.keep_alive = Some(0);
            c.models[1].pinned = true;
        });
        let chat = || GenerationRequest::chat("hi", None);
        let (_, held) = pool.stream("m", chat()).await.unwrap();
        pool.generate("n", chat()).await.unwrap();
        assert!(pool.unload_idle().is_empty(), "m is busy and n is pinned");
        drop(held);
        assert_eq!(pool.unload_idle(), vec!["m".to_string()]);
        let m = &pool.statuses()["m"];
        assert!(!m.loaded && m.loads == 1 && m.unloads == 1, "{m:?}");
        assert!(pool.statuses()["n"].loaded);
        // The next request loads it again.
        pool.generate("m", chat()).await.unwrap();
        assert_eq!(pool.statuses()["m"].loads, 2);
    }

    #[tokio::test]
    async fn max_loaded_models_evicts_the_least_recently_used_idle_model() {
        let loads = Arc::new(AtomicUsize::new(0));
        let engine = Arc::new(Counting(Arc::clone(&loads)));
        let pool = pool_with(engine, 4, |c| c.max_loaded_models = Some(1));
        let chat = || GenerationRequest::chat("hi", None);
        pool.generate("m", chat()).await.unwrap();
        pool.generate("n", chat()).await.unwrap();
        assert_eq!(pool.loaded(), vec!["n".to_string()]);
        assert_eq!(pool.statuses()["m"].evictions, 1);
        // A busy model is never evicted: the other one waits for its request to end.
        let pool = Arc::new(pool);
        let (_, held) = pool.stream("n", chat()).await.unwrap();
        let waiting = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.generate("m", chat()).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "n was evicted while busy");
        assert_eq!(pool.loaded(), vec!["n".to_string()]);
        drop(held);
        waiting.await.unwrap().unwrap();
        assert_eq!(pool.loaded(), vec!["m".to_string()]);
    }

    #[tokio::test]
    async fn memory_budget_evicts_by_estimate_and_refuses_what_never_fits() {
        let loads = Arc::new(AtomicUsize::new(0));
        let engine = Arc::new(Counting(Arc::clone(&loads)));
        // Each model is estimated at the engine's 64 MiB plus a few bytes: one fits in 100 MiB.
        let pool = pool_with(engine, 4, |c| {
            c.memory_budget = Some(crate::memory::ByteSize(100 << 20));
        });
        let chat = || GenerationRequest::chat("hi", None);
        pool.generate("m", chat()).await.unwrap();
        pool.generate("n", chat()).await.unwrap();
        assert_eq!(pool.loaded(), vec!["n".to_string()]);
        assert_eq!(pool.statuses()["m"].evictions, 1);

        let engine = Arc::new(Counting(Arc::new(AtomicUsize::new(0))));
        let pool = pool_with(engine, 4, |c| {
            c.memory_budget = Some(crate::memory::ByteSize(10 << 20));
        });
        let refused = pool.generate("m", chat()).await.err().unwrap().to_string();
        assert!(refused.contains("memory_budget is 10 MiB"), "{refused}");
    }

    #[tokio::test]
    async fn a_request_keep_alive_overrides_the_configured_one() {
        let loads = Arc::new(AtomicUsize::new(0));
        let engine = Arc::new(Counting(Arc::clone(&loads)));
        let pool = pool_with(engine, 4, |_| {});
        let mut request = GenerationRequest::chat("hi", None);
        pool.generate("m", request.clone()).await.unwrap();
        assert!(pool.unload_idle().is_empty(), "kept by default");
        request.keep_alive = Some(0);
        pool.generate("m", request).await.unwrap();
        assert_eq!(pool.unload_idle(), vec!["m".to_string()]);
    }

    #[tokio::test]
    async fn pinned_models_are_never_evicted() {
        let loads = Arc::new(AtomicUsize::new(0));
        let engine = Arc::new(Counting(Arc::clone(&loads)));
        let pool = pool_with(engine, 4, |c| {
            c.max_loaded_models = Some(1);
            c.models[0].pinned = true;
        });
        let chat = || GenerationRequest::chat("hi", None);
        pool.generate("m", chat()).await.unwrap();
        let refused = pool.generate("n", chat()).await.err().unwrap();
        assert!(
            matches!(refused, Error::ModelUnavailable { .. }),
            "{refused}"
        );
        assert_eq!(pool.loaded(), vec!["m".to_string()]);
    }

    /// An engine whose loads can crash and whose models can die (as runner-backed ones do).
    #[derive(Default)]
    struct Flaky {
        loads: AtomicUsize,
        crash_loads: AtomicBool,
        dead: Arc<AtomicBool>,
    }

    #[async_trait]
    impl InferenceBackend for Flaky {
        fn name(&self) -> &str {
            "llama"
        }
        fn version(&self) -> String {
            "test".into()
        }
        fn formats(&self) -> &[ModelFormat] {
            &[ModelFormat::Gguf]
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::all()
        }
        async fn load_model(&self, spec: &LoadSpec) -> Result<EngineParts> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            if self.crash_loads.load(Ordering::SeqCst) {
                return Err(Error::EngineCrashed {
                    model: spec.id.clone(),
                    reason: "killed by signal 6 (SIGABRT) while loading".into(),
                });
            }
            let dead = Arc::clone(&self.dead);
            Ok(toy_parts().failure(move || {
                dead.load(Ordering::SeqCst)
                    .then(|| "its runner process died: killed by signal 9 (SIGKILL)".into())
            }))
        }
    }

    #[tokio::test]
    async fn dead_models_reload_and_crashing_loads_back_off() {
        let engine = Arc::new(Flaky::default());
        let pool = pool_of(Arc::clone(&engine) as Arc<dyn InferenceBackend>, 4);
        let loads = || engine.loads.load(Ordering::SeqCst);
        pool.get("m").await.unwrap();
        assert!(pool.unload("m").unwrap());
        assert!(!pool.unload("m").unwrap());
        pool.get("m").await.unwrap();
        assert_eq!(loads(), 2);

        // Died while serving: failed until the next request, which loads it again at once.
        engine.dead.store(true, Ordering::SeqCst);
        let status = &pool.statuses()["m"];
        assert!(!status.loaded && status.crashes == 1, "{status:?}");
        assert!(status.failure.as_deref().unwrap().contains("SIGKILL"));
        engine.dead.store(false, Ordering::SeqCst);
        pool.get("m").await.unwrap();
        assert_eq!(loads(), 3);
        assert_eq!(pool.statuses()["m"].failure, None);

        // Dies, then crashes while loading: the next requests are refused without a load until
        // the back-off (1 s, then 2 s) has passed.
        engine.dead.store(true, Ordering::SeqCst);
        engine.crash_loads.store(true, Ordering::SeqCst);
        let crashed = pool.get("m").await.err().unwrap();
        assert!(matches!(crashed, Error::EngineCrashed { .. }), "{crashed}");
        let refused = pool.get("m").await.err().unwrap();
        assert!(
            matches!(
                refused,
                Error::ModelUnavailable {
                    retry_after_s: 1,
                    ..
                }
            ),
            "{refused}"
        );
        assert!(refused.to_string().contains("SIGABRT"), "{refused}");
        assert_eq!(loads(), 4);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(pool.get("m").await.is_err());
        assert_eq!(loads(), 5);
        let refused = pool.get("m").await.err().unwrap();
        assert!(
            matches!(
                refused,
                Error::ModelUnavailable {
                    retry_after_s: 2,
                    ..
                }
            ),
            "{refused}"
        );
        assert_eq!(pool.statuses()["m"].crashes, 4);
        assert_eq!(loads(), 5);
    }

    #[tokio::test]
    async fn racing_first_requests_share_one_load() {
        let loads = Arc::new(AtomicUsize::new(0));
        let pool = pool(&loads, 4);
        let gets = (0..8).map(|_| pool.get("m"));
        for r in futures::future::join_all(gets).await {
            r.unwrap();
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(pool.loaded(), vec!["m".to_string()]);
        assert!(matches!(
            pool.get("other").await,
            Err(Error::ModelNotFound(_))
        ));
    }

    #[tokio::test]
    async fn admission_is_bounded_and_released_with_the_stream() {
        let loads = Arc::new(AtomicUsize::new(0));
        let pool = pool(&loads, 1);
        let chat = || GenerationRequest::chat("hi", None);
        let (_, held) = pool.stream("m", chat()).await.unwrap();
        assert_eq!(pool.queue_depths(), vec![("m".to_string(), 1)]);
        let busy = pool.stream("m", chat()).await.err().unwrap();
        assert!(matches!(busy, Error::Overloaded { limit: 1, .. }), "{busy}");
        drop(held);
        assert_eq!(pool.queue_depths(), vec![("m".to_string(), 0)]);
        assert!(pool.generate("m", chat()).await.is_ok());
    }
}
