//! `minerva inspect`: what a model is and which engine would serve it, from headers only.

use std::process::ExitCode;

use clap::Args;
use minerva_runtime::{ModelInfo, Result, Runtime};
use serde::Serialize;

/// Arguments of `minerva inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// A model file or directory, a configured model id, or a cached Hugging Face repo id.
    path: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The report: detection results plus routing.
#[derive(Serialize)]
pub struct Report<'a> {
    #[serde(flatten)]
    pub info: &'a ModelInfo,
    /// The engine the router would pick.
    pub engine: &'a str,
    /// Whether that engine is available (built in or a loaded plugin).
    pub engine_available: bool,
}

/// Run the command.
pub fn run(runtime: &Runtime, args: InspectArgs) -> Result<ExitCode> {
    let entry = runtime.entry(&args.path)?;
    let (info, engine) = runtime.inspect(&entry)?;
    let report = Report {
        info: &info,
        engine: &engine,
        engine_available: runtime.router().engines().any(|e| e.name() == engine),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(r: &Report) -> String {
    let i = r.info;
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<16}{v}\n"));
    line("path", i.path.display().to_string());
    line("format", i.format.to_string());
    line("architecture", or_unknown(i.architecture.clone()));
    line("quantization", or_unknown(i.quantization.clone()));
    line(
        "parameters",
        format!("{} ({})", human_count(i.parameter_count), i.parameter_count),
    );
    line("bits/weight", format!("{:.2}", i.bits_per_weight));
    line("layers", or_unknown(i.layers.map(|v| v.to_string())));
    line(
        "context length",
        or_unknown(i.context_length.map(|v| v.to_string())),
    );
    line(
        "chat template",
        if i.has_chat_template { "yes" } else { "no" }.into(),
    );
    line("tensors", i.tensor_count.to_string());
    let availability = if r.engine_available {
        ""
    } else {
        " (not built into this binary)"
    };
    line("engine", format!("{}{availability}", r.engine));
    out
}

/// 134515008 -> "134.5M".
pub fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}
