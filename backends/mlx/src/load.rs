//! Loading a model directory into MLX on the model's own thread: config, tokenizer, weights in
//! the layout that suits the device, and the evaluator the generation core drives.

use std::path::{Path, PathBuf};

use minerva_core::format::safetensors_dir::SafetensorsDir;
use minerva_core::generation::{Limits, Vocabulary};
use minerva_core::threads::default_threads;
use minerva_core::{
    ChatTemplate, Error, KvCacheType, LoadSpec, ModelHeader, ModelPart, Result, DEFAULT_CONTEXT_CAP,
};
use mlx_rs::{Device, DeviceType};

use crate::cache::KvQuantization;
use crate::config::ModelConfig;
use crate::distributed::{serve_stage, Pipeline, Ring, RingFailure};
use crate::evaluator::MlxEvaluator;
use crate::models::Transformer;
use crate::tokenizer::ModelTokenizer;
use crate::weights::{Layout, Weights};
use crate::ENGINE_NAME;

/// How long rank 0 waits for the other ranks of an MLX ring to join.
const RING_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Prompt tokens processed per forward pass.
const PREFILL_CHUNK: usize = 512;
/// Sequences generated together when the config does not say.
const DEFAULT_PARALLEL: usize = 8;

/// Environment variable overriding `cpu_dense_max_mb` for every model.
const DENSE_LIMIT_VAR: &str = "MINERVA_MLX_CPU_DENSE_MAX_MB";
/// Default of `cpu_dense_max_mb`.
const DEFAULT_DENSE_LIMIT_MB: u64 = 2048;

/// The MLX engine's `engine_options`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MlxOptions {
    /// Largest model (MB of f32 weights) dequantized to dense f32 when MLX runs on the CPU
    /// (0 keeps weights as stored); default 2048.
    cpu_dense_max_mb: Option<u64>,
    /// Elements per scale and bias in a quantized KV cache (`kv_cache_type` `q8_0`/`q4_0`);
    /// default 64, as `mlx_lm`'s quantized cache.
    kv_group_size: Option<i32>,
    /// An MLX ring hostfile: the model is split over its ranks, this process being rank 0
    /// (`minerva worker --mlx` runs the others).
    hostfile: Option<PathBuf>,
}

/// Default of `kv_group_size`.
const DEFAULT_KV_GROUP_SIZE: i32 = 64;

/// How the KV cache is stored: floats, or MLX's affine packing with the bits of `kv_cache_type`
/// and the configured group size (which must divide the head dimension).
fn kv_quantization(
    spec: &LoadSpec,
    options: &MlxOptions,
    head_dim: i32,
) -> Result<Option<KvQuantization>> {
    let bits = match spec.options.kv_cache_type.unwrap_or_default() {
        KvCacheType::F16 => return Ok(None),
        quantized => quantized.bits() as i32,
    };
    let group_size = options.kv_group_size.unwrap_or(DEFAULT_KV_GROUP_SIZE);
    if ![32, 64, 128].contains(&group_size) || head_dim % group_size != 0 {
        return Err(Error::Config(format!(
            "model `{}`: engine_options.kv_group_size = {group_size} must be 32, 64 or 128 and \
             divide the head dimension ({head_dim})",
            spec.id
        )));
    }
    Ok(Some(KvQuantization { bits, group_size }))
}

/// Rows of input from which weights kept quantized on the CPU are dequantized for a BLAS product
/// (batched decoding, prompt chunks): measured here for a 1536x576 4-bit product, MLX's
/// quantized kernel takes 1.0 / 1.7 / 3.5 / 6.7 ms for 1 / 2 / 4 / 8 rows, dequantizing ~2.7 ms.
const DENSE_PRODUCT_ROWS: i32 = 4;

/// The device MLX computes on: `cpu`, `metal` or `cuda`.
pub fn device_name() -> String {
    match Device::try_default().and_then(|d| d.get_type()) {
        Ok(DeviceType::Gpu) if cfg!(target_os = "macos") => "metal".into(),
        Ok(DeviceType::Gpu) => "cuda".into(),
        _ => "cpu".into(),
    }
}

/// Whether attention over a quantized KV cache runs MLX's quantized matmul on the packed
/// history (CPU, Metal); MLX 0.32's CUDA backend has no quantized matmul for those shapes
/// ("No implementation for problem shape: 27x27x64x9"), so there the history is dequantized for
/// float attention.
pub fn quantized_attention_kernels() -> bool {
    static KERNELS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KERNELS.get_or_init(|| device_name() != "cuda")
}

/// Whether MLX computes on the CPU.
fn on_cpu() -> bool {
    Device::try_default()
        .and_then(|d| d.get_type())
        .map_or(true, |t| matches!(t, DeviceType::Cpu))
}

/// Dense f32 weights when MLX computes on the CPU and they fit the limit; as stored otherwise
/// (GPU, Metal, or larger models).
fn choose_layout(parameters: u64, options: &MlxOptions) -> Layout {
    let on_cpu = on_cpu();
    let limit_mb = std::env::var(DENSE_LIMIT_VAR)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .or(options.cpu_dense_max_mb)
        .unwrap_or(DEFAULT_DENSE_LIMIT_MB);
    if !on_cpu {
        Layout::AsStored
    } else if parameters.saturating_mul(4) <= limit_mb << 20 {
        Layout::DenseF32
    } else {
        Layout::PackedF32
    }
}

