//! `minerva convert`: a GGUF file -> an MLX model directory with the same weights.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use minerva_runtime::convert::gguf_to_mlx;
use minerva_runtime::Result;

/// Arguments of `minerva convert`.
#[derive(Args)]
pub struct ConvertArgs {
    /// The GGUF file to convert (Q4_1, Q8_0, F16 and F32 tensors map exactly).
    model: PathBuf,
    /// The directory to write (must be empty or absent).
    out: PathBuf,
    /// Target format.
    #[arg(long, value_enum, default_value = "mlx")]
    to: Target,
}

/// Formats `convert` writes.
#[derive(Clone, Copy, ValueEnum)]
enum Target {
    /// MLX directory: config.json, model.safetensors, tokenizer.json, tokenizer_config.json.
    Mlx,
}

/// Run the command.
pub fn run(args: ConvertArgs) -> Result<ExitCode> {
    let Target::Mlx = args.to;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} tensors")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("converting");
    let summary = gguf_to_mlx(&args.model, &args.out, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    println!(
        "wrote {} ({} tensors, {:.1} MB of weights)",
        summary.out.display(),
        summary.tensors,
        summary.weight_bytes as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}
