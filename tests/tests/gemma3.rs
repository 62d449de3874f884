//! Gemma 3 270M (the real pretrained model, Q4_K_M GGUF) converted by `minerva convert`: every
//! weight of the MLX directory equals ggml's own dequantization of the GGUF; Python mlx_lm on
//! the directory tokenizes like llama.cpp on the GGUF, and its greedy answers are llama.cpp's
//! wherever the choice is not a near-tie; the MLX engine on the directory answers as mlx_lm
//! does, the same arithmetic to float rounding.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use minerva_backend_llama::LlamaEngine;
use minerva_backend_mlx::MlxEngine;
use minerva_convert::arch::Arch;
use minerva_runtime::format::gguf::{Arrays, GgufFile};
use minerva_runtime::{
    Config, EngineOptions, GenerationRequest, InferenceBackend, Input, ModelConfig, ModelHandle,
    Router, Runtime, SamplingParams, TokenLogprob,
};
use minerva_tests::weights::{ggml_values, map, mlx_values};
use minerva_tests::{gemma3_gguf, minerva, run, venv_python, workspace_root};
use safetensors::SafeTensors;
use serde_json::Value;

/// Raw-text prompts (the pretrained model has no chat template).
const PROMPTS: [&str; 6] = [
    "The capital of France is",
    "def fibonacci(n):",
    "Water boils at",
    "Once upon a time, in a small village",
    "The three primary colors are",
    "import numpy as np\n",
];
const STEPS: u32 = 16;

/// llama.cpp quantizes activations to 8 bits before its quantized products on the CPU and
/// keeps keys and values in float16, so its log-probabilities differ from the float32
/// computation (here by up to 0.37, at flat distributions; rounding mlx_lm's embedding scale
/// to bfloat16 or not moves them by 0.002). Where mlx_lm's likeliest two tokens are closer than
/// this, the engines may rightly pick differently.
const LLAMA_TOLERANCE: f32 = 0.6;

/// The MLX engine and mlx_lm run the same operations on the same weights; only the order of
/// float32 sums differs (measured: 4e-4 at most on this CPU).
const MLX_TOLERANCE: f32 = 2e-3;

fn convert(dir: &Path) -> PathBuf {
    let out = dir.join("gemma3-mlx");
    let (ok, stdout, err) = run(minerva().arg("convert").arg(gemma3_gguf()).arg(&out));
    assert!(ok && stdout.contains("wrote"), "{stdout}{err}");
    out
}

#[test]
fn every_converted_weight_equals_ggml_dequantization() {
    let dir = tempfile::tempdir().unwrap();
    let out = convert(dir.path());
    let gguf = GgufFile::read(&gemma3_gguf(), Arrays::Skip).unwrap();
    let gguf_map = map(&gemma3_gguf());
    let st_map = map(&out.join("model.safetensors"));
    let st = SafeTensors::deserialize(&st_map).unwrap();
    let mut types = std::collections::BTreeSet::new();
    for t in &gguf.tensors {
        let name = Arch::Gemma3.hf_name(&t.name).unwrap();
        let mut want = ggml_values(&gguf, &gguf_map, t);
        // llama.cpp stores Gemma's norms as `1 + w`; Hugging Face and mlx_lm store `w`.
        if name.ends_with("norm.weight") {
            want.iter_mut().for_each(|v| *v -= 1.0);
        }
        let got = mlx_values(&st, &name);
        assert!(got == want, "{name} ({}) differs", t.ggml_type.name);
        types.insert(t.ggml_type.name);
    }
    // The file mixes every kind of source the converter handles.
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"]
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "gemma3_text");
    assert_eq!(config["sliding_window"], 512);
    assert_eq!(config["head_dim"], 256);

    // Inspection names the widths mixed from the GGUF's block types.
    let (ok, text, err) = run(minerva().arg("inspect").arg(&out).arg("--json"));
    assert!(ok, "{err}");
    let info: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(info["engine"], "mlx");
    assert_eq!(info["parameter_count"], gguf.parameter_count());
    assert_eq!(
        info["quantization"],
        "mlx affine 5-bit, group 32 (some layers 4, 8-bit)"
    );
}

/// llama.cpp on the GGUF.
async fn load_llama() -> ModelHandle {
    let engines: Vec<Arc<dyn InferenceBackend>> = vec![Arc::new(LlamaEngine::new())];
    let config = Config {
        context_size: Some(256),
        threads: Some(2),
        ..Default::default()
    };
    let runtime = Runtime::new(config, Router::new(engines));
    let path = gemma3_gguf();
    runtime.load(path.to_str().unwrap()).await.expect("loads")
}

/// The greedy continuation of `prompt`, each token with its log-probability.
async fn greedy(model: &ModelHandle, prompt: &str) -> Vec<TokenLogprob> {
    let mut r = GenerationRequest::new(Input::Text(prompt.to_string()));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(STEPS);
    r.ignore_eos = true;
    r.logprobs = Some(1);
    let choice = model.generate(r).await.unwrap().choices.remove(0);
    choice.logprobs.expect("logprobs")
}

/// mlx_lm's greedy answer to one prompt.
struct Answer {
    prompt_ids: Vec<u32>,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    /// How far each chosen token leads the runner-up.
    margins: Vec<f32>,
}

