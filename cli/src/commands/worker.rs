//! `minerva worker`: lend this machine to a model split over several machines, through the
//! engines' own distributed layers: `--rpc` serves ggml's RPC protocol (a llama model's
//! `rpc = ["host:port", ...]`), `--mlx` runs one rank of an MLX ring (an MLX model's
//! `engine_options.hostfile`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use minerva_runtime::threads::default_threads;
use minerva_runtime::{Error, Result, Runtime};

use crate::engines;

/// Default port, the one llama.cpp's `rpc-server` uses.
const DEFAULT_PORT: u16 = 50052;

/// Arguments of `minerva worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Serve this machine's ggml devices over ggml's RPC protocol (llama engine).
    #[arg(long, conflicts_with_all = ["mlx", "hostfile", "rank", "model"])]
    rpc: bool,
    /// Address to listen on (`--rpc`). The protocol has no authentication: anything that can
    /// reach the port can use the worker's memory and compute, so keep it on a trusted network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (`--rpc`).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Folder where the worker keeps tensors it was sent, so that a head that loads the same
    /// model again sends hashes instead of weights (`--rpc`).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Run one rank of an MLX ring: this rank's share of MODEL's layers (MLX engine).
    #[arg(long, requires_all = ["hostfile", "rank", "model"])]
    mlx: bool,
    /// The ring's hostfile (MLX's convention: a JSON list of ["ip:port"] per rank), the same on
    /// every rank and in the serving minerva's engine_options.hostfile (`--mlx`).
    #[arg(long)]
    hostfile: Option<PathBuf>,
    /// This process's rank in the ring, 1 or more; rank 0 is the serving minerva (`--mlx`).
    #[arg(long)]
    rank: Option<usize>,
    /// The model (an MLX directory, configured id or Hugging Face id), the same weights rank 0
    /// serves (`--mlx`).
    model: Option<String>,
}

/// Serve until the process is stopped (`--rpc`) or rank 0 stops (`--mlx`).
pub fn run(runtime: &Runtime, args: WorkerArgs, threads: Option<usize>) -> Result<ExitCode> {
    let threads = threads.unwrap_or_else(default_threads);
    if args.rpc {
        engines::serve_rpc_worker(&args.host, args.port, threads, args.cache.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    match (args.mlx, &args.hostfile, args.rank, &args.model) {
        (true, Some(hostfile), Some(rank), Some(model)) => {
            let path = runtime.entry(model)?.path;
            engines::serve_mlx_rank(&path, hostfile, rank, threads)?;
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(Error::Config(
            "say which kind of worker: `minerva worker --rpc [--host H --port P]` (llama) or \
             `minerva worker --mlx --hostfile F --rank R MODEL` (MLX)"
                .into(),
        )),
    }
}
