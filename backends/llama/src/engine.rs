//! [`LlamaEngine`]: the `InferenceBackend` for llama.cpp, and how it loads a model.

use std::num::NonZeroU32;
use std::sync::Arc;

use async_trait::async_trait;
use llama_cpp_2::context::params::{KvCacheType as LlamaKvType, LlamaContextParams};
use llama_cpp_2::model::LlamaModel;
use minerva_core::generation::Generator;
use minerva_core::threads::{default_threads, run_blocking};
use minerva_core::{
    Capabilities, ChatTemplate, EngineMemory, EngineParts, Error, InferenceBackend, KvCacheType,
    LoadSpec, ModelFormat, ModelHeader, Result, DEFAULT_CONTEXT_CAP,
};

use crate::evaluator::{vocabulary, LlamaEvaluator};
use crate::library::llama_backend;
use crate::tokenizer::{token_text, LlamaTokenizer};
use crate::ENGINE_NAME;

/// The llama.cpp build vendored by `llama-cpp-sys-2` 0.1.161.
const LLAMA_CPP_BUILD: &str = "b11434";
/// Tokens per prompt-processing batch.
const BATCH_SIZE: u32 = 512;

/// The llama engine's `engine_options`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LlamaOptions {
    /// Tokens evaluated per step (llama.cpp's `n_batch` and `n_ubatch`); default 512.
    batch_size: Option<u32>,
    /// ggml RPC workers (`host:port`, started with `minerva worker --rpc`) that take part of its
    /// layers with the local device; the config's `rpc` key is a shorthand for this one.
    #[serde(default)]
    rpc: Vec<String>,
    /// Layers (the output layer counted) placed on the `rpc` workers' devices and local GPUs
    /// (llama.cpp's `n_gpu_layers`); default: an equal share per device, the CPU keeping the
    /// first one.
    gpu_layers: Option<u32>,
}
/// Requests generated together when the config does not say.
const DEFAULT_PARALLEL: usize = 8;

/// The llama.cpp engine.
#[derive(Debug, Default)]
pub struct LlamaEngine;

impl LlamaEngine {
    /// A new engine handle (llama.cpp itself is initialised once per process, on first load).
    pub fn new() -> Self {
        LlamaEngine
    }
}

#[async_trait]
impl InferenceBackend for LlamaEngine {
    fn name(&self) -> &str {
        ENGINE_NAME
    }

    fn version(&self) -> String {
        format!("llama.cpp {LLAMA_CPP_BUILD} (llama-cpp-2 0.1.160)")
    }

