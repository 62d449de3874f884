//! `minerva bench`'s measurement and its policy: one model at a time, the same prompt tokens
//! for every model, decoding past end-of-sequence, a cold prompt each repetition (no prefix
//! cache), medians and ranges over repetitions; each model in its own process (cold load, its
//! own peak memory, a crash costs one row), which gets its [`ChildRequest`] as JSON on stdin;
//! the context size every model gets; the cached MLX twin of a GGUF. Rendering is the
//! front-end's.

pub mod machine;
pub mod report;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use futures::StreamExt;
use minerva_runtime::threads::default_threads;
use minerva_runtime::{
    Config, Constraint, EngineMemory, Error, GenerationRequest, Input, LoadedModel, Result, Router,
    Runtime, SamplingParams, StreamEvent,
};
use serde::{Deserialize, Serialize};

/// Text the synthetic prompts are cut from (repeated as needed).
const FILLER: &str = "The river wound through the valley, past orchards and stone bridges, \
    carrying the stories of every village it touched toward the distant sea. ";

/// What each model is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchPlan {
    /// The prompt.
    pub prompt: BenchPrompt,
    /// Tokens generated per repetition (end-of-sequence ignored).
    pub tg: u32,
    /// Measured repetitions.
    pub reps: usize,
    /// Unmeasured repetitions first.
    pub warmup: usize,
    /// Tokens already in the context before the measured prompt (like llama-bench `-d`).
    #[serde(default)]
    pub depth: usize,
    /// Sampling temperature: 0 is greedy; otherwise the runtime's other sampling defaults
    /// (top-k 40, top-p 0.95, min-p 0.05) with a fixed seed.
    #[serde(default)]
    pub temperature: f32,
    /// Report this many alternatives' log-probabilities per token.
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    /// Constrain every token to this JSON schema (structured output).
    #[serde(default)]
    pub json_schema: Option<serde_json::Value>,
}

impl BenchPlan {
    /// How tokens are picked, in words.
    pub fn decoding(&self) -> String {
        let mut text = match self.temperature {
            t if t > 0.0 => format!("sampled at temperature {t}, top-k 40, top-p 0.95, min-p 0.05"),
            _ => "greedy".to_string(),
        };
        if let Some(n) = self.top_logprobs {
            text.push_str(&format!(", log-probabilities with {n} alternatives"));
        }
        if self.json_schema.is_some() {
            text.push_str(", constrained to a JSON schema");
        }
        text
    }
}

/// Where the prompt comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BenchPrompt {
    /// A user message, rendered with the model's chat template (raw when it has none).
    Text(String),
    /// Exactly this many tokens of filler text.
    Tokens(usize),
}

/// Median and range of one figure over the repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (`None` when empty).
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// One model's figures (or why it has none).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BenchResult {
    /// The model as given.
    pub model: String,
    /// Engine name (`llama`, `mlx`).
    pub engine: Option<String>,
    /// Engine and native library version.
    pub engine_version: Option<String>,
    /// Where the engine computes (`cpu (zen4)`, `cuda (NVIDIA H100 80GB HBM3)`, ...).
    pub device: Option<String>,
    /// `gguf` or `safetensors`.
    pub format: Option<String>,
    /// Quantization or float type.
    pub quantization: Option<String>,
    /// Weight bytes over weights, in bits.
    pub bits_per_weight: Option<f64>,
    /// Prompt tokens per repetition.
    pub prompt_tokens: Option<usize>,
    /// Fingerprint of the prompt token ids (equal fingerprints: identical prompts).
    pub prompt_fingerprint: Option<String>,
    /// Tokens generated per repetition.
    pub generated_tokens: Option<u32>,
    /// Cold load time, seconds.
    pub load_s: Option<f64>,
    /// Time to first token, seconds.
    pub ttft_s: Option<Spread>,
    /// Prompt processing: prompt tokens over time to first token.
    pub pp_tps: Option<Spread>,
    /// Generation: tokens after the first over the time after the first.
    pub tg_tps: Option<Spread>,
    /// Peak resident memory of the benchmarking process.
    pub peak_rss_bytes: Option<u64>,
    /// The KV cache's storage type (`kv_cache_type`) and its size for the whole context.
    pub kv_cache: Option<KvCacheFigure>,
    /// The engine's own memory count, where it keeps one.
    pub engine_memory: Option<EngineMemory>,
    /// Why the row failed.
    pub error: Option<String>,
}

/// A KV cache as configured: how it stores K and V, and the bytes that takes for the context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvCacheFigure {
    /// `f16`, `q8_0` or `q4_0`.
    pub kv_type: String,
    /// Bytes for every position of the context (the estimate `memory_budget` uses).
    pub bytes: u64,
    /// The context those bytes are for.
    pub context_size: u32,
}

impl BenchResult {
    /// A failed row.
    pub fn failed(model: &str, error: impl Into<String>) -> Self {
        BenchResult {
            model: model.to_string(),
            error: Some(error.into()),
            ..Default::default()
        }
    }
}

