//! The `minerva` binary on the real SmolLM2 GGUF: run, inspect, models, errors.

use std::io::Write;

use minerva_tests::{
    engine_device, minerva, minerva_bin, run, smollm2_gguf, venv_python, workspace_root, FRANCE,
    SYSTEM,
};

fn run_model(extra: &[&str]) -> (bool, String, String) {
    let model = smollm2_gguf();
    let mut cmd = minerva();
    cmd.arg("run")
        .arg(&model)
        .args(["--prompt", FRANCE, "--system", SYSTEM])
        .args(extra);
    run(&mut cmd)
}

#[test]
fn greedy_run_answers_paris() {
    let (ok, out, err) = run_model(&["--temperature", "0", "--max-tokens", "24"]);
    assert!(ok, "stderr: {err}");
    assert!(out.contains("Paris"), "answer: {out:?}");
}

#[test]
fn seeded_sampling_is_reproducible() {
    let args = [
        "--temperature",
        "0.8",
        "--seed",
        "1234",
        "--max-tokens",
        "32",
    ];
    let (ok1, first, err) = run_model(&args);
    assert!(ok1, "{err}");
    let (ok2, second, _) = run_model(&args);
    assert!(ok2);
    assert!(!first.trim().is_empty());
    assert_eq!(first, second);
}

#[test]
fn stop_string_cuts_the_cli_output() {
    let (ok, full, err) = run_model(&["--temperature", "0", "--max-tokens", "24"]);
    assert!(ok, "{err}");
    let stop = "is Par";
    let cut = full.find(stop).expect("greedy answer names Paris");
    let (ok, stopped, err) =
        run_model(&["--temperature", "0", "--max-tokens", "24", "--stop", stop]);
    assert!(ok, "{err}");
    assert_eq!(stopped.trim_end_matches('\n'), &full[..cut]);
}

#[test]
fn context_overflow_is_a_clear_error() {
    // llama.cpp rounds context sizes up to a multiple of 256 cells.
    let long = "Paris ".repeat(400);
    let mut cmd = minerva();
    cmd.arg("run").arg(smollm2_gguf()).args([
        "--ctx-size",
        "256",
        "--max-tokens",
        "4",
        "--prompt",
        &long,
    ]);
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok);
    assert!(
        err.contains("prompt has") && err.contains("the context holds 256"),
        "{err}"
    );
}

#[test]
fn inspect_reports_the_gguf_without_loading_it() {
    let mut cmd = minerva();
    cmd.arg("inspect").arg(smollm2_gguf()).arg("--json");
    let (ok, out, err) = run(&mut cmd);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format"], "gguf");
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["quantization"], "Q4_1");
    assert_eq!(v["layers"], 30);
    assert_eq!(v["context_length"], 8192);
    assert_eq!(v["has_chat_template"], true);
    assert_eq!(v["engine"], "llama");
    assert_eq!(v["engine_available"], true);
    let params = v["parameter_count"].as_u64().unwrap();
    assert!((130_000_000..140_000_000).contains(&params), "{params}");

    let mut cmd = minerva();
    cmd.arg("inspect").arg(smollm2_gguf());
    let (ok, text, _) = run(&mut cmd);
    assert!(ok);
    assert!(
        text.contains("Q4_1") && text.contains("llama") && text.contains("30"),
        "{text}"
    );
}

#[test]
fn bad_files_are_refused_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = std::fs::read(smollm2_gguf()).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.gguf",
            gguf[..gguf.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "random.gguf",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
            "not a recognised model format",
        ),
        ("empty.gguf", Vec::new(), "empty"),
        (
            "model.pt",
            b"PK\x03\x04archive/data.pkl....".to_vec(),
            "pickle",
        ),
        ("header-only.gguf", gguf[..64].to_vec(), "truncated"),
    ];
    for (name, bytes, why) in cases {
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        for sub in ["inspect", "run"] {
            let mut cmd = minerva();
            cmd.arg(sub).arg(&path);
            if sub == "run" {
                cmd.args(["--prompt", "hi", "--max-tokens", "1"]);
            }
            let (ok, _, err) = run(&mut cmd);
            assert!(!ok, "{sub} {name} succeeded");
            assert!(err.contains(name), "{sub} {name}: {err}");
            assert!(err.contains(why), "{sub} {name}: {err}");
            assert!(!err.contains("panicked"), "{sub} {name}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "one readable line: {err}");
        }
    }
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("minerva.toml");
    std::fs::write(
        &config,
        "[[models]]\nid = 'a'\npath = 'x.gguf'\ncontex_size = 5\n",
    )
    .unwrap();
    let mut cmd = minerva();
    cmd.arg("--config").arg(&config).arg("models");
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok);
    assert!(err.contains("contex_size"), "{err}");

    std::fs::write(&config, "threads = 0\n").unwrap();
    let mut cmd = minerva();
    cmd.arg("--config").arg(&config).arg("models");
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok);
    assert!(err.contains("threads"), "{err}");

    let mut cmd = minerva();
    cmd.args(["--config", "/nonexistent/minerva.toml", "models"]);
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok && err.contains("/nonexistent/minerva.toml"), "{err}");
}

