//! The MLX engine on real weights: the SmolLM2 GGUF converted to its MLX twin by `minerva
//! convert`. Greedy output must equal llama.cpp's on the GGUF token for token, with the weights
//! kept quantized (MLX's quantized kernels) and dequantized to f32 (the CPU default); both
//! engines live in one process; bad model directories fail naming the file.

use std::path::Path;

use minerva_backend_llama::LlamaEngine;
use minerva_backend_mlx::MlxEngine;
use minerva_runtime::{
    Config, GenerationRequest, InferenceBackend, ModelHandle, Router, Runtime, SamplingParams,
};
use minerva_tests::{minerva, run, smollm2_gguf, smollm2_mlx, FRANCE, SYSTEM};

/// Keeps every MLX weight quantized (0 MB of dense f32 allowed).
const QUANTIZED: &str = "0";
/// The default: small models dequantized to f32 on the CPU.
const DENSE: &str = "2048";
const DENSE_LIMIT_VAR: &str = "MINERVA_MLX_CPU_DENSE_MAX_MB";

/// `minerva run` greedy text of `tokens` tokens (past end-of-sequence) for `prompt`.
fn greedy_run(model: &Path, prompt: &str, tokens: &str, dense_limit: &str) -> String {
    let mut cmd = minerva();
    cmd.env(DENSE_LIMIT_VAR, dense_limit)
        .arg("run")
        .arg(model)
        .args([
            "--system", SYSTEM, "--prompt", prompt, "-t", "0", "-n", tokens,
        ])
        .arg("--ignore-eos");
    let (ok, out, err) = run(&mut cmd);
    assert!(ok, "{err}");
    out
}

#[test]
fn greedy_tokens_equal_llama_cpp_on_the_same_weights() {
    let twin = smollm2_mlx();
    for prompt in [FRANCE, "Write a long story about a dragon."] {
        let llama = greedy_run(&smollm2_gguf(), prompt, "16", DENSE);
        for layout in [QUANTIZED, DENSE] {
            let mlx = greedy_run(&twin, prompt, "16", layout);
            assert_eq!(mlx, llama, "prompt {prompt:?}, dense limit {layout} MB");
        }
    }
    assert!(greedy_run(&twin, FRANCE, "8", QUANTIZED).contains("Paris"));
}

async fn load(runtime: &Runtime, model: &Path) -> ModelHandle {
    runtime.load(model.to_str().unwrap()).await.expect("loads")
}

fn france(max_tokens: u32) -> GenerationRequest {
    let mut r = GenerationRequest::chat(FRANCE, Some(SYSTEM.to_string()));
    r.sampling = SamplingParams::greedy();
    r.max_tokens = Some(max_tokens);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_serve_in_one_process_and_mlx_reads_gguf_itself() {
    let engines: Vec<std::sync::Arc<dyn InferenceBackend>> = vec![
        std::sync::Arc::new(LlamaEngine::new()),
        std::sync::Arc::new(MlxEngine::new()),
    ];
    let runtime = Runtime::new(
        Config {
            context_size: Some(512),
            ..Default::default()
        },
        Router::new(engines),
    );
    let llama = load(&runtime, &smollm2_gguf()).await;
    let mlx = load(&runtime, &smollm2_mlx()).await;
    assert_eq!(llama.model().descriptor().engine, "llama");
    assert_eq!(mlx.model().descriptor().engine, "mlx");
    let (a, b) = tokio::join!(llama.generate(france(12)), mlx.generate(france(12)));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.usage.prompt_tokens, 27);
    assert_eq!(b.usage.prompt_tokens, 27);
    assert_eq!(a.text(), b.text());
    assert!(b.text().contains("Paris"), "{}", b.text());

    // A second request with the same prompt reuses the cached prefix.
    let again = mlx.generate(france(4)).await.unwrap();
    assert!(again.usage.cached_tokens > 0, "{:?}", again.usage);
    assert!(b.text().starts_with(again.text()));

    // libmlx's own GGUF reader, in the process that also holds ggml: its gguf_* functions must
    // be its own (ggml exports a same-named gguf_get_key with another signature).
    let gguf = mlx_rs::io::GgufFile::load(smollm2_gguf()).expect("MLX reads the GGUF");
    let arch = gguf.get_metadata_string("general.architecture").unwrap();
    assert_eq!(arch.as_deref(), Some("llama"));
    assert!(gguf.array_keys().unwrap().len() > 200);
}

