//! `minerva models`: the configured models, each with its detected format and engine.

use std::process::ExitCode;

use clap::Args;
use minerva_runtime::{Result, Runtime};
use serde::Serialize;

/// Arguments of `minerva models`.
#[derive(Args)]
pub struct ModelsArgs {
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
    let rows: Vec<Row> = runtime
        .config()
        .models
        .iter()
        .map(|m| {
            let mut row = Row {
                id: m.id.clone(),
                path: m.path.clone(),
                format: None,
                architecture: None,
                quantization: None,
                engine: None,
                engine_available: false,
                error: None,
            };
            match runtime.entry(&m.id).and_then(|e| runtime.inspect(&e)) {
                Ok((info, engine)) => {
                    row.format = Some(info.format.to_string());
                    row.architecture = info.architecture;
                    row.quantization = info.quantization;
                    row.engine_available = runtime.router().engines().any(|e| e.name() == engine);
                    row.engine = Some(engine.to_string());
                }
                Err(e) => row.error = Some(e.to_string()),
            }
            row
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
