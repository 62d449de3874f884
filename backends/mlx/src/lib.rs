//! MLX engine for Minerva: Hugging Face / MLX safetensors directories (f32, f16, bf16 or MLX
//! affine-quantized) run through mlx-rs. Architectures: the llama family and Qwen2/Qwen3.

mod blas;
mod cache;
mod config;
mod distributed;
mod engine;
mod error;
mod evaluator;
mod layers;
mod load;
mod models;
mod rope;
mod tokenizer;
mod weights;

pub use config::SUPPORTED_MODEL_TYPES;
pub use engine::MlxEngine;
pub use load::serve_rank;

/// Engine name used in config and messages.
pub const ENGINE_NAME: &str = "mlx";
