//! The MLX engine's model families against Python mlx_lm's own implementation of each. For every
//! case, tests/python/mlx_reference.py builds a small random-weight model with mlx_lm's classes,
//! saves it as mlx_lm converts a checkpoint (float32 weights, or 4-bit groups of 64) and decodes
//! a fixed prompt greedily with mlx_lm's own cache (float, or 8-bit groups of 64 as its
//! `kv_bits=8`). The engine loads that directory and, greedy on the same prompt, must choose
//! mlx_lm's token at every step (until mlx_lm's two likeliest are a near-tie) with each
//! log-probability, the five likeliest alternatives' included, within [`TOLERANCE`]. 4-bit weights
//! run both as the CPU default (dequantized to f32) and with MLX's quantized kernels (float32
//! scales); 4-bit weights with bfloat16 scales and floats, on the CPU, too (computed in float32
//! on both sides; on a GPU the engine computes in bfloat16, so they are skipped there by name).
//!
//! An 8-bit cache rounds each key and value to one of 256 levels of its group, and a value at the
//! boundary between two goes either way with the smallest float difference before it; such flips
//! move these sharp random models' log-probabilities by up to a few 1e-2. So with that cache each
//! run may be off by [`TOLERANCE`] plus the "spread" of mlx_lm's own answer when its embedding is
//! perturbed by 1e-5 (relative, more than the engine's float noise), and most runs must be within
//! [`TOLERANCE`] itself: flips are rare at the engine's float noise, while a systematic
//! difference (a float prompt pass, other groups) shows in every run.
//!
//! A family is one [`Family`] entry in either table (two tests, for two cores). Where cargo is
//! not (a prebuilt test binary on the GPU machine), `MINERVA_TEST_PYTHON` names a Python with
//! mlx_lm (default: the project's venv) and `MINERVA_WORKSPACE` the checkout that holds
//! tests/python.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use minerva_backend_mlx::MlxEngine;
use minerva_runtime::{
    Config, GenerationRequest, InferenceBackend, Input, KvCacheType, ModelConfig, Router, Runtime,
    SamplingParams, TokenLogprob,
};
use minerva_tests::{smollm2_mlx, venv_python, workspace_root};
use serde_json::{json, Value};

/// One model family: mlx_lm's `model_type` and the rest of a small `config.json` (its
/// `vocab_size` is the tokenizer's, set by the reference). Head dimensions are 64: the 8-bit KV
/// cache's groups of 64 must divide them.
struct Family {
    /// Names its cases, e.g. `llama-tied`.
    name: &'static str,
    model_type: &'static str,
    config: &'static str,
}

/// Llama and Qwen.
const LLAMA_AND_QWEN: &[Family] = &[
    // Grouped-query attention with a head dimension of its own, separate output head.
    Family {
        name: "llama-gqa",
        model_type: "llama",
        config: r#"{"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": false,
            "max_position_embeddings": 2048}"#,
    },
    // Llama 3.2's shape: tied embeddings, Llama 3 RoPE scaling.
    Family {
        name: "llama-tied",
        model_type: "llama",
        config: r#"{"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256,
            "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0, "tie_word_embeddings": true,
            "max_position_embeddings": 131072, "rope_scaling": {"factor": 32.0,
            "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"}}"#,
    },
    // Biases on the query, key and value projections.
    Family {
        name: "qwen2",
        model_type: "qwen2",
        config: r#"{"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256,
            "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "tie_word_embeddings": true,
            "max_position_embeddings": 32768}"#,
    },
    // RMSNorm on each query and key head.
    Family {
        name: "qwen3",
        model_type: "qwen3",
        config: r#"{"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true,
            "max_position_embeddings": 40960}"#,
    },
];

