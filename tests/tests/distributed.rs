//! One model over several processes on loopback, through the engines' own distributed layers.
//! ggml RPC: the test GGUF split three ways, over this process's CPU and two
//! `minerva worker --rpc` processes, driven by tests/python/python_checks.py (suite `rpc`): the
//! same greedy text as one process, a worker killed mid-stream fails that stream clearly while
//! the server stays up, and the model answers again once the worker is back. MLX distributed:
//! the MLX twin split over a two-rank ring gives the same greedy text as one process (batched,
//! with `n` choices), a rank killed mid-stream fails that stream clearly, the model comes back
//! once the rank is restarted, and unloading it stops the other rank.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use minerva_tests::{minerva, minerva_bin, python_checks, smollm2_gguf, smollm2_mlx, spawn_server};

/// A worker process, killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Start `minerva worker --rpc` on `port` and wait until it listens.
fn start_worker(port: u16) -> Worker {
    let child = minerva()
        .args([
            "--threads",
            "1",
            "worker",
            "--rpc",
            "--port",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("the worker starts");
    let mut worker = Worker(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            worker.0.try_wait().unwrap().is_none(),
            "the worker on port {port} exited"
        );
        assert!(Instant::now() < deadline, "the worker does not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    worker
}

#[test]
fn a_model_split_over_rpc_workers_answers_as_one_process_and_survives_a_lost_worker() {
    let ports = [free_port(), free_port()];
    let workers: Vec<Worker> = ports.iter().map(|&p| start_worker(p)).collect();
    let rpc = format!(
        "[{}]",
        ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("minerva.toml");
    let gguf = smollm2_gguf();
    std::fs::write(
        &config,
        format!(
            "context_size = 2048\nparallel = 4\n\
             [[models]]\nid = \"one\"\npath = \"{gguf}\"\n\
             [[models]]\nid = \"split\"\npath = \"{gguf}\"\nrpc = {rpc}\n\
             [[models]]\nid = \"twin\"\npath = \"{twin}\"\nrpc = {rpc}\n",
            gguf = gguf.display(),
            twin = smollm2_mlx().display(),
        ),
    )
    .unwrap();
    let (mut server, base_url) = spawn_server(
        minerva()
            .arg("--config")
            .arg(&config)
            .args(["--log", "info", "serve", "--port", "0"])
            .stderr(Stdio::inherit()),
    );
    let mut args: Vec<String> = ["--model", "one", "--split", "split", "--twin", "twin"]
        .map(String::from)
        .to_vec();
    args.push("--worker-ports".into());
    args.extend(ports.iter().map(u16::to_string));
    args.extend(["--worker-pid".into(), workers[1].0.id().to_string()]);
    args.extend(["--minerva".into(), minerva_bin().display().to_string()]);
    args.extend(["--server-pid".into(), server.id().to_string()]);
    let (passed, report) = python_checks(&base_url, "rpc", args);
    let alive = server.try_wait().unwrap().is_none();
    let _ = server.kill();
    let _ = server.wait();
    drop(workers);
    assert!(passed, "rpc checks failed:\n{report}");
    assert!(alive, "the server died");
}

#[test]
fn the_mlx_twin_split_over_a_two_rank_ring_answers_as_one_process() {
    let twin = smollm2_mlx();
    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts.json");
    let [head, other] = [free_port(), free_port()];
    std::fs::write(
        &hostfile,
        format!("[[\"127.0.0.1:{head}\"], [\"127.0.0.1:{other}\"]]"),
    )
    .unwrap();
    let config = dir.path().join("minerva.toml");
    std::fs::write(
        &config,
        format!(
            "parallel = 4\n\
             [[models]]\nid = \"twin\"\npath = \"{twin}\"\n\
             [[models]]\nid = \"ring\"\npath = \"{twin}\"\n\
             [models.engine_options]\nhostfile = \"{hostfile}\"\n",
            twin = twin.display(),
            hostfile = hostfile.display(),
        ),
    )
    .unwrap();
    let rank1 = Worker(
        minerva()
            .args([
                "--threads",
                "1",
                "worker",
                "--mlx",
                "--rank",
                "1",
                "--hostfile",
            ])
            .arg(&hostfile)
            .arg(&twin)
            .stdout(Stdio::null())
            .spawn()
            .expect("rank 1 starts"),
    );
    let (mut server, base_url) = spawn_server(
        minerva()
            .arg("--config")
            .arg(&config)
            .args(["serve", "--port", "0"])
            .stderr(Stdio::inherit()),
    );
    let args = [
        "--model".into(),
        "twin".into(),
        "--split".into(),
        "ring".into(),
        "--worker-ports".into(),
        other.to_string(),
        "--worker-pid".into(),
        rank1.0.id().to_string(),
        "--minerva".into(),
        minerva_bin().display().to_string(),
        "--hostfile".into(),
        hostfile.display().to_string(),
        "--split-path".into(),
        twin.display().to_string(),
    ];
    let (passed, report) = python_checks(&base_url, "ring", args);
    let alive = server.try_wait().unwrap().is_none();
    let _ = server.kill();
    let _ = server.wait();
    drop(rank1);
    assert!(passed, "ring checks failed:\n{report}");
    assert!(alive, "the server died");
}

#[test]
fn gpu_layers_without_workers_or_a_gpu_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("minerva.toml");
    std::fs::write(
        &config,
        format!(
            "[[models]]\nid = \"alone\"\npath = \"{}\"\n\
             [models.engine_options]\ngpu_layers = 4\n",
            smollm2_gguf().display()
        ),
    )
    .unwrap();
    let (ok, _, err) = minerva_tests::run(minerva().arg("--config").arg(&config).args([
        "run",
        "alone",
        "--prompt",
        "Hi",
        "--max-tokens",
        "1",
    ]));
    assert!(!ok, "gpu_layers with nothing to offload to was accepted");
    assert!(
        err.contains("gpu_layers") && err.contains("`alone`"),
        "{err}"
    );
}
