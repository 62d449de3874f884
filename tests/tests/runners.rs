//! `minerva serve` with each model's engine in a runner process: a model whose engine dies
//! fails alone, a killed runner comes back, unloading ends the runner; both engines run as
//! runners; idle models unload and the least recently used is evicted. Driven by
//! tests/python/checks (suites `runners`, `lifecycle`, `budget`, `speculative`).

use minerva_tests::{serve_and_check, smollm2_gguf, smollm2_mlx};

#[test]
fn engines_in_runner_processes_fail_alone_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.gguf");
    std::fs::copy(smollm2_gguf(), &victim).unwrap();
    let model = |id: &str, path: &std::path::Path| {
        format!("[[models]]\nid = \"{id}\"\npath = \"{}\"\n", path.display())
    };
    let config = format!(
        "context_size = 2048\n{}{}{}",
        model("smol", &smollm2_gguf()),
        model("victim", &victim),
        model("twin", &smollm2_mlx()),
    );
    let victim = victim.display().to_string();
    serve_and_check(
        &config,
        &["--preload"],
        "runners",
        &[
            "--model",
            "smol",
            "--victim",
            "victim",
            "--twin",
            "twin",
            "--victim-path",
            &victim,
        ],
    );
}

#[test]
fn a_memory_budget_evicts_by_estimate_and_keep_alive_comes_with_requests() {
    // Each model is estimated at ~180 MiB (98 MB weights, 24 MB of KV at 1024, 64 MiB engine);
    // `huge` asks for a context whose KV alone is ~3 GB.
    serve_and_check(
        &format!(
            "context_size = 1024\nmemory_budget = \"300MiB\"\n\
             [[models]]\nid = \"smol\"\npath = \"{0}\"\n\
             [[models]]\nid = \"other\"\npath = \"{0}\"\n\
             [[models]]\nid = \"huge\"\npath = \"{0}\"\ncontext_size = 131072\n",
            smollm2_gguf().display()
        ),
        &[],
        "budget",
        &["--model", "smol", "--victim", "other", "--twin", "huge"],
    );
}

#[test]
fn a_draft_model_and_a_quantized_kv_cache_work_in_runner_processes() {
    serve_and_check(
        &format!(
            "context_size = 2048\nparallel = 4\n\
             [[models]]\nid = \"drafted\"\npath = \"{0}\"\ndraft = \"{1}\"\n\
             [[models]]\nid = \"plain\"\npath = \"{0}\"\n\
             [[models]]\nid = \"q8\"\npath = \"{0}\"\nkv_cache_type = \"q8_0\"\n",
            smollm2_gguf().display(),
            smollm2_mlx().display()
        ),
        &[],
        "speculative",
        &["--model", "drafted", "--victim", "plain", "--twin", "q8"],
    );
}

#[test]
fn idle_models_unload_and_the_least_recently_used_is_evicted() {
    serve_and_check(
        &format!(
            "context_size = 1024\nmax_loaded_models = 1\n\
             [[models]]\nid = \"smol\"\npath = \"{0}\"\nkeep_alive = 1\n\
             [[models]]\nid = \"other\"\npath = \"{0}\"\n",
            smollm2_gguf().display()
        ),
        &[],
        "lifecycle",
        &["--model", "smol", "--victim", "other"],
    );
}