#[test]
fn configured_model_runs_by_id_with_its_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("minerva.toml");
    std::fs::write(
        &config,
        format!(
            "[[models]]\nid = 'smol'\npath = '{}'\nbackend = 'llama'\ncontext_size = 2048\nmax_tokens = 24\n[models.sampling]\ntemperature = 0.0\n\n[[models]]\nid = 'missing'\npath = '/nope/model.gguf'\n",
            smollm2_gguf().display()
        ),
    )
    .unwrap();
    let mut cmd = minerva();
    cmd.arg("--config")
        .arg(&config)
        .args(["run", "smol", "--prompt", FRANCE, "--system", SYSTEM]);
    let (ok, out, err) = run(&mut cmd);
    assert!(ok, "{err}");
    assert!(out.contains("Paris"), "{out}");

    let mut cmd = minerva();
    cmd.arg("--config").arg(&config).args(["models", "--json"]);
    let (ok, out, err) = run(&mut cmd);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["id"], "smol");
    assert_eq!(rows[0]["format"], "gguf");
    assert_eq!(rows[0]["engine"], "llama");
    assert!(rows[1]["error"]
        .as_str()
        .unwrap()
        .contains("/nope/model.gguf"));

    // MINERVA_* environment variables are config keys too.
    let mut cmd = minerva();
    cmd.arg("--config")
        .arg(&config)
        .env("MINERVA_THREADZ", "2")
        .arg("models");
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok && err.contains("threadz"), "{err}");
}

#[test]
fn mlx_style_directory_is_detected_and_routed_to_mlx() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-mlx");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(
        model.join("config.json"),
        r#"{"model_type":"llama","num_hidden_layers":1,"max_position_embeddings":256,
            "quantization":{"group_size":32,"bits":4}}"#,
    )
    .unwrap();
    // One 4-bit packed weight (8 rows x 64 values), its scales and biases.
    let header = r#"{"m.weight":{"dtype":"U32","shape":[8,8],"data_offsets":[0,256]},"m.scales":{"dtype":"F32","shape":[8,2],"data_offsets":[256,320]},"m.biases":{"dtype":"F32","shape":[8,2],"data_offsets":[320,384]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, 384));
    std::fs::write(model.join("model.safetensors"), bytes).unwrap();

    let mut cmd = minerva();
    cmd.arg("inspect").arg(&model).arg("--json");
    let (ok, out, err) = run(&mut cmd);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["format"], "safetensors");
    assert_eq!(v["mlx_quantized"], true);
    assert_eq!(v["engine"], "mlx");
    assert_eq!(v["parameter_count"], 8 * 64);

    // The MLX engine takes it and refuses it clearly: the config lacks what a model needs.
    let mut cmd = minerva();
    cmd.arg("run").arg(&model).args(["--prompt", "hi"]);
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok);
    assert!(
        err.contains("tiny-mlx") && err.contains("config.json") && err.contains("hidden_size"),
        "{err}"
    );

    // Forcing llama.cpp on a safetensors directory is refused by format.
    let mut cmd = minerva();
    cmd.arg("run")
        .arg(&model)
        .args(["--prompt", "hi", "--backend", "llama"]);
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok && err.contains("cannot load safetensors"), "{err}");
}

