//! `minerva engines`: the engines this process can use (built in and plugins), with version,
//! formats, device and load status, and the plugin files that were skipped.

use std::process::ExitCode;

use clap::Args;
use minerva_runtime::plugin::PluginFailure;
use minerva_runtime::router::EngineSource;
use minerva_runtime::{Result, Runtime};
use serde::Serialize;

/// Arguments of `minerva engines`.
#[derive(Args)]
pub struct EnginesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    name: String,
    version: String,
    formats: Vec<String>,
    device: String,
    source: String,
    status: String,
}

/// Run the command.
pub fn run(runtime: &Runtime, failures: &[PluginFailure], args: EnginesArgs) -> Result<ExitCode> {
    let source = |s: &EngineSource| match s {
        EngineSource::BuiltIn => "built-in".to_string(),
        EngineSource::Plugin(path) => format!("plugin {}", path.display()),
    };
    let mut rows: Vec<Row> = runtime
        .router()
        .registered()
        .iter()
        .map(|r| Row {
            name: r.engine.name().to_string(),
            version: r.engine.version(),
            formats: r.engine.formats().iter().map(|f| f.to_string()).collect(),
            device: r.engine.device(),
            source: source(&r.source),
            status: match &r.replaced {
                Some(old) => format!("loaded (replaces the {} one)", source(old)),
                None => "loaded".into(),
            },
        })
        .collect();
    rows.extend(failures.iter().map(|f| Row {
        name: String::new(),
        version: String::new(),
        formats: Vec::new(),
        device: String::new(),
        source: format!("plugin {}", f.path.display()),
        status: format!("skipped: {}", f.reason),
    }));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for r in &rows {
        if r.name.is_empty() {
            println!("{}  {}", r.source, r.status);
        } else {
            println!(
                "{:<8} {:<40} {:<18} {:<6} {}  {}",
                r.name,
                r.version,
                r.formats.join(","),
                r.device,
                r.source,
                r.status
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `minerva --version`: the version and git commit, then each engine with its library version
/// and device.
pub fn version(runtime: &Runtime) -> ExitCode {
    println!(
        "minerva {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("MINERVA_COMMIT")
    );
    for r in runtime.router().registered() {
        println!(
            "  {:<8} {:<40} {}",
            r.engine.name(),
            r.engine.version(),
            r.engine.device()
        );
    }
    ExitCode::SUCCESS
}
