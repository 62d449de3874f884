//! Helpers for Minerva's end-to-end tests: the real test models and the built `minerva` binary.

pub mod weights;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root: `$MINERVA_WORKSPACE` when set (a test binary carried to another machine,
/// see benches/gpu), else the checkout this crate was built in.
pub fn workspace_root() -> PathBuf {
    if let Some(root) = std::env::var_os("MINERVA_WORKSPACE") {
        return PathBuf::from(root);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF fetched by `scripts/fetch-test-models`.
pub fn smollm2_gguf() -> PathBuf {
    test_model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Gemma 3 270M (the pretrained model, Q4_K_M) fetched by `scripts/fetch-test-models`.
pub fn gemma3_gguf() -> PathBuf {
    test_model("gemma-3-270m-q4_k_m.gguf")
}

/// A model fetched by `scripts/fetch-test-models` (into `$MINERVA_TEST_MODELS` when set: a test
/// binary carried to another machine, see benches/gpu).
fn test_model(name: &str) -> PathBuf {
    let models = std::env::var_os("MINERVA_TEST_MODELS")
        .map_or_else(|| workspace_root().join("models"), PathBuf::from);
    let path = models.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-test-models first",
        path.display()
    );
    path
}

/// The `minerva` binary built beside this test executable (same profile), or `$MINERVA_BIN`.
pub fn minerva_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MINERVA_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/minerva
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("minerva");
    assert!(
        bin.is_file(),
        "{} is missing: build it with the same profile (cargo test --release --workspace does)",
        bin.display()
    );
    bin
}

/// The Python of the project's virtual environment (with the `openai` client), made by
/// `scripts/setup`.
pub fn venv_python() -> PathBuf {
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup first",
        python.display()
    );
    python
}

/// A `minerva` command with no user config or environment leaking in.
pub fn minerva() -> Command {
    let mut cmd = Command::new(minerva_bin());
    let root = workspace_root();
    if root.is_dir() {
        cmd.current_dir(root);
    }
    cmd.env_remove("MINERVA_CONFIG")
        .env_remove("MINERVA_LOG")
        .env("XDG_CONFIG_HOME", "/nonexistent-minerva-test-config");
    for (key, _) in std::env::vars() {
        if key.starts_with("MINERVA_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The device `minerva engines --json` reports for engine `name`, run as `cmd` (a [`minerva`]
/// command, with whatever environment the caller set); empty when the engine is not listed.
pub fn engine_device(mut cmd: Command, name: &str) -> String {
    let (ok, out, err) = run(cmd.args(["engines", "--json"]));
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).expect("engines --json");
    rows.as_array()
        .expect("a list of engines")
        .iter()
        .find(|r| r["name"] == name)
        .and_then(|r| r["device"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Run `cmd`, returning (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("minerva runs");
    (
        status.success(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// The prompt every engine is checked with.
pub const FRANCE: &str = "What is the capital of France?";

/// The system message used with [`FRANCE`]. SmolLM2's template adds its own default system
/// prompt when none is given; with that one (and with "You are a helpful assistant."), the top
/// two first-token logits of the Q4_1 model are within 0.15 of each other ("The" / "L'" / "La"),
/// closer than llama.cpp's batch-to-batch float noise. With this one "The" leads by 1.4.
pub const SYSTEM: &str = "Answer in one short sentence.";

/// The MLX twin of [`smollm2_gguf`] (same weights, written by `minerva convert`), made once per
/// test process in a temporary directory that lives as long as the process.
pub fn smollm2_mlx() -> PathBuf {
    static TWIN: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    TWIN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let out = dir.path().join("SmolLM2-135M-Instruct-mlx");
        let (ok, _, err) = run(minerva()
            .arg("convert")
            .arg(smollm2_gguf())
            .arg(&out)
            .args(["--to", "mlx"]));
        assert!(ok, "convert failed: {err}");
        (dir, out)
    })
    .1
    .clone()
}

/// Write `config` (TOML) to a temporary file, start `minerva --config FILE serve --port 0` with
/// `serve_args` after `serve`, run the Python checks of `suite` with `args` and `--server-pid`
/// against it, and stop it; panics with the report if a check failed or the server died.
pub fn serve_and_check(config: &str, serve_args: &[&str], suite: &str, args: &[&str]) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("minerva.toml");
    std::fs::write(&path, config).expect("config written");
    let (mut server, base_url) = spawn_server(
        minerva()
            .arg("--config")
            .arg(&path)
            .args(["--log", "info", "serve", "--port", "0"])
            .args(serve_args)
            .stderr(std::process::Stdio::inherit()),
    );
    let pid = server.id().to_string();
    let args = args.iter().copied().chain(["--server-pid", &pid]);
    let (passed, report) = python_checks(&base_url, suite, args);
    let alive = server.try_wait().expect("server status").is_none();
    let _ = server.kill();
    let _ = server.wait();
    assert!(passed, "suite {suite} failed:\n{report}");
    assert!(alive, "the server died during suite {suite}");
}

/// Spawn `cmd` (a prepared `minerva ... serve --port 0 ...`) with stdout piped and return the
/// child and the base URL from its first line, `minerva listening on URL`.
pub fn spawn_server(cmd: &mut Command) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("minerva serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("first line");
    let url = line
        .trim()
        .strip_prefix("minerva listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, url)
}

/// Run the Python checks of `suite` (tests/python/checks/, through run_checks.py), with `args`,
/// against the server at `base_url`, printing their report; whether they all passed, and their
/// output.
pub fn python_checks<S: AsRef<std::ffi::OsStr>>(
    base_url: &str,
    suite: &str,
    args: impl IntoIterator<Item = S>,
) -> (bool, String) {
    let output = Command::new(venv_python())
        .current_dir(workspace_root())
        .arg("tests/python/run_checks.py")
        .args(["--base-url", base_url, "--suite", suite])
        .args(args)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.success(), format!("{stdout}\n{stderr}"))
}