#[test]
fn hugging_face_cache_ids_resolve_locally() {
    let hub = tempfile::tempdir().unwrap();
    let repo = hub
        .path()
        .join("models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF");
    let snapshot = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    std::os::unix::fs::symlink(smollm2_gguf(), snapshot.join("smollm2.Q4_1.gguf")).unwrap();
    let mut cmd = minerva();
    cmd.env("HF_HUB_CACHE", hub.path()).args([
        "inspect",
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
        "--json",
    ]);
    let (ok, out, err) = run(&mut cmd);
    assert!(ok, "{err}");
    assert!(
        out.contains("smollm2.Q4_1.gguf") && out.contains("\"llama\""),
        "{out}"
    );

    let mut cmd = minerva();
    cmd.env("HF_HUB_CACHE", hub.path())
        .args(["inspect", "org/not-cached"]);
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok && err.contains("org/not-cached"), "{err}");
}

#[test]
fn example_config_is_valid() {
    let mut cmd = minerva();
    cmd.args(["--config", "config/minerva.toml", "models", "--json"]);
    let (ok, out, err) = run(&mut cmd);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["id"], "smollm2");
    assert_eq!(rows[0]["engine"], "llama");
}

/// The body of `GET {base}{path}` over a plain loopback connection.
fn http_get(base: &str, path: &str) -> String {
    use std::io::Read;
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("server answers");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").expect("a whole response");
    body.to_string()
}

#[test]
fn models_and_v1_models_list_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("minerva.toml");
    std::fs::write(
        &config,
        format!(
            "[[models]]\nid = 'smol'\npath = '{}'\n",
            smollm2_gguf().display()
        ),
    )
    .unwrap();
    // A model given by path too: one id rule for both front-ends (the file name without .gguf).
    let copy = dir.path().join("another.Q4_1.gguf");
    std::os::unix::fs::symlink(smollm2_gguf(), &copy).unwrap();

    let (ok, out, err) = run(minerva()
        .arg("--config")
        .arg(&config)
        .args(["models", "--json", "--model"])
        .arg(&copy));
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cli_ids: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();

    let (mut server, url) = minerva_tests::spawn_server(
        minerva()
            .arg("--config")
            .arg(&config)
            .args(["serve", "--port", "0", "--model"])
            .arg(&copy),
    );
    let listed: serde_json::Value = serde_json::from_str(&http_get(&url, "/v1/models")).unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let http_ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(cli_ids, vec!["smol", "another.Q4_1"]);
    assert_eq!(http_ids, cli_ids);
}

/// A copy of the test GGUF in `dir` with the unsigned metadata value of `key` set to `value`.
fn gguf_with(dir: &std::path::Path, key: &str, value: u64) -> std::path::PathBuf {
    let mut bytes = std::fs::read(smollm2_gguf()).unwrap();
    let name = key.as_bytes();
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .unwrap_or_else(|| panic!("{key} is in the file"))
        + name.len();
    let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let value_at = at + 4;
    match kind {
        4 => bytes[value_at..value_at + 4].copy_from_slice(&(value as u32).to_le_bytes()),
        10 => bytes[value_at..value_at + 8].copy_from_slice(&value.to_le_bytes()),
        other => panic!("{key} has GGUF type {other}"),
    }
    let out = dir.join(format!("{key}-{value}.gguf"));
    std::fs::write(&out, bytes).unwrap();
    out
}