/// What a child process is asked to measure (sent as JSON on its stdin).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildRequest {
    /// The plan.
    pub plan: BenchPlan,
    /// The configuration to measure under (models, threads, context size).
    pub config: Config,
}

impl ChildRequest {
    /// A request for `plan` under `config`, with the threads and context size every model
    /// gets filled in.
    pub fn new(plan: BenchPlan, mut config: Config) -> Self {
        config.threads = Some(config.threads.unwrap_or_else(default_threads));
        config.context_size = Some(plan.context_size(config.context_size));
        ChildRequest { plan, config }
    }
}

impl BenchPlan {
    /// The context every model gets: `configured`, else room for the depth, the prompt and the
    /// generated tokens (synthetic prompts) or a generous 4096 (text prompts), at least 512.
    pub fn context_size(&self, configured: Option<u32>) -> u32 {
        configured.unwrap_or(match &self.prompt {
            BenchPrompt::Tokens(n) => {
                (((self.depth + *n) as u32 + self.tg + 64).div_ceil(256) * 256).max(512)
            }
            BenchPrompt::Text(_) => 4096 + self.depth as u32,
        })
    }
}

/// Measure `model` in a child process: `program` is the front-end's command that runs
/// [`child_main`] for the one model it is given; the request goes to it as JSON on stdin and
/// its row comes back as the last JSON line of its stdout.
pub fn measure_in_child(mut program: Command, model: &str, request: &ChildRequest) -> BenchResult {
    let json = match serde_json::to_string(request) {
        Ok(json) => json,
        Err(e) => return BenchResult::failed(model, e.to_string()),
    };
    let child = program
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            return BenchResult::failed(model, format!("cannot start a benchmark process: {e}"))
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(json.as_bytes());
    }
    let output = match child.wait_with_output() {
        Ok(output) => output,
        Err(e) => return BenchResult::failed(model, format!("the benchmark process failed: {e}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
    {
        Some(result) => result,
        None => BenchResult::failed(
            model,
            format!("the benchmark process failed ({})", output.status),
        ),
    }
}

/// The child's side: read the [`ChildRequest`] from stdin, measure `model` with `router`'s
/// engines under the request's configuration, and return its row for the caller to print.
pub async fn child_main(
    router: Router,
    model: &str,
    progress: &dyn Fn(String),
) -> Result<BenchResult> {
    let mut input = String::new();
    std::io::stdin()
        .read_line(&mut input)
        .map_err(|e| Error::io("stdin", e))?;
    let request: ChildRequest = serde_json::from_str(&input)
        .map_err(|e| Error::InvalidRequest(format!("benchmark request on stdin: {e}")))?;
    // Measured here, in this child: the engine never goes to a runner of its own.
    let runtime = Runtime::new(request.config, router).in_process_only();
    Ok(bench_model(&runtime, model, &request.plan, progress).await)
}

/// The exact MLX twin of `gguf`, converted once into the user's cache
/// (`~/.cache/minerva/mlx-twins/`); `progress` hears the tensors converted.
pub fn mlx_twin(gguf: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<PathBuf> {
    let meta = std::fs::metadata(gguf).map_err(|e| Error::io(gguf, e))?;
    let stem = gguf
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let twin = cache
        .join("minerva/mlx-twins")
        .join(format!("{stem}-{}", meta.len()));
    if twin.join("config.json").is_file() {
        return Ok(twin);
    }
    let _ = std::fs::remove_dir_all(&twin);
    minerva_convert::gguf_to_mlx(gguf, &twin, None, progress)?;
    Ok(twin)
}

/// One repetition's timings.
struct Rep {
    ttft: f64,
    after_first: f64,
    /// Prompt tokens processed in the measured request (not served from the cache).
    processed: u32,
    generated: u32,
}

/// Load `reference` and run `plan` on it; `progress` hears "what is happening" lines.
pub async fn bench_model(
    runtime: &Runtime,
    reference: &str,
    plan: &BenchPlan,
    progress: &dyn Fn(String),
) -> BenchResult {
    match bench_model_inner(runtime, reference, plan, progress).await {
        Ok(result) => result,
        Err(e) => BenchResult::failed(reference, e.to_string()),
    }
}

async fn bench_model_inner(
    runtime: &Runtime,
    reference: &str,
    plan: &BenchPlan,
    progress: &dyn Fn(String),
) -> Result<BenchResult> {
    if plan.reps == 0 || plan.tg == 0 {
        return Err(Error::InvalidRequest(
            "--reps and --tg must be at least 1".into(),
        ));
    }
    progress("loading".into());
    let started = Instant::now();
    let handle = runtime.load(reference).await?;
    let load_s = started.elapsed().as_secs_f64();
    let estimate = runtime.inspect(handle.entry())?.memory_estimate;
    let kv_cache = Some(KvCacheFigure {
        kv_type: handle
            .entry()
            .load
            .kv_cache_type
            .unwrap_or_default()
            .name()
            .to_string(),
        bytes: estimate.kv_cache,
        context_size: estimate.context_size,
    });
    let model = handle.model();
    let ids = prompt_tokens(
        model.as_ref(),
        &plan.prompt,
        handle.info().has_chat_template,
    )?;
    let context = filler_tokens(model.as_ref(), plan.depth)?;
    let mut reps = Vec::new();
    for i in 0..plan.warmup + plan.reps {
        let label = if i < plan.warmup {
            format!("warm-up {}/{}", i + 1, plan.warmup)
        } else {
            format!("rep {}/{}", i + 1 - plan.warmup, plan.reps)
        };
        progress(label);
        let request = |tokens: Vec<u32>, max_tokens: u32, cache_prompt: bool| {
            let mut r = GenerationRequest::new(Input::Tokens(tokens));
            r.sampling = SamplingParams {
                temperature: Some(plan.temperature),
                seed: Some(1),
                ..Default::default()
            };
            r.logprobs = plan.top_logprobs;
            r.constraint = plan.json_schema.clone().map(Constraint::JsonSchema);
            r.max_tokens = Some(max_tokens);
            r.ignore_eos = true;
            r.cache_prompt = cache_prompt;
            r
        };
        let rep = if context.is_empty() {
            run_once(model.as_ref(), request(ids.clone(), plan.tg, false)).await?
        } else {
            // Fill the context (untimed; kept as a prefix cache), then time the prompt on top of
            // it. The fill reuses the previous repetition's context and cuts off what followed.
            run_once(model.as_ref(), request(context.clone(), 1, true)).await?;
            let full = [context.as_slice(), ids.as_slice()].concat();
            run_once(model.as_ref(), request(full, plan.tg, true)).await?
        };
        if i >= plan.warmup {
            reps.push(rep);
        }
    }
    let info = handle.info();
    let pp: Vec<f64> = reps.iter().map(|r| r.processed as f64 / r.ttft).collect();
    let tg: Vec<f64> = reps
        .iter()
        .filter(|r| r.generated > 1 && r.after_first > 0.0)
        .map(|r| (r.generated - 1) as f64 / r.after_first)
        .collect();
    Ok(BenchResult {
        model: reference.to_string(),
        engine: Some(handle.engine().name().to_string()),
        engine_version: Some(handle.engine().version()),
        device: Some(handle.engine().device()),
        format: Some(info.format.to_string()),
        quantization: info.quantization.clone(),
        bits_per_weight: Some(info.bits_per_weight),
        prompt_tokens: Some(ids.len()),
        prompt_fingerprint: Some(fingerprint(&ids)),
        generated_tokens: reps.last().map(|r| r.generated),
        load_s: Some(load_s),
        ttft_s: Spread::of(&reps.iter().map(|r| r.ttft).collect::<Vec<_>>()),
        pp_tps: Spread::of(&pp),
        tg_tps: Spread::of(&tg),
        peak_rss_bytes: machine::peak_rss_bytes(),
        kv_cache,
        engine_memory: model.engine_memory(),
        error: None,
    })
}

/// The prompt's token ids for `model`.
fn prompt_tokens(
    model: &dyn LoadedModel,
    prompt: &BenchPrompt,
    has_template: bool,
) -> Result<Vec<u32>> {
    match prompt {
        BenchPrompt::Text(text) if has_template => {
            model.tokenize(&GenerationRequest::chat(text.clone(), None).input)
        }
        BenchPrompt::Text(text) => model.tokenize(&Input::Text(text.clone())),
        BenchPrompt::Tokens(n) => filler_tokens(model, *n),
    }
}

/// Exactly `n` tokens of filler text (none for 0).
fn filler_tokens(model: &dyn LoadedModel, n: usize) -> Result<Vec<u32>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut text = FILLER.to_string();
    loop {
        let ids = model.tokenize(&Input::Text(text.clone()))?;
        if ids.len() >= n {
            return Ok(ids[..n].to_vec());
        }
        text.push_str(FILLER);
    }
}

async fn run_once(model: &dyn LoadedModel, request: GenerationRequest) -> Result<Rep> {
    let started = Instant::now();
    let mut stream = model.stream(request).await?;
    let mut first = None;
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Delta { .. }
            | StreamEvent::Reasoning { .. }
            | StreamEvent::ToolCall { .. } => {
                first.get_or_insert_with(|| started.elapsed().as_secs_f64());
            }
            StreamEvent::Done { usage, .. } => {
                let total = started.elapsed().as_secs_f64();
                let ttft = first.unwrap_or(total);
                return Ok(Rep {
                    ttft,
                    after_first: total - ttft,
                    processed: usage.prompt_tokens - usage.cached_tokens,
                    generated: usage.completion_tokens,
                });
            }
        }
    }
    Err(Error::engine(
        "bench",
        "generation ended without a final event",
    ))
}

/// A short stable fingerprint of token ids (FNV-1a).
fn fingerprint(ids: &[u32]) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for id in ids {
        for byte in id.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(Spread::of(&[4.0]).unwrap().median, 4.0);
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn fingerprints_tell_prompts_apart() {
        assert_eq!(fingerprint(&[1, 2, 3]), fingerprint(&[1, 2, 3]));
        assert_ne!(fingerprint(&[1, 2, 3]), fingerprint(&[1, 3, 2]));
    }
}