/// mlx_lm on `mlx_dir`: its answers to [`PROMPTS`] and its token ids of `texts`.
fn mlx_lm(mlx_dir: &Path, texts: &[&str]) -> (Vec<Answer>, Vec<Vec<u32>>) {
    let output = Command::new(venv_python())
        .current_dir(workspace_root())
        .env("HF_HUB_OFFLINE", "1")
        .arg("tests/python/mlx_greedy.py")
        .arg(mlx_dir)
        .arg(STEPS.to_string())
        .arg(serde_json::to_string(&PROMPTS).unwrap())
        .arg(serde_json::to_string(texts).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&output.stdout).unwrap();
    let ids = |v: &Value| -> Vec<u32> {
        let list = v.as_array().unwrap().iter();
        list.map(|t| t.as_u64().unwrap() as u32).collect()
    };
    let floats = |v: &Value| -> Vec<f32> {
        let list = v.as_array().unwrap().iter();
        list.map(|l| l.as_f64().unwrap() as f32).collect()
    };
    let answers = v["answers"].as_array().unwrap().iter();
    let answers = answers
        .map(|a| Answer {
            prompt_ids: ids(&a["prompt_ids"]),
            tokens: ids(&a["tokens"]),
            logprobs: floats(&a["logprobs"]),
            margins: floats(&a["margins"]),
        })
        .collect();
    let tokenized = v["tokenized"].as_array().unwrap().iter().map(ids).collect();
    (answers, tokenized)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlx_lm_on_the_conversion_answers_like_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let out = convert(dir.path());
    let llama = load_llama().await;

    // Tokenization: SentencePiece with byte fallback, no space prefix, user-defined pieces.
    let texts = [
        "  two leading spaces,\ttabs\nand\n\nnewlines  ",
        "Ünïcödé, 日本語のテキスト, emoji 🙂👍🏽 and digits 1234567",
        "<start_of_turn>user\nHi<end_of_turn>\n<b>bold</b> &amp;",
        "fn main() { println!(\"{}\", x.len()); }",
    ];
    let (answers, tokenized) = mlx_lm(&out, &texts);
    let llama_ids = |text: &str| llama.model().tokenize(&Input::Text(text.into())).unwrap();
    for (text, ids) in texts.iter().zip(&tokenized) {
        assert_eq!(*ids, llama_ids(text), "{text:?}");
    }

    // Greedy answers: the same token at every step until the texts part at a near-tie.
    let mut compared = 0;
    for (prompt, want) in PROMPTS.iter().zip(&answers) {
        assert_eq!(want.prompt_ids, llama_ids(prompt), "{prompt:?}");
        let theirs = greedy(&llama, prompt).await;
        for (step, theirs) in theirs.iter().enumerate() {
            let (token, margin) = (want.tokens[step], want.margins[step]);
            if theirs.token.id != token {
                assert!(
                    margin < LLAMA_TOLERANCE,
                    "{prompt:?} step {step}: llama.cpp picked {} over {token} (margin {margin})",
                    theirs.token.id,
                );
                break;
            }
            let off = (theirs.token.logprob - want.logprobs[step]).abs();
            assert!(
                off < LLAMA_TOLERANCE,
                "{prompt:?} step {step}: {off} from llama.cpp"
            );
            compared += 1;
        }
    }
    // Most steps are compared (89 of 96 when written).
    assert!(
        compared >= 72,
        "only {compared} steps compared with llama.cpp"
    );
}

/// The MLX engine on `dir`, its weights kept as stored (`quantized`) or dequantized to float32.
async fn load_mlx(dir: &Path, quantized: bool) -> ModelHandle {
    let engines: Vec<Arc<dyn InferenceBackend>> = vec![Arc::new(MlxEngine::new())];
    let mut model = ModelConfig::for_reference(dir.to_str().unwrap());
    model.id = "gemma3".into();
    let dense_max_mb = if quantized { 0 } else { 4096 };
    model.engine_options = EngineOptions(
        [("cpu_dense_max_mb".to_string(), dense_max_mb.into())]
            .into_iter()
            .collect(),
    );
    let config = Config {
        context_size: Some(256),
        threads: Some(2),
        models: vec![model],
        ..Default::default()
    };
    let runtime = Runtime::new(config, Router::new(engines));
    runtime.load("gemma3").await.expect("loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mlx_engine_answers_like_mlx_lm() {
    let dir = tempfile::tempdir().unwrap();
    let out = convert(dir.path());
    let (answers, _) = mlx_lm(&out, &[]);
    for quantized in [false, true] {
        let mlx = load_mlx(&out, quantized).await;
        let mut worst = 0f32;
        for (prompt, want) in PROMPTS.iter().zip(&answers) {
            let ours = greedy(&mlx, prompt).await;
            for (step, ours) in ours.iter().enumerate() {
                let what = format!("{prompt:?} step {step} (quantized weights: {quantized})");
                let off = (ours.token.logprob - want.logprobs[step]).abs();
                worst = worst.max(off);
                assert!(off < MLX_TOLERANCE, "{what}: {off} from mlx_lm");
                if ours.token.id != want.tokens[step] {
                    assert!(
                        want.margins[step] < MLX_TOLERANCE,
                        "{what}: picked {} over mlx_lm's {}",
                        ours.token.id,
                        want.tokens[step]
                    );
                    break;
                }
            }
        }
        println!("quantized weights {quantized}: log-probabilities at most {worst} from mlx_lm");
    }
}
