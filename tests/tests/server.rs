//! `minerva serve` on the real SmolLM2 GGUF, driven over loopback HTTP by the official `openai`
//! Python client (tests/python/python_checks.py) and raw HTTP.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use minerva_tests::{
    minerva, python_checks, smollm2_gguf, smollm2_mlx, spawn_server, workspace_root,
};

const MODEL_ID: &str = "SmolLM2-135M-Instruct.Q4_1";

/// A running server, killed when dropped.
struct Server {
    child: Child,
    base_url: String,
    _config: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// One server at a time: each runs llama.cpp on every core, and several at once made single
/// requests take close to a minute on two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Server {
    fn start(config: &str, extra: &[&str]) -> Server {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("minerva.toml");
        std::fs::write(&path, config).unwrap();
        let (child, base_url) = spawn_server(
            minerva()
                .arg("--config")
                .arg(&path)
                .args([
                    "--log",
                    "info",
                    "serve",
                    "--port",
                    "0",
                    "--preload",
                    "--model",
                ])
                .arg(smollm2_gguf())
                .args(extra)
                .stderr(Stdio::inherit()),
        );
        Server {
            child,
            base_url,
            _config: dir,
            _turn: turn,
        }
    }

    fn checks(&self, suite: &str, extra: &[&str]) {
        self.checks_on(MODEL_ID, suite, extra);
    }

    fn checks_on(&self, model: &str, suite: &str, extra: &[&str]) {
        let args = ["--model", model].into_iter().chain(extra.iter().copied());
        let (passed, report) = python_checks(&self.base_url, suite, args);
        assert!(passed, "suite {suite} failed:\n{report}");
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "server did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn openai_client_against_the_real_model() {
    let mut server = Server::start("context_size = 2048\n[server]\nqueue_size = 16\n", &[]);
    server.checks("main", &[]);
    server.checks("page", &[]);
    // SIGTERM: graceful shutdown, exit status 0.
    assert!(server.terminate().success());
}

#[test]
fn request_limits_hold_on_every_dialect() {
    let config = format!(
        "context_size = 2048\nmax_tokens_limit = 6\n[[models]]\nid = \"slow\"\npath = {:?}\n\
         request_timeout = 2\nmax_tokens_limit = 100000\n",
        smollm2_gguf()
    );
    let server = Server::start(&config, &[]);
    server.checks("limits", &[]);
}

#[test]
fn full_queue_is_answered_with_429() {
    let server = Server::start("context_size = 2048\n[server]\nqueue_size = 1\n", &[]);
    server.checks("queue", &[]);
}

#[test]
fn api_keys_and_cors_are_enforced() {
    let server = Server::start(
        "context_size = 2048\n[server]\ncors_origins = [\"http://app.example\"]\n",
        &["--api-key", "s3cret"],
    );
    server.checks("auth", &["--api-key", "s3cret"]);
}

#[test]
fn structured_output_on_both_engines() {
    let twin = minerva_tests::smollm2_mlx();
    let server = Server::start(
        "context_size = 4096\n",
        &["--model", twin.to_str().unwrap()],
    );
    server.checks("structured", &[]);
    let twin_id = twin.file_name().unwrap().to_str().unwrap();
    server.checks_on(twin_id, "structured", &[]);
}

#[test]
fn ollama_api_through_its_official_client() {
    let server = Server::start("context_size = 2048\n", &[]);
    server.checks("ollama", &[]);
}

#[test]
fn anthropic_messages_openai_responses_and_tool_calls() {
    let server = Server::start("context_size = 4096\n", &[]);
    server.checks("apis", &[]);
    server.checks("tools", &[]);
}

/// Reasoning kept apart on every dialect, with SmolLM2 (and its MLX twin) served under three
/// reasoning models' real templates (Qwen3, DeepSeek R1, gpt-oss's Harmony) through the `openai`
/// and `anthropic` clients; a grammar makes the small model write each format's markup.
#[test]
fn reasoning_is_kept_apart_under_real_reasoning_templates() {
    let templates = workspace_root().join("models/templates");
    let model = |id: &str, path: &std::path::Path, template: &str| {
        format!(
            "[[models]]\nid = \"{id}\"\npath = \"{}\"\nchat_template = \"{}\"\n",
            path.display(),
            templates.join(format!("{template}.jinja")).display()
        )
    };
    let config = [
        "context_size = 2048\n".to_string(),
        model("qwen3", &smollm2_gguf(), "Qwen-Qwen3-0.6B"),
        model(
            "r1",
            &smollm2_gguf(),
            "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
        ),
        model("harmony", &smollm2_mlx(), "openai-gpt-oss-120b"),
    ]
    .concat();
    let server = Server::start(&config, &[]);
    server.checks("reasoning", &[]);
}