#[test]
fn routing_picks_the_engine_by_format_and_config_overrides_it() {
    for (model, engine) in [(smollm2_mlx(), "mlx"), (smollm2_gguf(), "llama")] {
        let (ok, out, err) = run(minerva().arg("inspect").arg(&model).arg("--json"));
        assert!(ok, "{err}");
        let info: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(info["engine"], engine, "{out}");
    }
    // --backend names the engine explicitly; an engine that cannot read the format says so.
    let (ok, out, err) = run(minerva().arg("run").arg(smollm2_mlx()).args([
        "--backend",
        "mlx",
        "--prompt",
        FRANCE,
        "-t",
        "0",
        "-n",
        "4",
    ]));
    assert!(ok && !out.is_empty(), "{err}");
    let (ok, _, err) = run(minerva().arg("run").arg(smollm2_mlx()).args([
        "--backend",
        "llama",
        "--prompt",
        FRANCE,
        "-n",
        "4",
    ]));
    assert!(!ok && err.contains("llama"), "{err}");

    // A config entry routes a model id to an engine.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("minerva.toml");
    let write = |backend: &str| {
        std::fs::write(
            &config,
            format!(
                "[[models]]\nid = \"twin\"\npath = {:?}\nbackend = \"{backend}\"\n",
                smollm2_mlx()
            ),
        )
        .unwrap();
    };
    write("mlx");
    let (ok, out, err) = run(minerva().arg("--config").arg(&config).args([
        "run", "twin", "--system", SYSTEM, "--prompt", FRANCE, "-t", "0", "-n", "8",
    ]));
    assert!(ok && out.contains("Paris"), "{out}{err}");
    write("llama");
    let (ok, _, err) = run(minerva()
        .arg("--config")
        .arg(&config)
        .args(["run", "twin", "--prompt", FRANCE, "-n", "4"]));
    assert!(!ok && err.contains("llama"), "{err}");
}

/// A copy of the twin (weights linked, small files copied) to break in one way.
fn broken_twin(dir: &Path, edit: impl FnOnce(&Path)) -> std::path::PathBuf {
    let out = dir.join("broken");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(smollm2_mlx()).unwrap() {
        let path = entry.unwrap().path();
        let target = out.join(path.file_name().unwrap());
        if path.extension().is_some_and(|e| e == "safetensors") {
            std::os::unix::fs::symlink(&path, &target).unwrap();
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
    edit(&out);
    out
}

fn run_error(model: &Path) -> String {
    let (ok, _, err) = run(minerva()
        .arg("run")
        .arg(model)
        .args(["--prompt", "hi", "-n", "2"]));
    assert!(!ok, "a broken model ran");
    err
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, value.to_string()).unwrap();
}

#[test]
fn broken_model_directories_fail_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing_shard = broken_twin(&dir.path().join("a"), |d| {
        let index = serde_json::json!({"weight_map": {
            "model.norm.weight": "model.safetensors",
            "lm_head.weight": "model-00002-of-00002.safetensors"
        }});
        std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    });
    let err = run_error(&missing_shard);
    assert!(
        err.contains("model-00002-of-00002.safetensors") && err.contains("missing"),
        "{err}"
    );

    let unknown_arch = broken_twin(&dir.path().join("b"), |d| {
        edit_json(&d.join("config.json"), |c| {
            c["model_type"] = "gpt_neox".into()
        });
    });
    let err = run_error(&unknown_arch);
    assert!(
        err.contains("config.json") && err.contains("gpt_neox") && err.contains("qwen3"),
        "{err}"
    );

    let wrong_vocab = broken_twin(&dir.path().join("c"), |d| {
        edit_json(&d.join("config.json"), |c| c["vocab_size"] = 1000.into());
    });
    let err = run_error(&wrong_vocab);
    assert!(
        err.contains("tokenizer.json") && err.contains("vocab_size"),
        "{err}"
    );

    let no_tokenizer = broken_twin(&dir.path().join("d"), |d| {
        std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    });
    assert!(run_error(&no_tokenizer).contains("tokenizer.json"));
}

