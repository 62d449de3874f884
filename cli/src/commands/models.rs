//! `minerva models`: the runtime's model catalog (the configured models plus any `--model`),
//! each with its detected format and engine; the same list `GET /v1/models` serves.

use std::process::ExitCode;

use clap::Args;
use minerva_runtime::{Result, Runtime};
use serde::Serialize;

/// Arguments of `minerva models`.
#[derive(Args)]
pub struct ModelsArgs {
    /// List this model too, as `serve --model` would serve it (repeatable).
    #[arg(long = "model", short = 'm')]
    models: Vec<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    id: String,
    path: String,
    format: Option<String>,
    architecture: Option<String>,
    quantization: Option<String>,
    engine: Option<String>,
    engine_available: bool,
    error: Option<String>,
}

/// Run the command.
pub fn run(runtime: &Runtime, args: ModelsArgs) -> Result<ExitCode> {
    let mut config = runtime.config().clone();
    config.add_references(&args.models);
    let runtime = runtime.clone().with_config(config);
    let rows: Vec<Row> = runtime
        .catalog()
        .into_iter()
        .map(|m| match m.inspection {
            Ok(i) => Row {
                id: m.id,
                path: m.path,
                format: Some(i.info.format.to_string()),
                architecture: i.info.architecture,
                quantization: i.info.quantization,
                engine: Some(i.engine),
                engine_available: i.engine_available,
                error: None,
            },
            Err(e) => Row {
                id: m.id,
                path: m.path,
                format: None,
                architecture: None,
                quantization: None,
                engine: None,
                engine_available: false,
                error: Some(e),
            },
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no models configured (add [[models]] entries to minerva.toml)");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<12} {:<10} {:<16} {:<8} PATH",
        "ID", "FORMAT", "ARCH", "QUANT", "ENGINE"
    );
    for r in rows {
        let dash = || "-".to_string();
        let engine = match (&r.engine, r.engine_available) {
            (Some(e), true) => e.clone(),
            (Some(e), false) => format!("{e}(missing)"),
            (None, _) => dash(),
        };
        println!(
            "{:<20} {:<12} {:<10} {:<16} {:<8} {}{}",
            r.id,
            r.format.unwrap_or_else(dash),
            r.architecture.unwrap_or_else(dash),
            r.quantization.unwrap_or_else(dash),
            engine,
            r.path,
            r.error.map(|e| format!("  error: {e}")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
