//! The runtime's error type: every failure a user can cause or meet, worded for that user.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Result with the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the runtime and its engines. Serializable, so that a runner process can hand its
/// errors to the server unchanged (an I/O error's cause travels as text).
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// A model file or directory could not be read or is not a usable model.
    #[error("{}: {message}", path.display())]
    InvalidModel {
        /// The offending file or directory.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Reading a file failed at the OS level.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying error.
        #[serde(with = "io_error_text")]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A model reference names no configured model, no local path and no cached Hugging Face repo.
    #[error("model not found: {0}")]
    ModelNotFound(String),
    /// The engine that should serve a model is not part of this build.
    #[error("engine `{engine}` is needed for {model} but is not built into this minerva ({hint})")]
    EngineUnavailable {
        /// Engine name.
        engine: String,
        /// The model it was needed for.
        model: String,
        /// How to get it.
        hint: String,
    },
    /// A request option the chosen engine cannot honour.
    #[error("engine `{engine}` does not support `{option}`")]
    Unsupported {
        /// Engine name.
        engine: String,
        /// The request option, as the user spelled it.
        option: String,
    },
    /// The request is malformed or out of range.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// One request field is out of range or does not fit the model.
    #[error("invalid request: {message}")]
    InvalidParam {
        /// The field, as the user spelled it (`top_p`, `logit_bias`, ...).
        param: String,
        /// What is wrong with it.
        message: String,
    },
    /// The prompt does not fit the model's context window.
    #[error("prompt has {prompt_tokens} tokens but the context holds {context_size}; raise the context size (--ctx-size or context_size) or shorten the prompt")]
    ContextOverflow {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// The context size of the loaded model.
        context_size: usize,
    },
    /// The chat template failed to render.
    #[error("chat template: {0}")]
    Template(String),
    /// The model's request queue is full; retry later.
    #[error("model `{model}` is busy: {limit} requests are already running or queued")]
    Overloaded {
        /// The model.
        model: String,
        /// Its queue limit.
        limit: usize,
    },
    /// The engine failed while running.
    #[error("engine `{engine}`: {message}")]
    Engine {
        /// Engine name.
        engine: String,
        /// What failed.
        message: String,
    },
    /// The process running a model's engine died (a signal, an abort, an OOM kill).
    #[error("model `{model}`: its runner process died: {reason}")]
    EngineCrashed {
        /// The model.
        model: String,
        /// How it died, e.g. `killed by signal 6 (SIGABRT)`.
        reason: String,
    },
    /// A model whose engine keeps crashing is not started again until a back-off has passed.
    #[error("model `{model}` cannot be loaded now: {reason}; next try in {retry_after_s} s")]
    ModelUnavailable {
        /// The model.
        model: String,
        /// The last failure.
        reason: String,
        /// Seconds until the next load attempt.
        retry_after_s: u64,
    },
    /// A request ran past the configured `request_timeout`; its generation was stopped.
    #[error(
        "model `{model}`: the request ran past the request_timeout of {seconds} s and was stopped"
    )]
    TimedOut {
        /// The model.
        model: String,
        /// The limit.
        seconds: u64,
    },
    /// Fetching a model from the Hugging Face hub failed.
    #[error("download of {file}: {message}")]
    Download {
        /// The repo, or `repo/file`.
        file: String,
        /// What went wrong.
        message: String,
    },
}

/// An I/O error as its text (the only part that crosses a process boundary).
mod io_error_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(e: &std::io::Error, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&e.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::io::Error, D::Error> {
        String::deserialize(d).map(std::io::Error::other)
    }
}

impl Error {
    /// An [`Error::InvalidModel`] for `path`.
    pub fn invalid_model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::InvalidModel {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::InvalidParam`] for `param`.
    pub fn param(param: &str, message: impl Into<String>) -> Self {
        Error::InvalidParam {
            param: param.to_string(),
            message: message.into(),
        }
    }

    /// An [`Error::Engine`] for the named engine.
    pub fn engine(engine: &str, message: impl Into<String>) -> Self {
        Error::Engine {
            engine: engine.to_string(),
            message: message.into(),
        }
    }
}