/// A loaded model: the evaluator for its thread, and what the request path needs.
pub struct LoadedParts {
    /// Drives the model for the generation core.
    pub evaluator: MlxEvaluator,
    /// The vocabulary for the generation core.
    pub vocabulary: Vocabulary,
    /// The tokenizer, for the request path.
    pub tokenizer: ModelTokenizer,
    /// The chat template, if the model has one.
    pub template: Option<ChatTemplate>,
    /// Where its layers run.
    pub placement: Vec<ModelPart>,
    /// Set when the MLX ring it is split over breaks.
    pub ring_failure: Option<RingFailure>,
}

/// Load `spec`'s directory.
pub fn load(spec: &LoadSpec) -> Result<LoadedParts> {
    let dir = spec.path.as_path();
    // Detection validated config.json, every shard and every tensor header.
    let ModelHeader::Safetensors(files) = &spec.detected.header else {
        return Err(Error::invalid_model(
            dir,
            "not a safetensors model directory",
        ));
    };
    let options: MlxOptions = spec.options.engine.parse(ENGINE_NAME)?;
    let config_path = dir.join("config.json");
    let config = ModelConfig::from_json(&files.config, &config_path)?;
    let (tokenizer, vocabulary, template) = ModelTokenizer::load(dir, &config)?;
    let threads = spec.options.threads.unwrap_or_else(default_threads);
    let kv_quantization = kv_quantization(spec, &options, config.head_dim())?;
    let ring = match &options.hostfile {
        Some(_) if kv_quantization.is_some() => {
            return Err(Error::Config(format!(
                "model `{}`: a model split over an MLX ring keeps a float KV cache; drop \
                 kv_cache_type or engine_options.hostfile",
                spec.id
            )))
        }
        Some(hostfile) => Some(Ring::join(hostfile, 0, Some(RING_PATIENCE))?),
        None => None,
    };
    let all = 0..config.num_hidden_layers;
    let (layers, placement) = match ring {
        Some(ring) => (
            ring.stage(all.len()),
            ring.placement(all.len(), &device_name()),
        ),
        None => (
            all.clone(),
            vec![ModelPart {
                device: device_name(),
                first_layer: 0,
                layers: all.len() as u32,
                output: true,
            }],
        ),
    };
    let model = build(dir, files, &options, &config, &config_path, threads, layers)?;
    let pipeline = ring.map(Pipeline::new);
    let trained = config
        .max_position_embeddings
        .unwrap_or(DEFAULT_CONTEXT_CAP);
    let context_size = spec
        .options
        .context_size
        .unwrap_or_else(|| trained.min(DEFAULT_CONTEXT_CAP))
        .max(1);
    let limits = Limits {
        kv_cells: context_size as usize,
        slots: spec.options.parallel.unwrap_or(DEFAULT_PARALLEL).max(1),
        batch_tokens: PREFILL_CHUNK,
        prompt_store_bytes: spec.options.prompt_store_bytes(),
    };
    tracing::info!(
        model = %spec.id,
        context_size,
        slots = limits.slots,
        layers = model.layers(),
        blas = crate::blas::name(),
        threads,
        ?kv_quantization,
        "MLX model ready"
    );
    Ok(LoadedParts {
        ring_failure: pipeline.as_ref().map(Pipeline::failure),
        evaluator: MlxEvaluator::new(model, limits, kv_quantization, pipeline),
        vocabulary,
        tokenizer,
        template,
        placement,
    })
}

/// The transformer of `dir` with the blocks of `layers`, its weights in the layout that suits
/// the device.
fn build(
    dir: &Path,
    files: &SafetensorsDir,
    options: &MlxOptions,
    config: &ModelConfig,
    config_path: &Path,
    threads: usize,
    layers: std::ops::Range<usize>,
) -> Result<Transformer> {
    crate::blas::set_threads(threads);
    let layout = choose_layout(files.parameter_count, options);
    let dense_from_rows = (layout == Layout::PackedF32).then_some(DENSE_PRODUCT_ROWS);
    tracing::info!(?layout, ?layers, "MLX weights");
    // Blocks outside `layers` are never read.
    let keep = |name: &str| {
        name.strip_prefix("model.layers.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|index| index.parse::<usize>().ok())
            .is_none_or(|index| layers.contains(&index))
    };
    let prefix = &config.weight_prefix;
    let mut weights = Weights::load(dir, &files.shards, layout, dense_from_rows, prefix, &keep)?;
    Transformer::new(config, config_path, &mut weights, layers)
}

/// Be rank `rank` (not 0) of the MLX ring of `hostfile` for the model directory `dir`: join the
/// ring, load this rank's share of the layers and serve it until rank 0 stops or goes away.
pub fn serve_rank(dir: &Path, hostfile: &Path, rank: usize, threads: usize) -> Result<()> {
    if rank == 0 {
        return Err(Error::Config(
            "rank 0 is the serving minerva: set the model's engine_options.hostfile there".into(),
        ));
    }
    let detected = minerva_core::detect(dir)?;
    let ModelHeader::Safetensors(files) = &detected.header else {
        return Err(Error::invalid_model(
            dir,
            "not a safetensors model directory",
        ));
    };
    let config_path = dir.join("config.json");
    let config = ModelConfig::from_json(&files.config, &config_path)?;
    // Rank 0 may load the model much later (on its first request): wait for it.
    let ring = Ring::join(hostfile, rank, None)?;
    let layers = ring.stage(config.num_hidden_layers);
    tracing::info!(rank, ?layers, "MLX ring: loading this rank's layers");
    let model = build(
        dir,
        files,
        &MlxOptions::default(),
        &config,
        &config_path,
        threads,
        layers,
    )?;
    serve_stage(ring, &model)
}
