//! `minerva inspect`: what a model is and which engine would serve it, from headers only.

use std::process::ExitCode;

use clap::Args;
use minerva_runtime::{Inspection, Result, Runtime};

/// Arguments of `minerva inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// A model file or directory, a configured model id, or a cached Hugging Face repo id.
    path: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Run the command.
pub fn run(runtime: &Runtime, args: InspectArgs) -> Result<ExitCode> {
    let inspection = runtime.inspect(&runtime.entry(&args.path)?)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&inspection).unwrap_or_default()
        );
    } else {
        print!("{}", render(&inspection));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(r: &Inspection) -> String {
    let i = &r.info;
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
    if let Some(device) = &r.device {
        line("device", device.clone());
    }
    for (key, value) in &r.facts {
        line(key, value.to_string());
    }
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
