//! The engines of this process: the ones linked in (the one place that knows which cargo
//! features are on), the plugins found in the configured folders, and what this binary knows of
//! every engine Minerva has, present or not (formats it serves by default, how to get it, the
//! environment variables it reads).

use std::path::PathBuf;
use std::sync::Arc;

use minerva_runtime::plugin::{self, PluginFailure};
use minerva_runtime::{Config, EngineDeclaration, InferenceBackend, ModelFormat, Result, Router};

/// Environment variable with more plugin folders (a path list).
pub const PLUGIN_DIRS_VAR: &str = "MINERVA_PLUGIN_DIRS";

/// A router over every engine built in and every plugin found, with the config's per-format
/// choices; plugin files that failed are returned (and logged) so callers can show them.
pub fn router(config: &Config) -> Result<(Router, Vec<PluginFailure>)> {
    let built_in: Vec<Arc<dyn InferenceBackend>> = vec![
        #[cfg(feature = "llama")]
        Arc::new(minerva_backend_llama::LlamaEngine::new()),
        #[cfg(feature = "mlx")]
        Arc::new(minerva_backend_mlx::MlxEngine::new()),
    ];
    let mut router = Router::new(built_in);
    for (declaration, _) in known_engines() {
        router.declare(declaration);
    }
    let scan = plugin::scan(&plugin_dirs(config))?;
    let mut failures = scan.failures;
    for (engine, path) in scan.engines {
        let name = engine.name().to_string();
        match router.add_plugin(engine, path.clone()) {
            Ok(()) => {
                tracing::info!(engine = %name, plugin = %path.display(), "plugin engine loaded")
            }
            Err(e) => failures.push(PluginFailure {
                path,
                reason: e.to_string(),
            }),
        }
    }
    for failure in &failures {
        tracing::warn!(plugin = %failure.path.display(), "plugin skipped: {}", failure.reason);
    }
    for (format, engine) in &config.formats {
        router.set_format_engine(*format, engine);
    }
    Ok((router, failures))
}

/// Minerva's engines, built into this binary or not, with the `MINERVA_*` variables (without
/// the prefix) each reads itself.
fn known_engines() -> Vec<(EngineDeclaration, &'static [&'static str])> {
    vec![
        (
            EngineDeclaration {
                name: "llama".into(),
                default_for: vec![ModelFormat::Gguf],
                missing_hint: "build minerva with the `llama` feature, or add a llama plugin to \
                               plugin_dirs"
                    .into(),
            },
            &["LLAMA_CPU", "GGML_BACKENDS"],
        ),
        (
            EngineDeclaration {
                name: "mlx".into(),
                default_for: vec![ModelFormat::Safetensors],
                missing_hint:
                    "build minerva with the `mlx` feature (after scripts/setup-mlx), add \
                               an mlx plugin to plugin_dirs, or convert the model to GGUF"
                        .into(),
            },
            &["MLX_CPU_DENSE_MAX_MB"],
        ),
    ]
}

/// The `MINERVA_*` variables engines read themselves, which are not config keys.
pub fn engine_env_vars() -> Vec<&'static str> {
    known_engines()
        .into_iter()
        .flat_map(|(_, vars)| vars.iter().copied())
        .collect()
}

/// Serve this machine's ggml devices to heads over ggml's RPC protocol at `host:port` (returns
/// only when the server cannot start).
pub fn serve_rpc_worker(
    host: &str,
    port: u16,
    threads: usize,
    cache: Option<&std::path::Path>,
) -> Result<()> {
    #[cfg(feature = "llama")]
    return minerva_backend_llama::rpc::serve_worker(host, port, threads, cache);
    #[cfg(not(feature = "llama"))]
    {
        let _ = (host, port, threads, cache);
        Err(minerva_runtime::Error::Config(
            "this minerva was built without the llama engine, which RPC workers run".into(),
        ))
    }
}

/// Be rank `rank` of the MLX ring of `hostfile` for the MLX model directory `model` (returns
/// when rank 0 stops).
pub fn serve_mlx_rank(
    model: &std::path::Path,
    hostfile: &std::path::Path,
    rank: usize,
    threads: usize,
) -> Result<()> {
    #[cfg(feature = "mlx")]
    return minerva_backend_mlx::serve_rank(model, hostfile, rank, threads);
    #[cfg(not(feature = "mlx"))]
    {
        let _ = (model, hostfile, rank, threads);
        Err(minerva_runtime::Error::Config(
            "this minerva was built without the MLX engine, which MLX ring ranks run".into(),
        ))
    }
}

/// `plugin_dirs` from the config, then those in `MINERVA_PLUGIN_DIRS`.
fn plugin_dirs(config: &Config) -> Vec<PathBuf> {
    let mut dirs = config.plugin_dirs.clone();
    if let Some(list) = std::env::var_os(PLUGIN_DIRS_VAR) {
        dirs.extend(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()));
    }
    dirs
}
