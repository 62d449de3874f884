//! Runner processes: a model's engine in a child process of the same binary, so that an engine
//! that aborts (a `GGML_ASSERT`, a segfault, an OOM kill) takes down only that model's requests,
//! and unloading a model gives its memory back to the system.
//!
//! The serving process starts one runner per loaded model ([`RunnerLauncher`]) and talks to it
//! over a Unix socket handed to the child as file descriptor 3 ([`protocol`]: JSON lines of
//! load, generate, cancel, tokenize and embed one way, token events the other). In the serving
//! process a runner-backed model is a [`LoadedModel`](crate::LoadedModel) like any other
//! ([`RunnerModel`]); the pool sees a dead runner through
//! [`LoadedModel::failure`](crate::LoadedModel::failure) and loads the model again, with
//! back-off when it keeps dying at load.

mod child;
mod handle;
pub(crate) mod process;
pub mod protocol;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use child::serve_runner;
pub use handle::RunnerModel;

/// Where a model's engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// In a runner process of its own.
    Process,
    /// Inside the calling process.
    None,
}

/// How to start a runner: a program (normally this binary) and the arguments that make it run
/// [`serve_runner`].
#[derive(Debug, Clone)]
pub struct RunnerLauncher {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

impl RunnerLauncher {
    /// This executable with `args`.
    pub fn current_exe(args: Vec<String>) -> crate::Result<Self> {
        let program = std::env::current_exe()
            .map_err(|e| crate::Error::Config(format!("cannot find this executable: {e}")))?;
        Ok(RunnerLauncher { program, args })
    }
}
