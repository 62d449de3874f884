//! [`MlxEngine`]: the `InferenceBackend` for MLX, and how it loads a model.

use async_trait::async_trait;
use minerva_core::generation::Generator;
use minerva_core::threads::run_blocking;
use minerva_core::{
    Capabilities, Detected, EngineMemory, EngineParts, InferenceBackend, LoadSpec, ModelFormat,
    ModelHeader, Result,
};

use crate::load::load;
use crate::ENGINE_NAME;

/// The MLX release mlx-sys 0.7.0 binds (and scripts/setup-mlx installs off macOS).
const MLX_VERSION: &str = "0.32.2";

/// The MLX engine: Hugging Face / MLX safetensors directories, float or MLX-quantized.
#[derive(Debug, Default)]
pub struct MlxEngine;

impl MlxEngine {
    /// A new engine handle.
    pub fn new() -> Self {
        MlxEngine
    }
}

#[async_trait]
impl InferenceBackend for MlxEngine {
    fn name(&self) -> &str {
        ENGINE_NAME
    }

    fn version(&self) -> String {
        format!("MLX {MLX_VERSION} (mlx-rs 0.33.0)")
    }

    fn formats(&self) -> &[ModelFormat] {
        &[ModelFormat::Safetensors]
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    fn device(&self) -> String {
        crate::load::device_name()
    }

    fn memory_overhead(&self) -> u64 {
        // Measured on CPU: SmolLM2-135M's process holds ~650 MB beside its weights (MLX's
        // libraries, allocator pools and compiled kernels), whatever the context.
        640 << 20
    }

    fn model_facts(&self, detected: &Detected) -> serde_json::Map<String, serde_json::Value> {
        let mut facts = serde_json::Map::new();
        if let ModelHeader::Safetensors(dir) = &detected.header {
            // MLX's own affine quantization, declared in config.json.
            let quantized = dir.config.get("quantization").is_some();
            facts.insert("mlx_quantized".into(), quantized.into());
        }
        facts
    }

    async fn load_model(&self, spec: &LoadSpec) -> Result<EngineParts> {
        // The model's own thread loads it and then runs its generations.
        let spec = spec.clone();
        let (generator, loaded) = run_blocking(ENGINE_NAME, move || {
            let name = format!("mlx-{}", spec.id);
            Generator::spawn(&name, move |starter| match load(&spec) {
                Ok(parts) => starter.serve(
                    parts.evaluator,
                    parts.vocabulary,
                    (
                        parts.tokenizer,
                        parts.template,
                        parts.placement,
                        parts.ring_failure,
                    ),
                ),
                Err(e) => starter.fail(e),
            })
        })
        .await??;
        let (tokenizer, template, placement, ring_failure) = loaded;
        let mut parts = EngineParts::new(generator, Box::new(tokenizer), template)
            .placed(placement)
            .memory(|| {
                // Process-wide: MLX keeps one allocator for every model of the process.
                let bytes = mlx_rs::memory::peak_memory().ok()?;
                Some(EngineMemory {
                    bytes: bytes as u64,
                    what: "MLX allocator peak (all models of the process)".into(),
                })
            });
        if let Some(failure) = ring_failure {
            parts =
                parts.failure(move || failure.lock().unwrap_or_else(|e| e.into_inner()).clone());
        }
        Ok(parts)
    }
}
