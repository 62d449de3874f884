//! `minerva bench`: load time, time to first token, prompt and generation speed and peak memory
//! of several models (any mix of engines) on the same prompt. Each model runs in a child
//! `minerva bench --child` process: cold load, its own peak memory, and a crash costs one row.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use minerva_runtime::bench::machine::Machine;
use minerva_runtime::bench::report::Report;
use minerva_runtime::bench::{bench_model, chart, BenchPlan, BenchPrompt, BenchResult};
use minerva_runtime::convert::gguf_to_mlx;
use minerva_runtime::threads::default_threads;
use minerva_runtime::{Error, Result, Runtime};

/// Arguments of `minerva bench`.
#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Models to compare: files, directories, configured ids or cached Hugging Face ids.
    models: Vec<String>,
    /// Also benchmark this GGUF's exact MLX twin (converted once into ~/.cache/minerva/).
    #[arg(long, value_name = "GGUF")]
    pair: Option<PathBuf>,
    /// The prompt, as a user message (rendered with each model's chat template).
    #[arg(long, conflicts_with_all = ["prompt_file", "pp"])]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, conflicts_with = "pp")]
    prompt_file: Option<PathBuf>,
    /// A synthetic prompt of exactly this many tokens (default 128).
    #[arg(long)]
    pp: Option<usize>,
    /// Tokens to generate per repetition, end-of-sequence ignored.
    #[arg(long, default_value_t = 128)]
    tg: u32,
    /// Measured repetitions per model.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Unmeasured repetitions before them.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Measure after this many tokens already in the context (like llama-bench -d).
    #[arg(long, default_value_t = 0)]
    depth: usize,
    /// Sample at this temperature (with the default top-k, top-p and min-p and a fixed seed)
    /// instead of decoding greedily.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Also compute each token's log-probability and this many alternatives.
    #[arg(long)]
    top_logprobs: Option<u32>,
    /// Print one JSON document instead of the table.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print a Markdown table instead of the plain one.
    #[arg(long)]
    markdown: bool,
    /// Write a bar chart (pp and tg tok/s, min-max whiskers) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
    /// Internal: benchmark the one model given in this process and print its row as JSON.
    #[arg(long, hide = true)]
    child: bool,
}

impl BenchArgs {
    fn plan(&self) -> Result<BenchPlan> {
        let prompt = match (&self.prompt, &self.prompt_file, self.pp) {
            (Some(text), _, _) => BenchPrompt::Text(text.clone()),
            (_, Some(file), _) => {
                BenchPrompt::Text(std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?)
            }
            (_, _, Some(0)) => return Err(Error::InvalidRequest("--pp must be at least 1".into())),
            (_, _, pp) => BenchPrompt::Tokens(pp.unwrap_or(128)),
        };
        Ok(BenchPlan {
            prompt,
            tg: self.tg,
            reps: self.reps,
            warmup: self.warmup,
            depth: self.depth,
            temperature: self.temperature,
            top_logprobs: self.top_logprobs,
        })
    }
}

/// Run the command.
pub async fn run(runtime: &Runtime, args: BenchArgs) -> Result<ExitCode> {
    let plan = args.plan()?;
    if args.child {
        let [model] = args.models.as_slice() else {
            return Err(Error::InvalidRequest(
                "--child takes exactly one model".into(),
            ));
        };
        let bar = spinner(model);
        let result = bench_model(runtime, model, &plan, &|msg| bar.set_message(msg)).await;
        bar.finish_and_clear();
        println!("{}", serde_json::to_string(&result).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }

    let mut models = args.models.clone();
    if let Some(gguf) = &args.pair {
        models.push(gguf.display().to_string());
        models.push(mlx_twin(gguf)?.display().to_string());
    }
    if models.is_empty() {
        return Err(Error::InvalidRequest(
            "name at least one model (or --pair MODEL.gguf)".into(),
        ));
    }
    let threads = runtime.config().threads.unwrap_or_else(default_threads);
    let context_size = runtime.config().context_size.unwrap_or(match &plan.prompt {
        BenchPrompt::Tokens(n) => {
            (((args.depth + *n) as u32 + args.tg + 64).div_ceil(256) * 256).max(512)
        }
        BenchPrompt::Text(_) => 4096 + args.depth as u32,
    });
    let machine = Machine::current();
    if let Some(warning) = machine.busy_warning() {
        eprintln!("warning: {warning}");
    }
    let results = models
        .iter()
        .map(|m| run_child(&args, m, threads, context_size))
        .collect();
    let report = Report::new(machine, plan, threads, context_size, results);
    if let Some(path) = &args.chart {
        std::fs::write(path, chart::svg(&report)).map_err(|e| Error::io(path, e))?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::engine("bench", e.to_string()))?;
        println!("{text}");
    } else if args.markdown {
        println!("{}", report.markdown());
    } else {
        for line in report.header() {
            println!("{line}");
        }
        println!("\n{}", report.text_table());
    }
    Ok(ExitCode::SUCCESS)
}

/// Benchmark `model` in a child process with the same settings.
fn run_child(args: &BenchArgs, model: &str, threads: usize, context_size: u32) -> BenchResult {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return BenchResult::failed(model, format!("cannot find minerva itself: {e}")),
    };
    let mut cmd = Command::new(exe);
    cmd.args(["--threads", &threads.to_string()])
        .args(["--ctx-size", &context_size.to_string()])
        .args(["bench", "--child"])
        .args(["--tg", &args.tg.to_string()])
        .args(["--reps", &args.reps.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--depth", &args.depth.to_string()])
        .args(["--temperature", &args.temperature.to_string()]);
    if let Some(n) = args.top_logprobs {
        cmd.args(["--top-logprobs", &n.to_string()]);
    }
    if let Some(p) = &args.prompt {
        cmd.args(["--prompt", p]);
    } else if let Some(f) = &args.prompt_file {
        cmd.arg("--prompt-file").arg(f);
    } else if let Some(pp) = args.pp {
        cmd.args(["--pp", &pp.to_string()]);
    }
    cmd.arg("--").arg(model);
    let output = match cmd.stdin(Stdio::null()).stderr(Stdio::inherit()).output() {
        Ok(output) => output,
        Err(e) => {
            return BenchResult::failed(model, format!("cannot start a benchmark process: {e}"))
        }
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

/// The exact MLX twin of `gguf`, converted once into the user's cache.
fn mlx_twin(gguf: &Path) -> Result<PathBuf> {
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
    let bar = spinner(&format!("converting {stem} to MLX"));
    gguf_to_mlx(gguf, &twin, None, &mut |done, total| {
        bar.set_message(format!("{done}/{total} tensors"))
    })?;
    bar.finish_and_clear();
    Ok(twin)
}

fn spinner(prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(prefix.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
