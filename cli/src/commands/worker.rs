//! `minerva worker --rpc`: lend this machine's ggml devices to a head that splits a model over
//! workers (a model's `rpc = ["host:port", ...]`), through llama.cpp's own RPC server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use minerva_runtime::threads::default_threads;
use minerva_runtime::{Error, Result};

use crate::engines;

/// Default port, the one llama.cpp's `rpc-server` uses.
const DEFAULT_PORT: u16 = 50052;

/// Arguments of `minerva worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Serve ggml's RPC protocol (the llama engine's layers); the only kind of worker so far.
    #[arg(long)]
    rpc: bool,
    /// Address to listen on. The protocol has no authentication: anything that can reach the
    /// port can use the worker's memory and compute, so keep it on a trusted network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Folder where the worker keeps tensors it was sent, so that a head that loads the same
    /// model again sends hashes instead of weights.
    #[arg(long)]
    cache: Option<PathBuf>,
}

/// Serve until the process is stopped.
pub fn run(args: WorkerArgs, threads: Option<usize>) -> Result<ExitCode> {
    if !args.rpc {
        return Err(Error::Config(
            "say which kind of worker: `minerva worker --rpc` (ggml RPC, for the llama engine)"
                .into(),
        ));
    }
    let threads = threads.unwrap_or_else(default_threads);
    engines::serve_rpc_worker(&args.host, args.port, threads, args.cache.as_deref())?;
    Ok(ExitCode::SUCCESS)
}