    fn formats(&self) -> &[ModelFormat] {
        &[ModelFormat::Gguf]
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    fn device(&self) -> String {
        if let Err(e) = llama_backend() {
            return format!("none ({e})");
        }
        match crate::rpc::local_gpus().first() {
            Some(gpu) => format!("{} ({})", gpu.kind, gpu.description),
            None => match crate::ggml_modules::load() {
                Ok(modules) => format!("cpu ({})", modules.cpu_level),
                Err(_) => "cpu".into(),
            },
        }
    }

    async fn load_model(&self, spec: &LoadSpec) -> Result<EngineParts> {
        let spec = spec.clone();
        run_blocking(ENGINE_NAME, move || load(&spec)).await?
    }
}

/// Load a GGUF model into llama.cpp and start its generation thread.
fn load(spec: &LoadSpec) -> Result<EngineParts> {
    let path = spec.path.as_path();
    // Detection validated the whole file layout: llama.cpp aborts the process on some
    // corrupt files.
    let ModelHeader::Gguf(gguf) = &spec.detected.header else {
        return Err(Error::invalid_model(path, "not a GGUF file"));
    };
    crate::validate::check(gguf)?;
    let options: LlamaOptions = spec.options.engine.parse(ENGINE_NAME)?;
    let backend = llama_backend()?;
    let plan = crate::placement::plan(spec, &options.rpc, options.gpu_layers)?;
    let model = LlamaModel::load_from_file(backend, path, &plan.params).map_err(|e| {
        Error::invalid_model(
            path,
            format!("llama.cpp could not load it ({e}); its log above says why"),
        )
    })?;
    let model = Arc::new(model);
    let vocab = model.vocab();
    let bos_text = token_text(&model, vocab.bos());
    let template = match gguf.get_str("tokenizer.chat_template") {
        Some(source) => Some(ChatTemplate::new(
            source,
            &bos_text,
            &token_text(&model, vocab.eos()),
        )?),
        None => None,
    };
    let train_ctx = model.n_ctx_train().max(1);
    let context_size = spec
        .options
        .context_size
        .unwrap_or_else(|| train_ctx.min(DEFAULT_CONTEXT_CAP));
    let threads = spec.options.threads.unwrap_or_else(default_threads);
    let threads = i32::try_from(threads).unwrap_or(i32::MAX);
    let batch_size = options.batch_size.unwrap_or(BATCH_SIZE).max(1);
    let kv_type = spec.options.kv_cache_type.unwrap_or_default();
    let mut params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(context_size))
        .with_n_batch(batch_size)
        .with_n_ubatch(batch_size)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_type_k(llama_kv_type(kv_type))
        .with_type_v(llama_kv_type(kv_type));
    if kv_type != KvCacheType::F16 {
        // llama.cpp keeps a quantized V cache only with flash attention.
        params = params.with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED);
    }
    let slots = spec.options.parallel.unwrap_or(DEFAULT_PARALLEL).max(1);
    check_room(spec, context_size, batch_size, slots)?;
    let params = params.with_n_seq_max(slots as u32).with_kv_unified(true);
    let pieces = vocabulary(&model);
    // Saving a sequence's state off a GPU (llama.cpp's `state_seq_get`) is slow: with the
    // prompt store on, 8 concurrent streams on an H100 waited 0.3-0.7 s for their first
    // token while slots were saved (docs/BENCHMARKS.md). Off for models on a GPU for now.
    let prompt_store_bytes = if plan.local_gpu {
        0
    } else {
        spec.options.prompt_store_bytes()
    };
    let for_thread = Arc::clone(&model);
    let (generator, ()) = Generator::spawn(&format!("llama:{}", spec.id), move |starter| {
        let model = for_thread;
        let context = model.new_context(backend, params);
        match context {
            Ok(ctx) => {
                let evaluator =
                    LlamaEvaluator::new(&model, backend, ctx, slots, threads, prompt_store_bytes);
                starter.serve(evaluator, pieces, ())
            }
            Err(e) => starter.fail(Error::engine(
                ENGINE_NAME,
                format!("creating the context failed: {e}"),
            )),
        };
    })?;
    let context_size = generator.limits().kv_cells as u32;
    tracing::info!(
        model = %spec.id,
        context_size,
        threads,
        slots,
        kv_cache_type = kv_type.name(),
        "llama.cpp model ready"
    );
    let weights = model.size();
    Ok(
        EngineParts::new(generator, Box::new(LlamaTokenizer::new(model)), template)
            .placed(plan.parts)
            .memory(move || {
                Some(EngineMemory {
                    bytes: weights,
                    what: "llama.cpp model weights (KV cache not included)".into(),
                })
            }),
    )
}

/// llama.cpp's name for a KV-cache storage type.
fn llama_kv_type(kv_type: KvCacheType) -> LlamaKvType {
    match kv_type {
        KvCacheType::F16 => LlamaKvType::F16,
        KvCacheType::Q8_0 => LlamaKvType::Q8_0,
        KvCacheType::Q4_0 => LlamaKvType::Q4_0,
    }
}

/// llama.cpp keeps an output row per sequence in every batch and aborts when a batch (at most
/// the context size) has fewer rows than sequences; refuse such settings by name instead.
fn check_room(spec: &LoadSpec, context_size: u32, batch_size: u32, slots: usize) -> Result<()> {
    let slots = u32::try_from(slots).unwrap_or(u32::MAX);
    if context_size < slots {
        let from = match spec.options.context_size {
            Some(_) => "the context_size setting".to_string(),
            None => format!(
                "{}'s `{}.context_length`",
                spec.path.display(),
                spec.detected.info.architecture.as_deref().unwrap_or("?")
            ),
        };
        return Err(Error::Config(format!(
            "model `{}`: a context of {context_size} tokens (from {from}) cannot hold `parallel` = \
             {slots} sequences; raise context_size or lower parallel",
            spec.id
        )));
    }
    if batch_size < slots {
        return Err(Error::Config(format!(
            "model `{}`: engine_options.batch_size = {batch_size} is below `parallel` = {slots}; \
             llama.cpp needs a batch row per sequence",
            spec.id
        )));
    }
    Ok(())
}
