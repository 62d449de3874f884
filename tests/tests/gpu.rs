//! Both engines on an NVIDIA GPU: all of the llama engine's layers and the MLX engine's arrays on
//! the GPU, with the greedy answer the CPU gives. Where no GPU is visible the test says why it
//! skips; `benches/gpu test` runs this binary on the workplace's GPU machine.

use std::io::Write;

use minerva_tests::{engine_device, minerva, run, smollm2_gguf, smollm2_mlx, FRANCE, SYSTEM};

/// Each engine's device as `minerva engines` reports it.
fn devices() -> (String, String) {
    (
        engine_device(minerva(), "llama"),
        engine_device(minerva(), "mlx"),
    )
}

/// The greedy answer of `model` (a configured id in `config`, or a path) to the France prompt.
fn answer(model: &str, config: Option<&std::path::Path>) -> String {
    let mut cmd = minerva();
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let (ok, out, err) = run(cmd
        .args(["run", model, "--prompt", FRANCE, "--system", SYSTEM])
        .args(["--temperature", "0", "--max-tokens", "24"]));
    assert!(ok, "{model}: {err}");
    out.trim().to_string()
}

#[test]
fn both_engines_run_on_the_gpu_and_answer_as_the_cpu_does() {
    let (llama, mlx) = devices();
    if !llama.starts_with("cuda") && mlx != "cuda" {
        // Straight to stderr, past the test harness's capture, so that the skip shows.
        let _ = writeln!(
            std::io::stderr(),
            "tests/gpu.rs skipped: no NVIDIA GPU visible (llama engine on `{llama}`, MLX engine \
             on `{mlx}`); it needs an NVIDIA driver, libggml-cuda.so beside the binary \
             (scripts/build-ggml-cuda) and libmlx.so of mlx-cuda-13 on the library path"
        );
        return;
    }
    assert!(llama.starts_with("cuda ("), "llama engine on {llama}");
    assert_eq!(mlx, "cuda", "MLX engine on {mlx}");

    let gguf = smollm2_gguf();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("minerva.toml");
    std::fs::write(
        &config,
        format!(
            "[[models]]\nid = \"cpu\"\npath = \"{}\"\n[models.engine_options]\ngpu_layers = 0\n",
            gguf.display()
        ),
    )
    .unwrap();
    let on_cpu = answer("cpu", Some(&config));
    assert!(on_cpu.contains("Paris"), "{on_cpu}");
    let llama_gpu = answer(gguf.to_str().unwrap(), None);
    assert_eq!(llama_gpu, on_cpu, "llama engine: GPU vs CPU");
    let mlx_gpu = answer(smollm2_mlx().to_str().unwrap(), None);
    assert_eq!(
        mlx_gpu, on_cpu,
        "MLX engine on the GPU vs llama.cpp on the CPU, same weights"
    );

    // `inspect` names the GPU the model would run on.
    let (ok, out, err) = run(minerva().args(["inspect", gguf.to_str().unwrap(), "--json"]));
    assert!(ok, "{err}");
    let facts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(facts["device"].as_str(), Some(llama.as_str()), "{out}");
}
