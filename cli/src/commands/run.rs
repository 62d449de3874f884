//! `minerva run`: stream a completion to stdout.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use std::sync::Arc;

use super::pull::Bars;
use clap::Args;
use futures::StreamExt;
use minerva_runtime::{
    EngineChoice, Error, GenerationRequest, Input, Result, Runtime, SamplingParams, StreamEvent,
};

/// Arguments of `minerva run`.
#[derive(Args)]
pub struct RunArgs {
    /// A model file or directory, a configured model id, or a cached Hugging Face repo id.
    model: String,
    /// The user message (or, with --raw, the whole prompt).
    #[arg(long, short)]
    prompt: String,
    /// A system message placed before the prompt.
    #[arg(long)]
    system: Option<String>,
    /// Send the prompt as raw text instead of rendering it with the chat template.
    #[arg(long, conflicts_with = "system")]
    raw: bool,
    /// Most tokens to generate (default: until end of sequence or a full context).
    #[arg(long = "max-tokens", short = 'n')]
    max_tokens: Option<u32>,
    /// Sampling temperature; 0 is greedy (default 0.8).
    #[arg(long, short)]
    temperature: Option<f32>,
    /// Nucleus sampling mass (default 0.95).
    #[arg(long = "top-p")]
    top_p: Option<f32>,
    /// Top-k sampling; 0 disables (default 40).
    #[arg(long = "top-k")]
    top_k: Option<u32>,
    /// Min-p sampling (default 0.05).
    #[arg(long = "min-p")]
    min_p: Option<f32>,
    /// Repetition penalty; 1 disables.
    #[arg(long = "repeat-penalty")]
    repeat_penalty: Option<f32>,
    /// Presence penalty (-2..2).
    #[arg(long = "presence-penalty")]
    presence_penalty: Option<f32>,
    /// Frequency penalty (-2..2).
    #[arg(long = "frequency-penalty")]
    frequency_penalty: Option<f32>,
    /// Seed for reproducible sampling.
    #[arg(long, short)]
    seed: Option<u64>,
    /// Stop before this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Fetch the model from the Hugging Face hub first when it is a repo missing from the cache
    /// (per model: `pull = true`).
    #[arg(long)]
    pull: bool,
    /// Engine to use instead of the one picked by format: `auto`, `llama`, `mlx` or a plugin
    /// engine's name (`minerva engines` lists them); `--backend` is accepted too.
    #[arg(long, visible_alias = "backend")]
    engine: Option<String>,
}

/// Run the command.
pub async fn run(runtime: &Runtime, args: RunArgs) -> Result<ExitCode> {
    let bars = Arc::new(Bars::new());
    let pulled = runtime
        .clone()
        .with_pull_missing(args.pull)
        .pull_if_missing(&args.model, bars.clone())
        .await;
    bars.clear();
    pulled?;
    let mut entry = runtime.entry(&args.model)?;
    if let Some(engine) = args.engine {
        entry.config.engine = EngineChoice::named(&engine);
    }
    let started = Instant::now();
    let model = runtime.load_entry(entry).await?;
    let loaded_in = started.elapsed();

    let mut request = if args.raw {
        GenerationRequest::new(Input::Text(args.prompt))
    } else {
        GenerationRequest::chat(args.prompt, args.system)
    };
    request.max_tokens = args.max_tokens;
    request.stop = args.stop;
    request.ignore_eos = args.ignore_eos;
    request.sampling = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: None,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        seed: args.seed,
    };

    let generation_started = Instant::now();
    let mut stream = model.stream(request).await?;
    let mut stdout = std::io::stdout().lock();
    let write_err = |e: std::io::Error| Error::engine("stdout", e.to_string());
    let mut first_token_at = None;
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Delta { text, .. } => {
                first_token_at.get_or_insert_with(|| generation_started.elapsed());
                stdout.write_all(text.as_bytes()).map_err(write_err)?;
                stdout.flush().map_err(write_err)?;
            }
            StreamEvent::ToolCall { call, .. } => {
                writeln!(stdout, "\n[tool call {}: {}]", call.name, call.arguments)
                    .map_err(write_err)?;
            }
            StreamEvent::Done {
                finish_reason,
                usage,
                ..
            } => {
                writeln!(stdout).map_err(write_err)?;
                let total = generation_started.elapsed().as_secs_f64();
                tracing::info!(
                    engine = model.engine().name(),
                    load_s = loaded_in.as_secs_f64(),
                    ttft_s = first_token_at.map(|t| t.as_secs_f64()),
                    prompt_tokens = usage.prompt_tokens,
                    completion_tokens = usage.completion_tokens,
                    tokens_per_s = usage.completion_tokens as f64 / total,
                    finish_reason = ?finish_reason,
                    "done"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