/// Gemma 3 and mixtures of experts. Gemma 3 slides a window of 8 over the 64-token prompt on
/// every other layer; mlx_lm keeps no quantized cache for such layers, so its 8-bit KV cases are
/// reported unavailable.
const GEMMA3_AND_EXPERTS: &[Family] = &[
    Family {
        name: "gemma3_text",
        model_type: "gemma3_text",
        config: r#"{"hidden_size": 128, "num_hidden_layers": 4, "intermediate_size": 256,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64,
            "query_pre_attn_scalar": 64, "sliding_window": 8, "sliding_window_pattern": 2,
            "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rms_norm_eps": 1e-6,
            "max_position_embeddings": 32768, "tie_word_embeddings": true}"#,
    },
    // The multimodal wrapper, saved text-only (its language model's weights and config).
    Family {
        name: "gemma3",
        model_type: "gemma3",
        config: r#"{"text_config": {"model_type": "gemma3_text", "hidden_size": 128,
            "num_hidden_layers": 4, "intermediate_size": 256, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 64, "query_pre_attn_scalar": 64,
            "sliding_window": 8, "sliding_window_pattern": 2, "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0, "rms_norm_eps": 1e-6,
            "max_position_embeddings": 32768, "tie_word_embeddings": true}}"#,
    },
    Family {
        name: "qwen3_moe",
        model_type: "qwen3_moe",
        config: r#"{"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
            "num_experts": 4, "num_experts_per_tok": 2, "decoder_sparse_step": 1,
            "mlp_only_layers": [], "moe_intermediate_size": 128, "norm_topk_prob": true,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": false,
            "max_position_embeddings": 40960}"#,
    },
    Family {
        name: "qwen2_moe",
        model_type: "qwen2_moe",
        config: r#"{"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256,
            "num_attention_heads": 2, "num_key_value_heads": 1, "num_experts": 4,
            "num_experts_per_tok": 2, "moe_intermediate_size": 128,
            "shared_expert_intermediate_size": 256, "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0, "tie_word_embeddings": false}"#,
    },
    Family {
        name: "mixtral",
        model_type: "mixtral",
        config: r#"{"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 256,
            "num_attention_heads": 2, "num_key_value_heads": 1, "num_local_experts": 4,
            "num_experts_per_tok": 2, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0,
            "tie_word_embeddings": false}"#,
    },
];

/// How one family's model is stored and run.
#[derive(Clone, Copy)]
enum Variant {
    /// Float32 weights, float KV cache.
    Float,
    /// 4-bit weights (groups of 64), float KV cache.
    Q4,
    /// Float32 weights, 8-bit KV cache (groups of 64).
    Kv8,
    /// 4-bit weights with bfloat16 scales and bfloat16 floats (as mlx-community checkpoints),
    /// float KV cache: on the CPU the engine computes in float32 over those values, as the
    /// reference does.
    Q4Bf16,
}

impl Variant {
    const ALL: [Variant; 4] = [Variant::Float, Variant::Q4, Variant::Kv8, Variant::Q4Bf16];

    fn name(self) -> &'static str {
        match self {
            Variant::Float => "f32",
            Variant::Q4 => "q4",
            Variant::Kv8 => "kv8",
            Variant::Q4Bf16 => "q4-bf16",
        }
    }

    /// Prompt tokens and greedy steps. An 8-bit cache's rounding flips grow in number with the
    /// positions cached, so its runs keep the length its allowance was measured at.
    fn length(self) -> (usize, usize) {
        match self {
            Variant::Float | Variant::Q4 | Variant::Q4Bf16 => (64, 32),
            Variant::Kv8 => (24, 12),
        }
    }

    /// The `cpu_dense_max_mb` settings the engine runs it with: the default (small models
    /// dequantized to f32 on the CPU), and for 4-bit weights also 0 (MLX's quantized kernels).
    fn dense_limits(self) -> &'static [Option<u64>] {
        match self {
            Variant::Q4 | Variant::Q4Bf16 => &[None, Some(0)],
            Variant::Float | Variant::Kv8 => &[None],
        }
    }
}

/// Largest difference allowed between the engine's log-probabilities and mlx_lm's (float
/// caches: measured differences are below 1e-4).
const TOLERANCE: f32 = 2e-3;
/// Seed of the random weights.
const SEED: u64 = 7;

/// The prompt: `len` ordinary tokens spread over SmolLM2's vocabulary (past its special ones).
fn prompt(len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| 100 + i * 1999 % 49_000).collect()
}

/// The Python that runs the reference: `$MINERVA_TEST_PYTHON`, else the project's venv.
fn reference_python() -> PathBuf {
    std::env::var_os("MINERVA_TEST_PYTHON").map_or_else(venv_python, PathBuf::from)
}

/// mlx_lm's greedy answer for one case: at each step the chosen token, its log-probability, its
/// lead over the runner-up and the five likeliest (id, log-probability).
struct Answer {
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    margins: Vec<f32>,
    top: Vec<Vec<(u32, f32)>>,
    /// How far those log-probabilities move when the embedding is perturbed by float-noise-sized
    /// amounts (NOISE in mlx_reference.py); measured with the 8-bit cache only, 0 otherwise.
    spread: f32,
}

/// mlx_lm's answer, or why mlx_lm cannot run the case on this machine.
type Reference = Result<Answer, String>;

