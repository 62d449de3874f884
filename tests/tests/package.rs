//! The release bundle (`scripts/package`) runs on its own: unpacked into an empty folder and run
//! with a clean environment (no cargo, no project tree on any path, no `LD_LIBRARY_PATH`), it
//! lists both engines, answers on the GGUF and its MLX twin, serves a request, installs with its
//! `install.sh`, and resolves no library from the build tree.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use minerva_tests::{run, smollm2_gguf, smollm2_mlx, spawn_server, workspace_root, FRANCE, SYSTEM};

/// `program` with nothing of this environment but a plain PATH and a fresh HOME.
fn clean(program: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .current_dir(home);
    cmd
}

fn answer(minerva: &Path, home: &Path, model: &Path) -> String {
    let (ok, out, err) = run(clean(minerva, home)
        .arg("run")
        .arg(model)
        .args(["--system", SYSTEM, "--prompt", FRANCE])
        .args(["--temperature", "0", "--max-tokens", "24"]));
    assert!(ok, "{}: {err}", model.display());
    out
}

/// One chat request over loopback, the response's body.
fn chat(base_url: &str, model: &str) -> String {
    let address = base_url.trim_start_matches("http://");
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": FRANCE}],
        "temperature": 0, "max_tokens": 24
    })
    .to_string();
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn the_release_bundle_runs_from_an_empty_folder_without_the_build_tree() {
    let root = workspace_root();
    let output = Command::new(root.join("scripts/package"))
        .current_dir(&root)
        .output()
        .expect("scripts/package runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let archive = root.join(String::from_utf8_lossy(&output.stdout).trim());
    let name = archive
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(".tar.gz")
        .to_string();

    let home = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(home.path()));
    assert!(ok, "{err}");
    let minerva: PathBuf = home.path().join(&name).join("bin/minerva");

    // Nothing comes from the build tree (cargo's LD_LIBRARY_PATH for tests left out).
    let (ok, ldd, err) = run(Command::new("ldd").env_clear().arg(&minerva));
    assert!(ok, "{err}");
    let tree = root.to_str().unwrap();
    assert!(!ldd.contains(tree), "libraries from the build tree:\n{ldd}");
    assert!(!ldd.contains("not found"), "{ldd}");

    let (ok, engines, err) = run(clean(&minerva, home.path()).arg("engines"));
    assert!(ok, "{err}");
    for engine in ["llama", "mlx"] {
        assert!(
            engines
                .lines()
                .any(|l| l.starts_with(engine) && l.trim_end().ends_with("loaded")),
            "{engines}"
        );
    }
    // The models are copied in: the project tree stays out of reach.
    let gguf = home.path().join("model.gguf");
    std::fs::copy(smollm2_gguf(), &gguf).unwrap();
    let twin = home.path().join("twin");
    let (ok, _, err) = run(Command::new("cp").arg("-R").arg(smollm2_mlx()).arg(&twin));
    assert!(ok, "{err}");
    for model in [&gguf, &twin] {
        let text = answer(&minerva, home.path(), model);
        assert!(text.contains("Paris"), "{}: {text}", model.display());
    }

    let (mut server, url) = spawn_server(
        clean(&minerva, home.path())
            .args(["serve", "--port", "0", "--model"])
            .arg(&gguf),
    );
    let response = chat(&url, "model");
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains("Paris"),
        "{response}"
    );

    // install.sh puts it under PREFIX and links it onto PREFIX/bin.
    let prefix = home.path().join("prefix");
    let (ok, _, err) =
        run(clean(&home.path().join(&name).join("install.sh"), home.path()).env("PREFIX", &prefix));
    assert!(ok, "{err}");
    let (ok, version, err) = run(clean(&prefix.join("bin/minerva"), home.path()).arg("--version"));
    assert!(ok && version.starts_with("minerva "), "{version}{err}");
    let (ok, engines, err) = run(clean(&prefix.join("bin/minerva"), home.path()).arg("engines"));
    assert!(ok && engines.contains("loaded"), "{engines}{err}");
}
