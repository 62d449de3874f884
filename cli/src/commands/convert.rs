//! `minerva convert`: a GGUF file -> an MLX model directory with the same weights (or
//! dequantized floats), or a float model directory -> an MLX-quantized one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use minerva_convert::{gguf_to_mlx, quantize_dir, FloatType};
use minerva_runtime::{Error, Result};

/// Arguments of `minerva convert`.
#[derive(Args)]
pub struct ConvertArgs {
    /// A GGUF file (Q4_1, Q8_0, F16 and F32 tensors map exactly), or a float Hugging Face / MLX
    /// model directory to quantize with --q-bits.
    model: PathBuf,
    /// The directory to write (must be empty or absent).
    out: PathBuf,
    /// Target format.
    #[arg(long, value_enum, default_value = "mlx")]
    to: Target,
    /// GGUF only: write dequantized weights of this float type instead of exact MLX quantization.
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
    /// Directory only: quantize to this many bits per weight (4 or 8).
    #[arg(long = "q-bits", value_parser = clap::builder::PossibleValuesParser::new(["4", "8"]))]
    q_bits: Option<String>,
    /// Directory only: weights per quantization group (32, 64 or 128).
    #[arg(long = "q-group-size", default_value = "64", value_parser = clap::builder::PossibleValuesParser::new(["32", "64", "128"]))]
    q_group_size: String,
}

/// Formats `convert` writes.
#[derive(Clone, Copy, ValueEnum)]
enum Target {
    /// MLX directory: config.json, model.safetensors, tokenizer.json, tokenizer_config.json.
    Mlx,
}

/// `--dtype` values.
#[derive(Clone, Copy, ValueEnum)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

/// Run the command.
pub fn run(args: ConvertArgs) -> Result<ExitCode> {
    let Target::Mlx = args.to;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("converting");
    let mut progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let summary = if args.model.is_dir() {
        let bits = args.q_bits.as_deref().ok_or_else(|| {
            Error::InvalidRequest("converting a directory needs --q-bits 4|8".into())
        })?;
        if args.dtype.is_some() {
            return Err(Error::InvalidRequest(
                "--dtype applies to GGUF input only".into(),
            ));
        }
        let bits = bits.parse().unwrap_or(4);
        let group = args.q_group_size.parse().unwrap_or(64);
        quantize_dir(&args.model, &args.out, bits, group, &mut progress)?
    } else {
        if args.q_bits.is_some() {
            return Err(Error::InvalidRequest(
                "GGUF weights convert exactly; --q-bits applies to float model directories".into(),
            ));
        }
        let dtype = args.dtype.map(|d| match d {
            Dtype::F32 => FloatType::F32,
            Dtype::F16 => FloatType::F16,
            Dtype::Bf16 => FloatType::Bf16,
        });
        gguf_to_mlx(&args.model, &args.out, dtype, &mut progress)?
    };
    bar.finish_and_clear();
    println!(
        "wrote {} ({} tensors, {:.1} MB of weights)",
        summary.out.display(),
        summary.tensors,
        summary.weight_bytes as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}
