//! The llama.cpp engine: GGUF models through `llama-cpp-2`. Prompts are rendered by the runtime's
//! Jinja renderer (not llama.cpp's built-in template matcher), sampling uses llama.cpp's sampler
//! chain, and each loaded model decodes on its own worker thread.

mod embed;
mod engine;
mod sampler;
mod worker;

pub use engine::LlamaEngine;
