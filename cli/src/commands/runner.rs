//! `minerva runner`: one model's engine in a process of its own, started by `minerva serve`
//! (see `minerva_runtime::runner`).

use std::process::ExitCode;

use minerva_runtime::Result;

use crate::engines;

/// Serve one model for the process that started us; exit when it goes away.
pub async fn run() -> Result<ExitCode> {
    minerva_runtime::runner::serve_runner(|config| engines::router(config).map(|(r, _)| r)).await?;
    // The serving process is gone: leave now, without waiting for the engine's threads.
    std::process::exit(0)
}
