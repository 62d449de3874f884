//! `minerva pull` against a stand-in for the Hugging Face hub on loopback
//! (tests/python/fake_hub.py) serving the real test models: the cache is filled in the hub's
//! layout and `run` answers from it, quantizations are picked by name, a checksum mismatch leaves
//! nothing behind, and an interrupted download resumes. Over HTTP (`minerva serve`, Ollama's
//! client and our API): pulls with progress, two clients sharing one download, pulled models
//! listed and served, deletion, and the switch that turns both off.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use minerva_tests::{
    minerva, python_checks, run, smollm2_gguf, smollm2_mlx, venv_python, workspace_root, FRANCE,
    SYSTEM,
};

const GGUF_REPO: &str = "test-org/SmolLM2-135M-Instruct-GGUF";
const MLX_REPO: &str = "test-org/SmolLM2-135M-Instruct-mlx";
const GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

struct FakeHub {
    child: Child,
    url: String,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FakeHub {
    /// A hub serving the GGUF repo (the test file as `Q4_1`, and the same bytes named `Q8_0` so
    /// that the repo lists two quantizations) and the MLX twin's directory.
    fn start(extra: &[&str]) -> FakeHub {
        let dir = tempfile::tempdir().unwrap();
        let gguf_repo = dir.path().join("gguf");
        std::fs::create_dir(&gguf_repo).unwrap();
        for name in [GGUF_NAME, "SmolLM2-135M-Instruct.Q8_0.gguf"] {
            std::os::unix::fs::symlink(smollm2_gguf(), gguf_repo.join(name)).unwrap();
        }
        let log = dir.path().join("hub.log");
        let mut child = Command::new(venv_python())
            .arg(workspace_root().join("tests/python/fake_hub.py"))
            .arg("--repo")
            .arg(format!("{GGUF_REPO}={}", gguf_repo.display()))
            .arg("--repo")
            .arg(format!("{MLX_REPO}={}", smollm2_mlx().display()))
            .arg("--log")
            .arg(&log)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("fake hub starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("fake hub on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        FakeHub {
            child,
            url,
            log,
            dir,
        }
    }

    /// A `minerva` command that sees this hub and a cache of its own under `cache`.
    fn minerva(&self, cache: &str) -> Command {
        let mut cmd = minerva();
        cmd.env("HF_ENDPOINT", &self.url)
            .env("HF_HUB_CACHE", self.dir.path().join(cache))
            .env_remove("HF_HOME")
            .env_remove("HF_TOKEN");
        cmd
    }

    fn cache(&self, cache: &str) -> PathBuf {
        self.dir.path().join(cache)
    }

    /// The download log: (start, end, event) of each range request.
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn answer(cmd: &mut Command, model: &str, extra: &[&str]) -> String {
    let (ok, out, err) = run(cmd
        .args(["run", model])
        .args(extra)
        .args(["-p", FRANCE, "--system", SYSTEM, "-t", "0", "-n", "16"]));
    assert!(ok, "run {model} failed: {err}");
    out
}

#[test]
fn pull_fills_the_hub_cache_and_run_answers_from_it() {
    let hub = FakeHub::start(&[]);
    let (ok, out, err) = run(hub
        .minerva("cache")
        .args(["pull", &format!("{GGUF_REPO}:q4_1")]));
    assert!(ok, "pull failed: {err}");
    let path = PathBuf::from(out.trim());
    // The Hugging Face layout: snapshot link -> blob named by its sha256, refs/main.
    let repo_dir = hub
        .cache("cache")
        .join("models--test-org--SmolLM2-135M-Instruct-GGUF");
    let commit = std::fs::read_to_string(repo_dir.join("refs/main")).unwrap();
    assert_eq!(
        path,
        repo_dir
            .join("snapshots")
            .join(commit.trim())
            .join(GGUF_NAME)
    );
    let blob = std::fs::canonicalize(&path).unwrap();
    assert_eq!(
        blob.parent().unwrap(),
        repo_dir.join("blobs").canonicalize().unwrap()
    );
    assert_eq!(blob.file_name().unwrap().len(), 64, "{}", blob.display());
    assert!(
        std::fs::read(&path).unwrap() == std::fs::read(smollm2_gguf()).unwrap(),
        "the pulled file differs from the served one"
    );
    // Only the asked quantization was fetched.
    assert!(!files_under(&repo_dir)
        .iter()
        .any(|p| p.to_string_lossy().contains("Q8_0")));
    assert!(answer(&mut hub.minerva("cache"), GGUF_REPO, &[]).contains("Paris"));
    assert!(answer(&mut hub.minerva("cache"), &format!("{GGUF_REPO}:Q4_1"), &[]).contains("Paris"));

    // A second pull finds everything cached and fetches nothing.
    let before = hub.requests().len();
    let (ok, _, err) = run(hub
        .minerva("cache")
        .args(["pull", &format!("{GGUF_REPO}:Q4_1")]));
    assert!(ok && err.contains("1 already cached"), "{err}");
    assert_eq!(hub.requests().len(), before);

    // Unknown quantization, and a repo with several and none named: the available ones listed.
    for (reference, wanted) in [
        (format!("{GGUF_REPO}:Q2_K"), "has no Q2_K quantization"),
        (GGUF_REPO.to_string(), "several quantizations"),
    ] {
        let (ok, _, err) = run(hub.minerva("cache").args(["pull", &reference]));
        assert!(!ok, "pull {reference} succeeded");
        assert!(
            err.contains(wanted)
                && err.contains(&format!("{GGUF_REPO}:Q4_1"))
                && err.contains(&format!("{GGUF_REPO}:Q8_0")),
            "{err}"
        );
    }
    let (ok, _, err) = run(hub.minerva("cache").args(["pull", "test-org/missing"]));
    assert!(
        !ok && err.contains("test-org/missing") && err.contains("no such repo"),
        "{err}"
    );

    // An MLX repo is a whole directory; `run` takes it from the cache too.
    let (ok, out, err) = run(hub.minerva("cache").args(["pull", MLX_REPO]));
    assert!(ok, "pull failed: {err}");
    let dir = PathBuf::from(out.trim());
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(
            std::fs::read(dir.join(name)).unwrap()
                == std::fs::read(smollm2_mlx().join(name)).unwrap(),
            "{name} differs"
        );
    }
    assert!(answer(&mut hub.minerva("cache"), MLX_REPO, &[]).contains("Paris"));

    // `run --pull` fetches a missing model first.
    let (ok, _, err) = run(hub
        .minerva("fresh")
        .args(["run", GGUF_REPO, "-p", "Hi", "-n", "1"]));
    assert!(!ok && err.contains("minerva pull"), "{err}");
    let out = answer(
        &mut hub.minerva("fresh"),
        &format!("{GGUF_REPO}:Q4_1"),
        &["--pull"],
    );
    assert!(out.contains("Paris"), "{out}");
    // So does a configured model with `pull = true`.
    let config = hub.dir.path().join("minerva.toml");
    std::fs::write(
        &config,
        format!("[[models]]\nid = \"smol\"\npath = \"{MLX_REPO}\"\npull = true\n"),
    )
    .unwrap();
    let out = answer(
        hub.minerva("configured").arg("--config").arg(&config),
        "smol",
        &[],
    );
    assert!(out.contains("Paris"), "{out}");
}

#[test]
fn checksum_mismatch_names_the_file_and_leaves_nothing() {
    let hub = FakeHub::start(&["--corrupt", &format!("{GGUF_REPO}/{GGUF_NAME}")]);
    let (ok, _, err) = run(hub
        .minerva("cache")
        .args(["pull", &format!("{GGUF_REPO}:Q4_1")]));
    assert!(!ok, "a corrupt download was accepted");
    assert!(
        err.contains(GGUF_NAME) && err.contains("checksum mismatch"),
        "{err}"
    );
    let left: Vec<PathBuf> = files_under(&hub.cache("cache"))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.ends_with(".lock")
        })
        .collect();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}

