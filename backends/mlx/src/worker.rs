//! The thread that owns one loaded MLX model: it loads the weights, then runs generations one at
//! a time. Decoding is pipelined like mlx_lm's loop: with on-device greedy picking, the step for
//! token n+1 is queued (`async_eval`) before token n is read back and detokenized, so the host
//! work overlaps the next forward pass. The KV cache of the last generation stays in place and a
//! new prompt sharing its prefix only processes the rest.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use minerva_runtime::backend::done;
use minerva_runtime::format::safetensors_dir::SafetensorsDir;
use minerva_runtime::threads::default_threads;
use minerva_runtime::{
    Error, FinishReason, GenerationRequest, JobOptions, LoadSpec, Result, Sampler, StreamEvent,
    TextAssembler, TokenStream, Usage,
};
use mlx_rs::transforms::{async_eval, eval};
use mlx_rs::{ops, Array, Device, DeviceType};
use tokio::sync::{mpsc, oneshot};

use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::engine::ENGINE_NAME;
use crate::error::MlxResultExt;
use crate::models::Transformer;
use crate::tokenizer::ModelTokenizer;
use crate::weights::{Layout, Weights};

/// Prompt tokens processed per forward pass.
const PREFILL_CHUNK: usize = 512;
/// Largest context used when neither the config nor the model says.
const DEFAULT_CONTEXT_CAP: u32 = 16_384;

/// Environment variable: largest model (MB of f32 weights) kept dense on the CPU.
const DENSE_LIMIT_VAR: &str = "MINERVA_MLX_CPU_DENSE_MAX_MB";
/// Its default.
const DEFAULT_DENSE_LIMIT_MB: u64 = 2048;

/// Dense f32 weights when MLX computes on the CPU and they fit the limit; as stored otherwise
/// (GPU, Metal, or larger models).
fn choose_layout(parameters: u64) -> Layout {
    let on_cpu = Device::try_default()
        .and_then(|d| d.get_type())
        .map_or(true, |t| matches!(t, DeviceType::Cpu));
    let limit_mb = std::env::var(DENSE_LIMIT_VAR)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_DENSE_LIMIT_MB);
    if on_cpu && parameters.saturating_mul(4) <= limit_mb << 20 {
        Layout::DenseF32
    } else {
        Layout::AsStored
    }
}

/// A request's event channel; unbounded so a reader that stops reading cannot stall the thread.
type Events = mpsc::UnboundedSender<Result<StreamEvent>>;

/// One generation to run.
pub struct Job {
    tokens: Vec<u32>,
    options: JobOptions,
    events: Option<Events>,
}

impl Job {
    /// A job for the prompt `tokens` with `request`'s options.
    pub fn new(tokens: Vec<u32>, request: &GenerationRequest) -> Self {
        Job {
            tokens,
            options: request.job_options(),
            events: None,
        }
    }
}

/// What the model's thread reports once the model is loaded.
pub struct Loaded {
    /// The model's tokenizer, shared with the request path.
    pub tokenizer: Arc<ModelTokenizer>,
    /// Context window in tokens.
    pub context_size: u32,
    /// Rows of the embedding matrix.
    pub vocab_size: u32,
}

