//! [`MlxEngine`]: the `InferenceBackend` for MLX, and the model it loads.

use std::sync::Arc;

use async_trait::async_trait;
use minerva_runtime::generation::{DraftModel, Generator};
use minerva_runtime::threads::run_blocking;
use minerva_runtime::{
    Capabilities, Detected, Embeddings, EngineMemory, GenerationRequest, InferenceBackend, Input,
    LoadSpec, LoadedModel, ModelDescriptor, ModelFormat, ModelHeader, Result, TokenStream,
};

use crate::load::load;
use crate::tokenizer::ModelTokenizer;
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

    async fn load_model(&self, spec: &LoadSpec) -> Result<Arc<dyn LoadedModel>> {
        // The model's own thread loads it and then runs its generations.
        let id = spec.id.clone();
        let spec = spec.clone();
        let (generator, loaded) = run_blocking(ENGINE_NAME, move || {
            let name = format!("mlx-{}", spec.id);
            Generator::spawn(&name, move |starter| match load(&spec) {
                Ok(parts) => starter.serve(
                    parts.evaluator,
                    parts.vocabulary,
                    (
                        parts.tokenizer,
                        parts.vocab_size,
                        parts.placement,
                        parts.ring_failure,
                    ),
                ),
                Err(e) => starter.fail(e),
            })
        })
        .await??;
        let (tokenizer, vocab_size, placement, ring_failure) = loaded;
        Ok(Arc::new(MlxLoadedModel {
            descriptor: ModelDescriptor {
                id,
                engine: ENGINE_NAME.to_string(),
                context_size: generator.limits().kv_cells as u32,
                vocab_size,
                has_chat_template: tokenizer.has_chat_template(),
                tool_format: tokenizer.tool_format(),
                placement,
            },
            tokenizer,
            generator,
            ring_failure,
        }))
    }
}

/// A model directory loaded into MLX, with its thread.
pub struct MlxLoadedModel {
    descriptor: ModelDescriptor,
    tokenizer: Arc<ModelTokenizer>,
    generator: Generator,
    /// Set when the MLX ring the model is split over breaks.
    ring_failure: Option<crate::distributed::RingFailure>,
}

#[async_trait]
impl LoadedModel for MlxLoadedModel {
    fn descriptor(&self) -> &ModelDescriptor {
        &self.descriptor
    }

    fn failure(&self) -> Option<String> {
        let failure = self.ring_failure.as_ref()?;
        failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn engine_memory(&self) -> Option<EngineMemory> {
        // Process-wide: MLX keeps one allocator for every model of the process.
        let bytes = mlx_rs::memory::peak_memory().ok()?;
        Some(EngineMemory {
            bytes: bytes as u64,
            what: "MLX allocator peak (all models of the process)".into(),
        })
    }

    fn tokenize(&self, input: &Input) -> Result<Vec<u32>> {
        self.tokenizer.encode(input, &[], &self.descriptor.id)
    }

    async fn stream(&self, request: GenerationRequest) -> Result<TokenStream> {
        let tokens = self
            .tokenizer
            .encode(&request.input, &request.tools, &self.descriptor.id)?;
        self.generator.submit(tokens, &request).await
    }

    fn prompt_store_bytes(&self) -> Option<u64> {
        Some(self.generator.prompt_store_bytes() as u64)
    }

    fn draft_model(&self) -> Result<DraftModel> {
        self.generator.draft_model()
    }

    fn attach_draft(&self, draft: DraftModel) -> Result<()> {
        self.generator.attach_draft(draft)
    }

    async fn embed(&self, inputs: Vec<String>) -> Result<Embeddings> {
        let tokens = inputs
            .into_iter()
            .map(|text| {
                self.tokenizer
                    .encode(&Input::Text(text), &[], &self.descriptor.id)
            })
            .collect::<Result<Vec<_>>>()?;
        self.generator.embed(tokens).await
    }
}
