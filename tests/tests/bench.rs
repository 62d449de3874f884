//! `minerva bench` on the real GGUF and its MLX twin: the documented JSON schema with positive
//! figures and identical prompts for both engines, a failing row that does not stop the others,
//! and a well-formed SVG chart naming both engines.

use minerva_tests::{minerva, run, smollm2_gguf, smollm2_mlx};

#[test]
fn bench_json_compares_the_gguf_and_its_mlx_twin() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("bench.svg");
    let (ok, out, err) = run(minerva()
        .arg("bench")
        .arg(smollm2_gguf())
        .arg(dir.path().join("missing.gguf"))
        .arg(smollm2_mlx())
        .args([
            "--reps", "2", "--tg", "8", "--pp", "32", "--json", "--chart",
        ])
        .arg(&chart));
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert!(report["machine"]["logical_cores"].as_u64().unwrap() >= 1);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);

    let missing = &results[1];
    assert!(
        missing["error"].as_str().unwrap().contains("missing.gguf"),
        "{missing}"
    );

    for (row, engine, format) in [
        (&results[0], "llama", "gguf"),
        (&results[2], "mlx", "safetensors"),
    ] {
        assert!(row["error"].is_null(), "{row}");
        assert_eq!(row["engine"], engine);
        assert_eq!(row["format"], format);
        assert!(row["bits_per_weight"].as_f64().unwrap() > 4.0);
        assert_eq!(row["prompt_tokens"], 32);
        assert!(row["load_s"].as_f64().unwrap() > 0.0);
        assert!(row["peak_rss_bytes"].as_u64().unwrap() > 10_000_000);
        assert!(
            row["engine_memory"]["bytes"].as_u64().unwrap() > 50_000_000,
            "{row}"
        );
        for key in ["ttft_s", "pp_tps", "tg_tps"] {
            let f = &row[key];
            let (min, median, max) = (
                f["min"].as_f64().unwrap(),
                f["median"].as_f64().unwrap(),
                f["max"].as_f64().unwrap(),
            );
            assert!(min > 0.0 && min <= median && median <= max, "{key}: {f}");
        }
    }
    assert_eq!(
        results[0]["prompt_fingerprint"],
        results[2]["prompt_fingerprint"]
    );
    assert!(report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains("same prompt token ids")));

    let svg = std::fs::read_to_string(&chart).unwrap();
    let (ok, _, err) = run(std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, xml.dom.minidom as m; m.parse(sys.argv[1])",
        ])
        .arg(&chart));
    assert!(ok, "SVG is not well-formed XML: {err}");
    assert!(svg.starts_with("<svg") && svg.contains(">llama<") && svg.contains(">mlx<"));
}

#[test]
fn bench_at_depth_measures_after_a_filled_context() {
    let (ok, out, err) = run(minerva()
        .arg("bench")
        .arg(smollm2_gguf())
        .arg(smollm2_mlx())
        .args([
            "--reps", "1", "--warmup", "0", "--tg", "4", "--pp", "16", "--depth", "600", "--json",
        ]));
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["plan"]["depth"], 600);
    // The context holds the filled depth plus the measured prompt and generation.
    assert!(report["context_size"].as_u64().unwrap() >= 600 + 16 + 4);
    for row in report["results"].as_array().unwrap() {
        assert!(row["error"].is_null(), "{row}");
        assert_eq!(row["prompt_tokens"], 16);
        assert!(row["pp_tps"]["median"].as_f64().unwrap() > 0.0, "{row}");
    }
}

#[test]
fn a_quantized_kv_cache_is_reported_and_takes_about_half_the_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("minerva.toml");
    let (gguf, mlx) = (smollm2_gguf(), smollm2_mlx());
    let mut text = String::from("context_size = 8192\n");
    for (id, path, kv) in [
        ("llama-f16", &gguf, "f16"),
        ("llama-q8", &gguf, "q8_0"),
        ("mlx-q8", &mlx, "q8_0"),
    ] {
        text.push_str(&format!(
            "[[models]]\nid = \"{id}\"\npath = \"{}\"\nkv_cache_type = \"{kv}\"\n",
            path.display()
        ));
    }
    std::fs::write(&config, text).unwrap();
    let (ok, out, err) = run(minerva().arg("--config").arg(&config).args([
        "bench",
        "llama-f16",
        "llama-q8",
        "mlx-q8",
        "--reps",
        "1",
        "--warmup",
        "0",
        "--tg",
        "4",
        "--pp",
        "16",
        "--json",
    ]));
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = report["results"].as_array().unwrap();
    for row in rows {
        assert!(row["error"].is_null(), "{row}");
        assert!(row["tg_tps"]["median"].as_f64().unwrap() > 0.0, "{row}");
    }
    let kv = |i: usize| rows[i]["kv_cache"]["bytes"].as_u64().unwrap() as f64;
    let rss = |i: usize| rows[i]["peak_rss_bytes"].as_u64().unwrap() as f64;
    assert_eq!(rows[0]["kv_cache"]["kv_type"], "f16");
    assert_eq!(rows[1]["kv_cache"]["kv_type"], "q8_0");
    assert_eq!(rows[2]["kv_cache"]["kv_type"], "q8_0");
    assert_eq!(rows[0]["kv_cache"]["context_size"], 8192);
    // q8_0: 34 bytes per 32 elements against 64 (SmolLM2-135M: ~189 MB of f16 at 8192).
    assert!(
        (kv(1) / kv(0) - 34.0 / 64.0).abs() < 0.01,
        "{} vs {}",
        kv(1),
        kv(0)
    );
    assert!(kv(0) > 150e6, "{}", kv(0));
    assert_eq!(kv(2), kv(1));
    // llama.cpp allocates and clears the whole cache at load: the process shrinks by about
    // the difference.
    let saved = rss(0) - rss(1);
    assert!(
        saved > 0.6 * (kv(0) - kv(1)),
        "peak RSS {} with f16, {} with q8_0",
        rss(0),
        rss(1)
    );
}