#[test]
fn metadata_that_makes_llama_cpp_abort_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("llama.context_length", 0),
        ("llama.context_length", 1 << 30),
        ("llama.block_count", 31),
        ("llama.block_count", 0),
        ("llama.context_length", 1),
    ] {
        let model = gguf_with(dir.path(), key, value);
        let mut cmd = minerva();
        cmd.arg("run")
            .arg(&model)
            .args(["--prompt", FRANCE, "-n", "2"]);
        let output = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        // An error and exit status 1, not a signal.
        assert_eq!(output.status.code(), Some(1), "{key} = {value}: {err}");
        assert!(
            err.contains(model.file_name().unwrap().to_str().unwrap()) && err.contains(key),
            "{key} = {value}: {err}"
        );
    }
    // The same abort from settings: batches smaller than the sequences they carry.
    for settings in [&["--ctx-size", "1"][..], &["--threads", "1"][..]] {
        let config = dir.path().join("small-batch.toml");
        std::fs::write(
            &config,
            "[[models]]\nid = \"m\"\nengine_options = { batch_size = 2 }\npath = \"PATH\"\n"
                .replace("PATH", &smollm2_gguf().display().to_string()),
        )
        .unwrap();
        let output = minerva()
            .arg("--config")
            .arg(&config)
            .args(settings)
            .args(["run", "m", "--prompt", FRANCE, "-n", "2"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{settings:?}: {err}");
        assert!(err.contains("parallel"), "{settings:?}: {err}");
    }
}

#[test]
fn a_prompt_on_stdin_is_answered_once() {
    let mut child = minerva()
        .arg("run")
        .arg(smollm2_gguf())
        .args(["--system", SYSTEM, "-t", "0", "-n", "16"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(FRANCE.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && out.contains("Paris"), "{out}");
}

#[test]
fn run_without_a_prompt_on_a_terminal_is_a_chat() {
    // Two turns (the second reusing the cache), /clear, /exit, then Ctrl-C stopping an answer; the
    // checks are in the script, driving the chat through a pseudo-terminal.
    let result = std::process::Command::new(venv_python())
        .current_dir(workspace_root())
        .arg("tests/python/chat_pty.py")
        .arg(minerva_bin())
        .arg(smollm2_gguf())
        .env("XDG_CONFIG_HOME", "/nonexistent-minerva-test-config")
        .env("TERM", "xterm")
        .env_remove("MINERVA_CONFIG")
        .env_remove("MINERVA_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    println!("{stdout}");
    assert!(
        result.status.success(),
        "chat checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// The llama engine's device as `minerva engines` reports it, with `MINERVA_LLAMA_CPU` = `pin`.
fn llama_device(pin: Option<&str>) -> String {
    let mut cmd = minerva();
    if let Some(pin) = pin {
        cmd.env("MINERVA_LLAMA_CPU", pin);
    }
    engine_device(cmd, "llama")
}

#[test]
fn cpu_kernels_are_picked_at_run_time_and_can_be_pinned() {
    // The best level this CPU runs, never the AMX one on its own.
    let picked = llama_device(None);
    assert!(picked.starts_with("cpu ("), "{picked}");
    assert!(!picked.contains("sapphirerapids"), "{picked}");
    assert_eq!(llama_device(Some("haswell")), "cpu (haswell)");

    // AVX2 kernels answer as the picked ones do.
    let answer = |pin: Option<&str>| {
        let mut cmd = minerva();
        if let Some(pin) = pin {
            cmd.env("MINERVA_LLAMA_CPU", pin);
        }
        let (ok, out, err) = run(cmd
            .arg("run")
            .arg(smollm2_gguf())
            .args(["--prompt", FRANCE, "--system", SYSTEM])
            .args(["--temperature", "0", "--max-tokens", "12"]));
        assert!(ok, "{pin:?}: {err}");
        out
    };
    assert_eq!(answer(Some("haswell")), answer(None));

    // A level that does not exist is refused, naming the ones there.
    let (ok, _, err) = run(minerva()
        .env("MINERVA_LLAMA_CPU", "pentium")
        .arg("run")
        .arg(smollm2_gguf())
        .args(["--prompt", "hi", "--max-tokens", "1"]));
    assert!(!ok, "a missing CPU level was accepted");
    assert!(
        err.contains("MINERVA_LLAMA_CPU=pentium") && err.contains("haswell"),
        "{err}"
    );
}

#[test]
fn version_names_the_commit_and_each_engine_with_its_device() {
    let (ok, out, err) = run(minerva().arg("--version"));
    assert!(ok, "{err}");
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("minerva {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    // Built from a git checkout: the commit is known.
    assert!(!first.contains("unknown"), "{out}");
    let engines: Vec<&str> = lines.collect();
    let llama = engines
        .iter()
        .find(|l| l.trim_start().starts_with("llama "));
    assert!(
        llama.is_some_and(|l| l.contains("llama.cpp b") && l.contains("cpu (")),
        "{out}"
    );
    assert!(
        engines
            .iter()
            .any(|l| l.trim_start().starts_with("mlx ") && l.contains("MLX 0.")),
        "{out}"
    );
    // No subcommand: the help, and a usage exit status.
    let (ok, _, err) = run(&mut minerva());
    assert!(!ok && err.contains("Usage: minerva"), "{err}");
}
