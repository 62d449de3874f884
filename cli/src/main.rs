//! `minerva`: run, inspect and list local LLMs across engines. A thin layer over
//! `minerva-runtime`; the logic lives there.

mod commands;
mod engines;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use minerva_runtime::{Config, RunnerLauncher, Runtime};
use serde::Serialize;
use tracing_subscriber::EnvFilter;

/// Serve and compare local LLMs through several engines (llama.cpp, MLX) behind one interface.
#[derive(Parser)]
#[command(name = "minerva", about, disable_version_flag = true)]
struct Cli {
    /// Print the version and git commit, and each engine with its library version and device
    /// (the CPU level llama.cpp picked, or the GPU).
    #[arg(short = 'V', long, global = true)]
    version: bool,
    /// Config file (default: ./minerva.toml, then ~/.config/minerva/minerva.toml).
    #[arg(long, global = true, env = "MINERVA_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter for stderr, e.g. `info` or `debug`; llama.cpp's own log stays at `warn` unless
    /// named, e.g. `info,llama-cpp-2=info`.
    #[arg(long, global = true, env = "MINERVA_LOG", default_value = "warn")]
    log: String,
    /// CPU threads for every model (overrides config).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Context size in tokens for every model (overrides config).
    #[arg(long = "ctx-size", global = true)]
    context_size: Option<u32>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a model and stream it to stdout.
    Run(commands::run::RunArgs),
    /// Show a model's format, architecture, quantization and engine, without loading weights.
    Inspect(commands::inspect::InspectArgs),
    /// List the configured models with their detected format and engine.
    Models(commands::models::ModelsArgs),
    /// Fetch a model from the Hugging Face hub into its cache: `org/name` or `org/name:QUANT`.
    Pull(commands::pull::PullArgs),
    /// Convert a GGUF model into an MLX directory with the same weights.
    Convert(commands::convert::ConvertArgs),
    /// Serve the configured models over an OpenAI-compatible HTTP API.
    Serve(commands::serve::ServeArgs),
    /// Compare models and engines: load time, TTFT, prompt and generation tok/s, peak memory.
    Bench(commands::bench::BenchArgs),
    /// List the engines: built in and plugins, with version, formats, device and status.
    Engines(commands::engines::EnginesArgs),
    /// Lend this machine's devices to another minerva that splits a model over workers.
    Worker(commands::worker::WorkerArgs),
    /// Run one model's engine for `minerva serve` (started by it, never by hand).
    #[command(hide = true)]
    Runner,
}

/// Flags that override config keys.
#[derive(Serialize)]
struct ConfigFlags {
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_size: Option<u32>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(format!("llama-cpp-2=warn,{}", cli.log))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> minerva_runtime::Result<ExitCode> {
    if let Some(Command::Runner) = cli.command {
        // The serving process sends the configuration; nothing is read here. The engine has its
        // own threads; the socket's few tasks share one, so that a token crosses no thread.
        let runner_runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| minerva_runtime::Error::engine("tokio", e.to_string()))?;
        return runner_runtime.block_on(commands::runner::run());
    }
    let launcher =
        RunnerLauncher::current_exe(vec!["--log".into(), cli.log.clone(), "runner".into()])?;
    let flags = ConfigFlags {
        threads: cli.threads,
        context_size: cli.context_size,
    };
    let config = Config::load(cli.config.as_deref(), &flags, &engines::engine_env_vars())?;
    let (router, plugin_failures) = engines::router(&config)?;
    let runtime = Runtime::new(config, router).with_runners(launcher);
    let command = match cli.command {
        Some(command) if !cli.version => command,
        None if !cli.version => {
            eprintln!("{}", <Cli as clap::CommandFactory>::command().render_help());
            return Ok(ExitCode::from(2));
        }
        _ => return Ok(commands::engines::version(&runtime)),
    };
    tokio_runtime()?.block_on(async {
        match command {
            Command::Run(args) => commands::run::run(&runtime, args).await,
            Command::Inspect(args) => commands::inspect::run(&runtime, args),
            Command::Models(args) => commands::models::run(&runtime, args),
            Command::Serve(args) => commands::serve::run(&runtime, args).await,
            Command::Convert(args) => commands::convert::run(args),
            Command::Pull(args) => commands::pull::run(args).await,
            Command::Bench(args) => commands::bench::run(&runtime, args).await,
            Command::Engines(args) => commands::engines::run(&runtime, &plugin_failures, args),
            Command::Worker(args) => commands::worker::run(&runtime, args, cli.threads),
            Command::Runner => commands::runner::run().await,
        }
    })
}

fn tokio_runtime() -> minerva_runtime::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| minerva_runtime::Error::engine("tokio", e.to_string()))
}
