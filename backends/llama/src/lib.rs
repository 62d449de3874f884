//! The llama.cpp engine: GGUF models through `llama-cpp-2`. Prompts are rendered by the runtime's
//! Jinja renderer (not llama.cpp's built-in template matcher); generation (sampling, batching,
//! stop strings) is the runtime's generation core, driving a llama.cpp context through
//! [`evaluator`].

mod engine;
mod evaluator;
pub mod ggml_modules;
mod library;
mod placement;
pub mod rpc;
mod tokenizer;
mod validate;

pub use engine::LlamaEngine;

/// Engine name used in config and messages.
pub const ENGINE_NAME: &str = "llama";
