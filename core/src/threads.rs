//! Threads for engines: default counts, and blocking work run on a plain OS thread so that an
//! engine never needs the host's async runtime (plugins carry their own copy of it).

use crate::error::{Error, Result};

/// Threads to use when none are configured: the machine's physical cores.
pub fn default_threads() -> usize {
    num_cpus::get_physical().max(1)
}

/// Run `work` on a new named OS thread and await its result from any executor.
pub async fn run_blocking<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.chars().take(15).collect())
        .spawn(move || {
            let _ = done.send(work());
        })
        .map_err(|e| Error::engine(name, format!("starting a thread: {e}")))?;
    result
        .await
        .map_err(|_| Error::engine(name, "the worker thread panicked"))
}