#[test]
fn our_own_4_bit_quantization_runs_on_mlx() {
    let dir = tempfile::tempdir().unwrap();
    let float = dir.path().join("f32");
    let q4 = dir.path().join("q4");
    let (ok, _, err) = run(minerva()
        .arg("convert")
        .arg(smollm2_gguf())
        .arg(&float)
        .args(["--dtype", "f32"]));
    assert!(ok, "{err}");
    let (ok, _, err) = run(minerva().arg("convert").arg(&float).arg(&q4).args([
        "--q-bits",
        "4",
        "--q-group-size",
        "32",
    ]));
    assert!(ok, "{err}");
    std::fs::remove_dir_all(&float).unwrap();
    for layout in [QUANTIZED, DENSE] {
        let mut cmd = minerva();
        cmd.env(DENSE_LIMIT_VAR, layout).arg("run").arg(&q4).args([
            "--system", SYSTEM, "--prompt", FRANCE, "-t", "0", "-n", "12",
        ]);
        let (ok, out, err) = run(&mut cmd);
        assert!(
            ok && out.contains("Paris"),
            "dense limit {layout}: {out}{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_seeds_stop_strings_and_cancellation_on_mlx() {
    let engines: Vec<std::sync::Arc<dyn InferenceBackend>> =
        vec![std::sync::Arc::new(MlxEngine::new())];
    let runtime = Runtime::new(Config::default(), Router::new(engines));
    let mlx = load(&runtime, &smollm2_mlx()).await;
    let sampled = |seed: u64| {
        let mut r = GenerationRequest::chat("Write a poem about the sea.", None);
        r.sampling = SamplingParams {
            temperature: Some(1.0),
            seed: Some(seed),
            repeat_penalty: Some(1.1),
            ..Default::default()
        };
        r.max_tokens = Some(24);
        r
    };
    let a = mlx.generate(sampled(1)).await.unwrap().text().to_string();
    let b = mlx.generate(sampled(1)).await.unwrap().text().to_string();
    let c = mlx.generate(sampled(2)).await.unwrap().text().to_string();
    assert_eq!(a, b, "same seed, same text");
    assert_ne!(a, c, "another seed, another text");

    let mut stop = france(24);
    stop.stop = vec!["Paris".into()];
    let cut = mlx.generate(stop).await.unwrap();
    assert_eq!(cut.finish_reason(), minerva_runtime::FinishReason::Stop);
    assert!(
        cut.text().ends_with("France is ") && !cut.text().contains("Paris"),
        "{}",
        cut.text()
    );

    // Dropping a stream mid-generation frees the model for the next request.
    let mut long = france(400);
    long.ignore_eos = true;
    let mut stream = mlx.stream(long).await.unwrap();
    use futures::StreamExt;
    assert!(stream.next().await.is_some());
    drop(stream);
    let next = tokio::time::timeout(std::time::Duration::from_secs(60), mlx.generate(france(8)))
        .await
        .expect("the model is free again")
        .unwrap();
    assert!(next.text().contains("Paris"));
}

#[test]
fn engine_options_are_checked_by_their_engine_and_choose_the_mlx_layout() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("minerva.toml");
    let run_with = |model: &Path, options: &str| {
        std::fs::write(
            &config,
            format!(
                "[[models]]\nid = \"m\"\npath = {model:?}\n[models.engine_options]\n{options}\n"
            ),
        )
        .unwrap();
        run(minerva().arg("--config").arg(&config).args([
            "--log", "info", "run", "m", "--system", SYSTEM, "--prompt", FRANCE, "-t", "0", "-n",
            "8",
        ]))
    };
    // The per-model key keeps the weights quantized (float32 scales); the default dequantizes them
    // on the CPU.
    let (ok, out, err) = run_with(&smollm2_mlx(), "cpu_dense_max_mb = 0");
    assert!(ok && out.contains("Paris"), "{err}");
    assert!(err.contains("PackedF32"), "{err}");
    let (ok, _, err) = run_with(&smollm2_mlx(), "");
    assert!(ok && err.contains("DenseF32"), "{err}");
    // Keys an engine does not know are refused by name, on both engines.
    for model in [smollm2_mlx(), smollm2_gguf()] {
        let (ok, _, err) = run_with(&model, "cpu_dense_max = 0");
        assert!(!ok && err.contains("cpu_dense_max"), "{err}");
    }
    let (ok, out, err) = run_with(&smollm2_gguf(), "batch_size = 64");
    assert!(ok && out.contains("Paris"), "{err}");
}
