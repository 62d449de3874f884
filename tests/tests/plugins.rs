//! Engines as run-time plugins: the llama and MLX backends built as `cdylib` plugins, loaded
//! together into one `minerva serve` that answers a request on each; a plugin with a wrong
//! interface version and a shared library that is not a plugin are refused by name while the
//! rest runs; a missing plugin folder is an error naming it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use minerva_tests::{
    minerva, minerva_bin, run, smollm2_gguf, smollm2_mlx, spawn_server, venv_python, FRANCE, SYSTEM,
};

/// Build both plugins (once per test process) and return their files.
fn plugins() -> &'static [PathBuf; 2] {
    static BUILT: OnceLock<[PathBuf; 2]> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = minerva_tests::workspace_root();
        // The whole workspace, as the test build has it: only the two cdylibs are linked anew.
        let status = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["build", "--release", "--workspace"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the plugins failed");
        let dir = minerva_bin().parent().unwrap().to_path_buf();
        ["llama", "mlx"].map(|e| dir.join(format!("libminerva_plugin_{e}.so")))
    })
}

/// Compile C `source` into a shared library at `out`.
fn compile_c(source: &str, out: &Path) {
    let c = out.with_extension("c");
    std::fs::write(&c, source).unwrap();
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(out)
        .arg(&c)
        .status()
        .expect("cc runs");
    assert!(status.success());
    std::fs::remove_file(c).unwrap();
}

/// A plugin folder with both real plugins, one with a wrong interface version and one shared
/// library that is no plugin at all.
fn plugin_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for plugin in plugins() {
        std::fs::copy(plugin, dir.path().join(plugin.file_name().unwrap())).unwrap();
    }
    compile_c(
        r#"#include <stdint.h>
struct declaration { uint32_t api_version; const char *abi; void *(*create)(void); };
static void *create(void) { return 0; }
struct declaration minerva_plugin_v1(void) {
    struct declaration d = { 999, "another build", create };
    return d;
}"#,
        &dir.path().join("wrong-version.so"),
    );
    compile_c(
        "int answer(void) { return 42; }",
        &dir.path().join("not-a-plugin.so"),
    );
    dir
}

#[test]
fn plugins_are_listed_and_bad_ones_refused_by_name() {
    let folder = plugin_folder();
    let (ok, out, err) = run(minerva()
        .env("MINERVA_PLUGIN_DIRS", folder.path())
        .args(["engines", "--json"]));
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    for (name, file, format) in [
        ("llama", "libminerva_plugin_llama.so", "gguf"),
        ("mlx", "libminerva_plugin_mlx.so", "safetensors"),
    ] {
        let row = rows.iter().find(|r| r["name"] == name).unwrap();
        assert!(row["source"].as_str().unwrap().ends_with(file), "{row}");
        assert!(
            row["status"]
                .as_str()
                .unwrap()
                .contains("replaces the built-in"),
            "{row}"
        );
        assert_eq!(row["formats"][0], format);
        // The llama engine names its CPU level too: `cpu (zen4)`.
        assert!(row["device"].as_str().unwrap().starts_with("cpu"), "{row}");
    }
    let skipped = |file: &str| {
        rows.iter()
            .find(|r| r["source"].as_str().unwrap().ends_with(file))
            .map(|r| r["status"].as_str().unwrap().to_string())
            .unwrap()
    };
    let wrong = skipped("wrong-version.so");
    assert!(wrong.contains("interface version 999"), "{wrong}");
    let junk = skipped("not-a-plugin.so");
    assert!(junk.contains("not a Minerva plugin"), "{junk}");

    let (ok, _, err) = run(minerva()
        .env("MINERVA_PLUGIN_DIRS", "/no/such/plugin-folder")
        .arg("engines"));
    assert!(!ok && err.contains("/no/such/plugin-folder"), "{err}");
}

#[test]
fn one_server_serves_a_model_on_each_plugin_engine() {
    let folder = plugin_folder();
    let log = tempfile::NamedTempFile::new().unwrap();
    let (mut server, url) = spawn_server(
        minerva()
            .env("MINERVA_PLUGIN_DIRS", folder.path())
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
            .arg("--model")
            .arg(smollm2_mlx())
            .stderr(log.reopen().unwrap()),
    );
    let ask = |model: &str| {
        let script = format!(
            "from openai import OpenAI\n\
             c = OpenAI(base_url='{url}/v1', api_key='none')\n\
             r = c.chat.completions.create(model='{model}', temperature=0, max_tokens=16,\n\
                 messages=[{{'role': 'system', 'content': '{SYSTEM}'}}, {{'role': 'user', 'content': '{FRANCE}'}}])\n\
             print(r.choices[0].message.content)\n"
        );
        let out = Command::new(venv_python())
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let llama = ask("SmolLM2-135M-Instruct.Q4_1");
    let mlx = ask("SmolLM2-135M-Instruct-mlx");
    let _ = server.kill();
    let _ = server.wait();
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        llama.contains("Paris") && mlx.contains("Paris"),
        "{llama} / {mlx}"
    );
    for file in ["libminerva_plugin_llama.so", "libminerva_plugin_mlx.so"] {
        assert!(
            log.lines()
                .any(|l| l.contains("plugin engine loaded") && l.contains(file)),
            "{file} not loaded:\n{log}"
        );
    }
    assert!(
        log.contains("wrong-version.so") && log.contains("not-a-plugin.so"),
        "{log}"
    );
}
