//! `minerva serve`: the OpenAI-compatible HTTP server.

use std::process::ExitCode;

use clap::Args;
use minerva_runtime::{Isolation, Result, Runtime};

/// Arguments of `minerva serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to bind (default from config, else 127.0.0.1).
    #[arg(long)]
    host: Option<String>,
    /// Port (default from config, else 8080; 0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Serve this model too: a configured id, a path or a cached Hugging Face id (repeatable).
    /// Its id in requests is the file name without `.gguf`, else the directory or repo name.
    #[arg(long = "model", short = 'm')]
    models: Vec<String>,
    /// Load every model before accepting requests.
    #[arg(long)]
    preload: bool,
    /// Fetch models that are Hugging Face repos missing from the cache when first loaded
    /// (progress in the log); per model: `pull = true`.
    #[arg(long)]
    pull: bool,
    /// Require this bearer token (repeatable; adds to config's server.api_keys).
    #[arg(long = "api-key", env = "MINERVA_API_KEY", hide_env_values = true)]
    api_keys: Vec<String>,
}

/// Run the command.
pub async fn run(runtime: &Runtime, args: ServeArgs) -> Result<ExitCode> {
    let mut config = runtime.config().clone();
    if let Some(host) = args.host {
        config.server.host = host;
    }
    if let Some(port) = args.port {
        config.server.port = port;
    }
    config.server.api_keys.extend(args.api_keys);
    config.add_references(&args.models);
    let preload: Vec<String> = if args.preload {
        config.models.iter().map(|m| m.id.clone()).collect()
    } else {
        Vec::new()
    };
    let runtime = runtime
        .clone()
        .with_config(config)
        .with_default_isolation(Isolation::Process)
        .with_pull_missing(args.pull);
    minerva_server::serve(
        runtime,
        &preload,
        minerva_server::shutdown_signal(),
        |address| {
            // One line on stdout that scripts can wait for.
            println!("minerva listening on http://{address}");
        },
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
