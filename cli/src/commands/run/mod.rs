//! `minerva run`: stream one answer to stdout, or chat on the terminal (`chat.rs`).

mod chat;

use std::future::Future;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use std::sync::Arc;

use super::pull::Bars;
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use minerva_runtime::{
    EngineChoice, Error, FinishReason, GenerationRequest, Input, ModelEntry, ModelHandle, Result,
    Runtime, SamplingParams, StreamEvent, Usage,
};

/// Arguments of `minerva run`.
#[derive(Args)]
pub struct RunArgs {
    /// A model file or directory, a configured model id, or a cached Hugging Face repo id.
    model: String,
    /// The user message (or, with --raw, the whole prompt). Without it, a pipe on stdin gives
    /// the prompt, and a terminal opens a chat.
    #[arg(long, short)]
    prompt: Option<String>,
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

/// Run the command: one answer to `--prompt` (or to what a pipe on stdin holds), else a chat on
/// the terminal.
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
    if let Some(engine) = &args.engine {
        entry.config.engine = EngineChoice::named(engine);
    }
    let started = Instant::now();
    let model = load_showing_progress(runtime, entry).await?;
    let loaded_in = started.elapsed();

    let prompt = match &args.prompt {
        Some(prompt) => prompt.clone(),
        None if std::io::stdin().is_terminal() => {
            if args.raw {
                return Err(Error::InvalidRequest(
                    "--raw needs --prompt (or the prompt on stdin)".into(),
                ));
            }
            return chat::run(&model, &args).await;
        }
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Error::engine("stdin", e.to_string()))?;
            text.trim_end().to_string()
        }
    };
    let mut request = if args.raw {
        GenerationRequest::new(Input::Text(prompt))
    } else {
        GenerationRequest::chat(prompt, args.system.clone())
    };
    args.apply(&mut request);
    let answer = stream_answer(&model, request, None).await?;
    let seconds = answer.generation_time.as_secs_f64();
    tracing::info!(
        engine = model.engine().name(),
        load_s = loaded_in.as_secs_f64(),
        ttft_s = answer.first_token.map(|t| t.as_secs_f64()),
        prompt_tokens = answer.usage.prompt_tokens,
        completion_tokens = answer.usage.completion_tokens,
        tokens_per_s = answer.usage.completion_tokens as f64 / seconds,
        finish_reason = ?answer.finish_reason,
        "done"
    );
    Ok(ExitCode::SUCCESS)
}

impl RunArgs {
    /// Set the request options these flags give.
    fn apply(&self, request: &mut GenerationRequest) {
        request.max_tokens = self.max_tokens;
        request.stop = self.stop.clone();
        request.ignore_eos = self.ignore_eos;
        request.sampling = SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: None,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
        };
    }
}

/// Load the model; a spinner on stderr when that takes more than half a second.
async fn load_showing_progress(runtime: &Runtime, entry: ModelEntry) -> Result<ModelHandle> {
    let name = entry.config.id.clone();
    let spinner = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
            .with_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            )
            .with_message(format!("loading {name}"));
        if !std::io::stderr().is_terminal() {
            eprintln!("loading {name}");
        }
        bar.enable_steady_tick(Duration::from_millis(100));
        // Ended by abort when the load is done; the bar is cleared as it drops.
        std::future::pending::<()>().await;
        drop(bar);
    });
    let loaded = runtime.load_entry(entry).await;
    spinner.abort();
    let _ = spinner.await;
    loaded
}

/// What one streamed answer gave.
struct Answer {
    text: String,
    usage: Usage,
    finish_reason: Option<FinishReason>,
    first_token: Option<Duration>,
    generation_time: Duration,
    interrupted: bool,
}

/// Stream `request`'s answer to stdout; when `interrupt` fires first, stop (dropping the stream
/// cancels the generation and frees its slot).
async fn stream_answer(
    model: &ModelHandle,
    request: GenerationRequest,
    interrupt: Option<&mut (dyn Future<Output = ()> + Unpin + Send)>,
) -> Result<Answer> {
    let started = Instant::now();
    let mut stream = model.stream(request).await?;
    let mut stdout = std::io::stdout().lock();
    let write_err = |e: std::io::Error| Error::engine("stdout", e.to_string());
    let mut answer = Answer {
        text: String::new(),
        usage: Usage::default(),
        finish_reason: None,
        first_token: None,
        generation_time: Duration::ZERO,
        interrupted: false,
    };
    let mut never = std::future::pending::<()>();
    let interrupt: &mut (dyn Future<Output = ()> + Unpin + Send) = match interrupt {
        Some(i) => i,
        None => &mut never,
    };
    // Reasoning is shown as Ollama's `run` shows it, framed apart from the answer.
    let mut thinking = false;
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            () = &mut *interrupt => {
                answer.interrupted = true;
                break;
            }
        };
        let Some(event) = event else { break };
        match event? {
            StreamEvent::Reasoning { text, .. } => {
                answer.first_token.get_or_insert_with(|| started.elapsed());
                if !thinking {
                    thinking = true;
                    writeln!(stdout, "Thinking...").map_err(write_err)?;
                }
                stdout.write_all(text.as_bytes()).map_err(write_err)?;
                stdout.flush().map_err(write_err)?;
            }
            StreamEvent::Delta { text, .. } => {
                answer.first_token.get_or_insert_with(|| started.elapsed());
                if std::mem::take(&mut thinking) {
                    writeln!(stdout, "\n...done thinking.\n").map_err(write_err)?;
                }
                stdout.write_all(text.as_bytes()).map_err(write_err)?;
                stdout.flush().map_err(write_err)?;
                answer.text.push_str(&text);
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
                answer.usage = usage;
                answer.finish_reason = Some(finish_reason);
            }
        }
    }
    writeln!(stdout).map_err(write_err)?;
    answer.generation_time = started.elapsed();
    Ok(answer)
}