/// One family in one variant.
struct Case<'a> {
    family: &'a Family,
    variant: Variant,
    dir: PathBuf,
}

impl Case<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.family.name, self.variant.name())
    }
}

/// Build, save and run every case with mlx_lm; its answers in the order of `cases`.
fn mlx_lm(cases: &[Case]) -> Vec<Reference> {
    let request = json!({
        "tokenizer": smollm2_mlx(),
        "seed": SEED,
        "cases": cases.iter().map(|c| json!({
            "name": c.name(),
            "prompt": prompt(c.variant.length().0),
            "steps": c.variant.length().1,
            "model_type": c.family.model_type,
            "config": serde_json::from_str::<Value>(c.family.config).expect("config is JSON"),
            "quantize": matches!(c.variant, Variant::Q4 | Variant::Q4Bf16),
            "bfloat16": matches!(c.variant, Variant::Q4Bf16),
            "kv_bits": matches!(c.variant, Variant::Kv8).then_some(8),
            "dir": c.dir,
        })).collect::<Vec<_>>(),
    });
    let output = Command::new(reference_python())
        .current_dir(workspace_root())
        .env("HF_HUB_OFFLINE", "1")
        .arg("tests/python/mlx_reference.py")
        .arg(request.to_string())
        .output()
        .expect("the reference Python runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mlx_reference.py failed: {stderr}");
    let answer: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    let list = |v: &Value| v.as_array().expect("a list").clone();
    let id = |v: &Value| v.as_u64().expect("a token id") as u32;
    let float = |v: &Value| v.as_f64().expect("a number") as f32;
    let results = answer["cases"].as_array().expect("cases");
    assert_eq!(results.len(), cases.len());
    results
        .iter()
        .zip(cases)
        .map(|(r, case)| {
            assert_eq!(r["name"], case.name());
            if let Some(why) = r["reference_unavailable"].as_str() {
                return Err(why.to_string());
            }
            Ok(Answer {
                tokens: list(&r["tokens"]).iter().map(id).collect(),
                logprobs: list(&r["logprobs"]).iter().map(float).collect(),
                margins: list(&r["margins"]).iter().map(float).collect(),
                top: list(&r["top"])
                    .iter()
                    .map(|step| {
                        list(step)
                            .iter()
                            .map(|p| (id(&p[0]), float(&p[1])))
                            .collect()
                    })
                    .collect(),
                spread: r.get("spread").map_or(0.0, float),
            })
        })
        .collect()
}

/// The engine's greedy continuation of the case's [`prompt`] on its directory, with five alternatives
/// a step.
async fn engine(case: &Case<'_>, dense_limit: Option<u64>) -> Result<Vec<TokenLogprob>, String> {
    let mut entry = ModelConfig::new("case", case.dir.display().to_string());
    if matches!(case.variant, Variant::Kv8) {
        entry.kv_cache_type = Some(KvCacheType::Q8_0);
    }
    if let Some(limit) = dense_limit {
        entry
            .engine_options
            .0
            .insert("cpu_dense_max_mb".into(), limit.into());
    }
    let config = Config {
        context_size: Some(256),
        threads: Some(2),
        parallel: Some(1),
        models: vec![entry],
        ..Default::default()
    };
    let engines: Vec<Arc<dyn InferenceBackend>> = vec![Arc::new(MlxEngine::new())];
    let runtime = Runtime::new(config, Router::new(engines));
    let model = runtime.load("case").await.map_err(|e| e.to_string())?;
    let (len, steps) = case.variant.length();
    let mut r = GenerationRequest::new(Input::Tokens(prompt(len)));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(steps as u32);
    r.ignore_eos = true;
    r.logprobs = Some(5);
    let mut completion = model.generate(r).await.map_err(|e| e.to_string())?;
    Ok(completion.choices.remove(0).logprobs.expect("logprobs"))
}