/// Handle to a model's thread. Dropping it ends the thread after its current job and waits
/// for it, so no MLX work outlives the model (or runs into process exit).
pub struct Worker {
    jobs: Option<std_mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Worker {
    /// Start the thread, which loads `spec`, reports on `ready`, then runs submitted jobs.
    pub fn spawn(spec: LoadSpec, ready: oneshot::Sender<Result<Loaded>>) -> Result<Worker> {
        let (jobs, inbox) = std_mpsc::channel::<Job>();
        let name = format!("mlx-{}", spec.id);
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || {
                let mut model = match ModelThread::load(&spec) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let loaded = Loaded {
                    tokenizer: Arc::clone(&model.tokenizer),
                    context_size: model.context_size,
                    vocab_size: model.vocab_size,
                };
                if ready.send(Ok(loaded)).is_err() {
                    return;
                }
                for job in inbox {
                    model.run(job);
                }
            })
            .map_err(|e| Error::engine(ENGINE_NAME, format!("starting the model thread: {e}")))?;
        Ok(Worker {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queue `job`; its events arrive on the returned stream.
    pub fn submit(&self, mut job: Job) -> Result<TokenStream> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        job.events = Some(tx);
        self.jobs
            .as_ref()
            .ok_or_else(|| Error::engine(ENGINE_NAME, "the model is shutting down"))?
            .send(job)
            .map_err(|_| Error::engine(ENGINE_NAME, "the model's thread has stopped"))?;
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
    }
}

/// State owned by the model's thread.
struct ModelThread {
    model: Transformer,
    caches: Vec<KvCache>,
    /// Tokens whose keys and values the caches hold, in order.
    cached: Vec<u32>,
    tokenizer: Arc<ModelTokenizer>,
    context_size: u32,
    vocab_size: u32,
}

/// How a generated token leaves the generation.
enum Outcome {
    Continue,
    Finish(FinishReason),
    Cancelled,
}

impl ModelThread {
    fn load(spec: &LoadSpec) -> Result<ModelThread> {
        let dir = spec.path.as_path();
        // Validates config.json, every shard and every tensor header before MLX reads them.
        let files = SafetensorsDir::read(dir)?;
        let config_path = dir.join("config.json");
        let config = ModelConfig::read(&config_path)?;
        let tokenizer = Arc::new(ModelTokenizer::load(dir, &config)?);
        let threads = spec.threads.unwrap_or_else(default_threads);
        crate::blas::set_threads(threads);
        let layout = choose_layout(files.parameter_count);
        let mut weights = Weights::load(dir, &files.shards, layout)?;
        let model = Transformer::new(&config, &config_path, &mut weights)?;
        let trained = config
            .max_position_embeddings
            .unwrap_or(DEFAULT_CONTEXT_CAP);
        let context_size = spec
            .context_size
            .unwrap_or_else(|| trained.min(DEFAULT_CONTEXT_CAP))
            .max(1);
        tracing::info!(
            model = %spec.id,
            context_size,
            layers = model.layers(),
            ?layout,
            blas = crate::blas::name(),
            threads,
            "MLX model ready"
        );
        Ok(ModelThread {
            caches: (0..model.layers()).map(|_| KvCache::default()).collect(),
            model,
            cached: Vec::new(),
            tokenizer,
            context_size,
            vocab_size: config.vocab_size as u32,
        })
    }

    fn run(&mut self, mut job: Job) {
        let Some(events) = job.events.take() else {
            return;
        };
        if let Err(e) = self.generate(&job, &events) {
            // The caches may hold a partial step: start the next request from scratch.
            self.reset_cache();
            let _ = events.send(Err(e));
        }
    }

    fn reset_cache(&mut self) {
        self.cached.clear();
        for c in &mut self.caches {
            c.truncate(0);
        }
    }

    /// Queue a forward pass over `input` (`[1, n]` token ids) after the cached positions: the
    /// last position's logits, or with `on_device` the greedy pick (already being evaluated).
    fn step(&mut self, input: &Array, on_device: bool) -> Result<Array> {
        let logits = self.model.forward(input, &mut self.caches)?;
        if !on_device {
            return Ok(logits);
        }
        let next = ops::indexing::argmax_axis(&logits, -1, None).mlx()?;
        async_eval([&next]).mlx()?;
        Ok(next)
    }

    /// [`Self::step`] over known tokens, recording them as cached.
    fn step_tokens(&mut self, tokens: &[u32], on_device: bool) -> Result<Array> {
        let input = Array::from_slice(tokens, &[1, tokens.len() as i32]);
        let out = self.step(&input, on_device)?;
        self.cached.extend_from_slice(tokens);
        Ok(out)
    }

    fn generate(&mut self, job: &Job, events: &Events) -> Result<()> {
        let prompt = &job.tokens;
        // Reuse the cached prefix, keeping at least one prompt token to compute logits from.
        let reused = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        let reused = if job.options.cache_prompt { reused } else { 0 };
        self.cached.truncate(reused);
        for c in &mut self.caches {
            c.truncate(reused as i32);
        }
        let (body, last) = prompt[reused..].split_at(prompt.len() - reused - 1);
        for chunk in body.chunks(PREFILL_CHUNK) {
            // Only the caches matter here; the chunk's logits are dropped unevaluated.
            let _ = self.step_tokens(chunk, false)?;
            eval(self.caches.iter().flat_map(KvCache::arrays)).mlx()?;
            if events.is_closed() {
                return Ok(());
            }
        }

        let room = self.context_size as usize - prompt.len();
        let limit = job
            .options
            .max_tokens
            .map_or(room, |m| (m as usize).min(room))
            .max(1);
        let mut sampler = Sampler::new(job.options.sampling);
        let on_device = sampler.is_plain_greedy();
        let mut assembler = TextAssembler::new(job.options.stop.clone());
        let mut history = prompt.clone();
        let mut usage = Usage {
            prompt_tokens: prompt.len() as u32,
            completion_tokens: 0,
            cached_tokens: reused as u32,
        };

        let mut pending = Some(self.step_tokens(last, on_device)?);
        while let Some(current) = pending.take() {
            let more_allowed = history.len() - prompt.len() + 1 < limit;
            let token = if on_device {
                if more_allowed {
                    // Queue the next step, fed by this token, before reading it back.
                    pending = Some(self.step(&current.reshape(&[1, 1]).mlx()?, true)?);
                }
                let token = current.item_exact::<u32>();
                if more_allowed {
                    self.cached.push(token);
                }
                token
            } else {
                eval([&current]).mlx()?;
                let mut logits = current
                    .as_dtype(mlx_rs::Dtype::Float32)
                    .mlx()?
                    .as_slice::<f32>()
                    .to_vec();
                sampler.sample(&mut logits, &history)
            };
            history.push(token);
            usage.completion_tokens += 1;
            let outcome = self.emit(
                job,
                events,
                &mut assembler,
                token,
                usage.completion_tokens == 1,
            );
            let reason = match outcome {
                Outcome::Continue if more_allowed => None,
                Outcome::Continue => Some(FinishReason::Length),
                Outcome::Finish(reason) => Some(reason),
                Outcome::Cancelled => Some(FinishReason::Stop),
            };
            if let Some(reason) = reason {
                if !matches!(outcome, Outcome::Cancelled) {
                    finish(events, &mut assembler, reason, usage);
                }
                // Let a queued speculative step complete: nothing stays in flight between
                // requests (or at shutdown).
                if let Some(step) = pending {
                    eval([&step]).mlx()?;
                }
                return Ok(());
            }
            if !on_device {
                pending = Some(self.step_tokens(&[token], false)?);
            }
        }
        Err(Error::engine(
            ENGINE_NAME,
            "generation ended without a final event",
        ))
    }

    /// Pass `token` to the client; says whether the generation goes on.
    fn emit(
        &self,
        job: &Job,
        events: &Events,
        assembler: &mut TextAssembler,
        token: u32,
        first: bool,
    ) -> Outcome {
        if events.is_closed() {
            return Outcome::Cancelled;
        }
        if !job.options.ignore_eos && self.tokenizer.is_eos(token) {
            return Outcome::Finish(FinishReason::Stop);
        }
        let pushed = assembler.push(self.tokenizer.piece(token, first));
        if !pushed.text.is_empty() && events.send(Ok(StreamEvent::Delta(pushed.text))).is_err() {
            return Outcome::Cancelled;
        }
        if pushed.stopped {
            Outcome::Finish(FinishReason::Stop)
        } else {
            Outcome::Continue
        }
    }
}

/// Send the held-back text and the final event.
fn finish(events: &Events, assembler: &mut TextAssembler, reason: FinishReason, usage: Usage) {
    let rest = assembler.finish();
    if !rest.is_empty() {
        let _ = events.send(Ok(StreamEvent::Delta(rest)));
    }
    let _ = events.send(Ok(done(reason, usage)));
}