#[test]
fn interrupted_download_resumes() {
    // 40 MB/s: the 98 MB file takes ~2.5 s, so the pull is killed in the middle.
    let hub = FakeHub::start(&["--rate", "40e6"]);
    let mut pull = hub
        .minerva("cache")
        .args(["pull", &format!("{GGUF_REPO}:Q4_1")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let partial_bytes = |hub: &FakeHub| -> u64 {
        files_under(&hub.cache("cache"))
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".incomplete"))
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    };
    while partial_bytes(&hub) < 16 << 20 {
        assert!(Instant::now() < deadline, "the download did not start");
        assert!(pull.try_wait().unwrap().is_none(), "pull ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    pull.kill().unwrap();
    pull.wait().unwrap();
    let kept = partial_bytes(&hub);
    let size = std::fs::metadata(smollm2_gguf()).unwrap().len();
    assert!(
        kept < size,
        "the download finished before it was interrupted"
    );
    assert!(
        !files_under(&hub.cache("cache"))
            .iter()
            .any(|p| p.ends_with(GGUF_NAME)),
        "the file is in the snapshot before it is complete"
    );
    let mark = hub.requests().len();
    let (ok, out, err) = run(hub
        .minerva("cache")
        .args(["pull", &format!("{GGUF_REPO}:Q4_1")]));
    assert!(ok, "resumed pull failed: {err}");
    let resumed: Vec<serde_json::Value> = hub.requests()[mark..]
        .iter()
        .filter(|r| r["event"] == "begin" && r["end"].as_u64() > Some(0))
        .cloned()
        .collect();
    let first = resumed
        .iter()
        .filter_map(|r| r["start"].as_u64())
        .min()
        .unwrap();
    assert_eq!(
        first, kept,
        "the second pull did not start where the first stopped: {resumed:?}"
    );
    assert!(
        std::fs::read(out.trim()).unwrap() == std::fs::read(smollm2_gguf()).unwrap(),
        "the resumed file differs from the served one"
    );
}

/// The pull suite of tests/python/python_checks.py against `minerva serve` with `config`, the
/// hub's models in the cache `cache`.
fn pull_checks(hub: &FakeHub, cache: &str, config: &str, suite: &str) {
    let path = hub.dir.path().join(format!("{suite}.toml"));
    std::fs::write(&path, config).unwrap();
    let (mut server, base_url) = minerva_tests::spawn_server(
        hub.minerva(cache)
            .arg("--config")
            .arg(&path)
            .args(["serve", "--port", "0"])
            .stderr(Stdio::inherit()),
    );
    let model = format!("{GGUF_REPO}:Q4_1");
    let cache = hub.cache(cache).display().to_string();
    let args = ["--model", &model, "--twin", MLX_REPO, "--local", "local"];
    let (passed, report) = python_checks(
        &base_url,
        suite,
        args.into_iter().chain(["--cache", &cache]),
    );
    let _ = server.kill();
    let _ = server.wait();
    assert!(passed, "suite {suite} failed:\n{report}");
}

#[test]
fn models_are_pulled_served_and_deleted_over_http() {
    // 40 MB/s: each download takes seconds, so the second client joins the first.
    let hub = FakeHub::start(&["--rate", "40e6"]);
    let local = format!(
        "[[models]]\nid = \"local\"\npath = \"{}\"\n",
        smollm2_gguf().display()
    );
    pull_checks(&hub, "served", &local, "pull");
    // Two clients and a third pull of the model: its file came from the hub once.
    let fetched = hub
        .requests()
        .iter()
        .filter(|r| {
            r["event"] == "begin" && r["path"].as_str().is_some_and(|p| p.ends_with(GGUF_NAME))
        })
        .count();
    assert_eq!(fetched, 1, "{:?}", hub.requests());
    // Switched off: nothing pulled or deleted.
    let off = format!("[server]\nallow_downloads = false\n\n{local}");
    pull_checks(&hub, "off", &off, "pull-off");
    assert!(!hub.cache("off").exists() || files_under(&hub.cache("off")).is_empty());
}