/// Compare the engine's steps with mlx_lm's, pushing each disagreement to `failures` (prefixed
/// with `case`); returns the steps compared, the largest log-probability difference seen and the
/// tolerance applied.
fn compare(
    case: &str,
    answer: &Answer,
    ours: &[TokenLogprob],
    failures: &mut Vec<String>,
) -> (usize, f32, f32) {
    let Answer {
        tokens,
        logprobs,
        margins,
        top,
        spread,
    } = answer;
    if ours.len() != tokens.len() {
        failures.push(format!(
            "{case}: {} steps, not {}",
            ours.len(),
            tokens.len()
        ));
    }
    let tolerance = TOLERANCE + spread;
    // Where mlx_lm's likeliest two are closer than this, the engine may rightly pick the other.
    let near_tie = 2.0 * tolerance;
    let (mut compared, mut largest) = (0, 0f32);
    let mut check = |what: String, want: f32, got: f32, failures: &mut Vec<String>| {
        let off = (got - want).abs();
        largest = largest.max(off);
        if off >= tolerance {
            failures.push(format!(
                "{case} step {what}: mlx_lm {want}, engine {got} ({off:.2e} apart)"
            ));
        }
    };
    for (step, ours) in ours.iter().enumerate().take(tokens.len()) {
        let (token, margin) = (tokens[step], margins[step]);
        if ours.token.id != token {
            if margin >= near_tie {
                failures.push(format!(
                    "{case} step {step}: mlx_lm picked {token} by {margin}, the engine {} \
                     (logprob {})",
                    ours.token.id, ours.token.logprob
                ));
            }
            break;
        }
        let (want, got) = (logprobs[step], ours.token.logprob);
        check(format!("{step} token {token}"), want, got, failures);
        let last = ours.top.last().map_or(f32::NEG_INFINITY, |t| t.logprob);
        for &(id, want) in &top[step] {
            match ours.top.iter().find(|t| t.id == id) {
                Some(alt) => check(
                    format!("{step} alternative {id}"),
                    want,
                    alt.logprob,
                    failures,
                ),
                // Missing only at the cut-off: as likely as the engine's last one.
                None if want <= last + near_tie => {}
                None => failures.push(format!(
                    "{case} step {step}: alternative {id} (mlx_lm {want}) is not among the \
                     engine's {:?}",
                    ours.top
                        .iter()
                        .map(|t| (t.id, t.logprob))
                        .collect::<Vec<_>>()
                )),
            }
        }
        compared += 1;
    }
    (compared, largest, tolerance)
}

/// Every variant of every family in `families`, reference against engine; panics listing every
/// disagreement.
async fn check(families: &[Family]) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let cases: Vec<Case> = families
        .iter()
        .flat_map(|family| {
            let dir = dir.path();
            Variant::ALL.into_iter().map(move |variant| Case {
                family,
                variant,
                dir: dir.join(format!("{}-{}", family.name, variant.name())),
            })
        })
        .collect();
    let references = mlx_lm(&cases);
    let device = MlxEngine::new().device();
    let mut failures = Vec::new();
    // Runs with an 8-bit cache, and those of them within TOLERANCE.
    let (mut rounded, mut exact) = (0, 0);
    for (case, reference) in cases.iter().zip(&references) {
        let answer = match reference {
            Ok(answer) => answer,
            Err(why) => {
                println!("{}: skipped, mlx_lm cannot run it here: {why}", case.name());
                continue;
            }
        };
        if matches!(case.variant, Variant::Q4Bf16) && !device.starts_with("cpu") {
            println!(
                "{}: skipped on {device}, where the engine computes in bfloat16 (the reference \
                 in float32)",
                case.name()
            );
            continue;
        }
        for &limit in case.variant.dense_limits() {
            let name = match limit {
                None => case.name(),
                Some(mb) => format!("{} (cpu_dense_max_mb = {mb})", case.name()),
            };
            let ours = match engine(case, limit).await {
                Ok(ours) => ours,
                Err(e) => {
                    failures.push(format!("{name}: the engine failed: {e}"));
                    continue;
                }
            };
            let (compared, largest, tolerance) = compare(&name, answer, &ours, &mut failures);
            let steps = answer.tokens.len();
            println!(
                "{name}: {compared}/{steps} steps compared, largest logprob difference \
                 {largest:.2e} (allowed {tolerance:.2e})"
            );
            if answer.spread > 0.0 {
                rounded += 1;
                exact += usize::from(largest < TOLERANCE);
            }
            // The rest may follow a near-tie that parted the two.
            let least = steps * 3 / 4;
            if compared < least {
                failures.push(format!(
                    "{name}: only {compared} of {steps} steps compared (at least {least})"
                ));
            }
        }
    }
    if exact * 2 < rounded {
        failures.push(format!(
            "only {exact} of {rounded} runs with an 8-bit cache within {TOLERANCE}: more than \
             rare rounding flips"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} disagreements with mlx_lm:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_and_qwen_compute_as_mlx_lm_does() {
    check(LLAMA_AND_QWEN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemma3_and_mixtures_of_experts_compute_as_mlx_lm_does() {
    check(GEMMA3_AND_EXPERTS).await;
}
