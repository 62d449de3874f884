//! `minerva bench`: load time, time to first token, prompt and generation speed and peak memory
//! of several models (any mix of engines) on the same prompt. The measurement and its policy
//! are `minerva-bench`'s; here are the arguments, the progress display and the rendering
//! ([`render`], [`chart`]). Each model runs in a child `minerva bench --child MODEL` process.

mod chart;
mod render;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use minerva_bench::machine::Machine;
use minerva_bench::report::Report;
use minerva_bench::{child_main, measure_in_child, mlx_twin, BenchPlan, BenchPrompt, ChildRequest};
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
    /// Constrain generation to the JSON schema in this file (use one whose answers outlast
    /// --tg: end-of-sequence is ignored, and a finished grammar allows nothing else).
    #[arg(long, value_name = "FILE.json")]
    json_schema: Option<PathBuf>,
    /// Print one JSON document instead of the table.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print a Markdown table instead of the plain one.
    #[arg(long)]
    markdown: bool,
    /// Write a bar chart (pp and tg tok/s, min-max whiskers) to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
    /// Internal: benchmark the one model given in this process (its request arrives as JSON on
    /// stdin) and print its row as JSON.
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
            json_schema: match &self.json_schema {
                Some(file) => {
                    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
                    Some(serde_json::from_str(&text).map_err(|e| {
                        Error::InvalidRequest(format!("{}: not JSON: {e}", file.display()))
                    })?)
                }
                None => None,
            },
        })
    }
}

/// Run the command.
pub async fn run(runtime: &Runtime, args: BenchArgs) -> Result<ExitCode> {
    if args.child {
        let [model] = args.models.as_slice() else {
            return Err(Error::InvalidRequest(
                "--child takes exactly one model".into(),
            ));
        };
        let bar = spinner(model);
        let router = runtime.router().clone();
        let result = child_main(router, model, &|msg| bar.set_message(msg)).await?;
        bar.finish_and_clear();
        println!("{}", serde_json::to_string(&result).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }

    let plan = args.plan()?;
    let mut models = args.models.clone();
    if let Some(gguf) = &args.pair {
        models.push(gguf.display().to_string());
        let stem = gguf.file_stem().map(|s| s.to_string_lossy().into_owned());
        let bar = spinner(&format!("converting {} to MLX", stem.unwrap_or_default()));
        let twin = mlx_twin(gguf, &mut |done, total| {
            bar.set_message(format!("{done}/{total} tensors"))
        })?;
        bar.finish_and_clear();
        models.push(twin.display().to_string());
    }
    if models.is_empty() {
        return Err(Error::InvalidRequest(
            "name at least one model (or --pair MODEL.gguf)".into(),
        ));
    }
    let request = ChildRequest::new(plan, runtime.config().clone());
    let machine = Machine::current();
    if let Some(warning) = machine.busy_warning() {
        eprintln!("warning: {warning}");
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("minerva itself", e))?;
    let results = models
        .iter()
        .map(|m| {
            let mut child = Command::new(&exe);
            child.args(["bench", "--child", "--"]);
            measure_in_child(child, m, &request)
        })
        .collect();
    let threads = request.config.threads.unwrap_or_default();
    let context_size = request.config.context_size.unwrap_or_default();
    let report = Report::new(machine, request.plan, threads, context_size, results);
    if let Some(path) = &args.chart {
        std::fs::write(path, chart::svg(&report)).map_err(|e| Error::io(path, e))?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::engine("bench", e.to_string()))?;
        println!("{text}");
    } else if args.markdown {
        println!("{}", render::markdown(&report));
    } else {
        for line in render::header(&report) {
            println!("{line}");
        }
        println!("\n{}", render::text_table(&report));
    }
    Ok(ExitCode::SUCCESS)
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
