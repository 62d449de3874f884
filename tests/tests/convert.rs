//! `minerva convert` on the real SmolLM2 GGUF: the MLX directory holds exactly the GGUF's
//! weights (checked against ggml's own dequantization), and Python mlx_lm on it gives the same
//! greedy answer as llama.cpp on the GGUF.

use std::path::Path;
use std::process::Command;

use minerva_convert::gguf_row;
use minerva_runtime::format::gguf::{Arrays, GgufFile};
use minerva_tests::weights::{ggml_values, map, mlx_values};
use minerva_tests::{minerva, run, smollm2_gguf, venv_python, workspace_root, FRANCE, SYSTEM};
use safetensors::SafeTensors;

fn convert_into(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("smollm2-mlx");
    let mut cmd = minerva();
    cmd.arg("convert")
        .arg(smollm2_gguf())
        .arg(&out)
        .args(["--to", "mlx"]);
    let (ok, stdout, err) = run(&mut cmd);
    assert!(ok, "{err}");
    assert!(stdout.contains("wrote"), "{stdout}");
    out
}

/// A tensor's values split into rows of `cols`.
fn rows(values: Vec<f32>, cols: usize) -> Vec<Vec<f32>> {
    values.chunks_exact(cols).map(<[f32]>::to_vec).collect()
}

/// Rows of a GGUF tensor dequantized by ggml itself.
fn ggml_rows(gguf: &GgufFile, map: &[u8], name: &str) -> Vec<Vec<f32>> {
    let t = gguf.tensors.iter().find(|t| t.name == name).unwrap();
    rows(ggml_values(gguf, map, t), t.dims[0] as usize)
}

/// Rows of an MLX-quantized tensor, dequantized.
fn mlx_rows(st: &SafeTensors, prefix: &str) -> Vec<Vec<f32>> {
    let scales = st.tensor(&format!("{prefix}.scales")).unwrap().shape()[1];
    rows(mlx_values(st, &format!("{prefix}.weight")), scales * 32)
}

/// Python mlx_lm's greedy answer on `model_dir`: `{"text", "prompt_ids"}`.
fn mlx_generate(model_dir: &Path) -> serde_json::Value {
    let output = Command::new(venv_python())
        .current_dir(workspace_root())
        .env("HF_HUB_OFFLINE", "1")
        .arg("tests/python/mlx_generate.py")
        .arg(model_dir)
        .args([SYSTEM, FRANCE, "24"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn converted_weights_equal_the_gguf_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let out = convert_into(dir.path());
    let gguf = GgufFile::read(&smollm2_gguf(), Arrays::Skip).unwrap();
    let gguf_map = map(&smollm2_gguf());
    let st_map = map(&out.join("model.safetensors"));
    let st = SafeTensors::deserialize(&st_map).unwrap();

    for (gguf_name, mlx_prefix) in [
        ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj"),
        ("blk.7.ffn_down.weight", "model.layers.7.mlp.down_proj"),
        ("token_embd.weight", "model.embed_tokens"),
    ] {
        let (want, got) = (
            ggml_rows(&gguf, &gguf_map, gguf_name),
            mlx_rows(&st, mlx_prefix),
        );
        assert_eq!(want.len(), got.len(), "{gguf_name}");
        assert!(want == got, "{gguf_name} differs after conversion");
    }
    // attn_q: the same rows, in Hugging Face's rotary order (9 heads in SmolLM2-135M).
    let want = ggml_rows(&gguf, &gguf_map, "blk.3.attn_q.weight");
    let got = mlx_rows(&st, "model.layers.3.self_attn.q_proj");
    for (r, row) in got.iter().enumerate() {
        assert!(*row == want[gguf_row(r, want.len(), 9)], "q row {r}");
    }

    let mut cmd = minerva();
    cmd.arg("inspect").arg(&out).arg("--json");
    let (ok, text, err) = run(&mut cmd);
    assert!(ok, "{err}");
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(info["format"], "safetensors");
    assert_eq!(info["mlx_quantized"], true);
    assert_eq!(info["engine"], "mlx");
    assert_eq!(info["parameter_count"], gguf.parameter_count());
}

#[test]
fn mlx_lm_on_the_converted_directory_answers_like_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let out = convert_into(dir.path());
    let mlx = mlx_generate(&out);
    // Same prompt tokens as llama.cpp's tokenizer gives (27, see tests/src/lib.rs).
    assert_eq!(mlx["prompt_ids"].as_array().unwrap().len(), 27);

    let mut cmd = minerva();
    cmd.arg("run").arg(smollm2_gguf()).args([
        "--system", SYSTEM, "--prompt", FRANCE, "-t", "0", "-n", "24",
    ]);
    let (ok, llama, err) = run(&mut cmd);
    assert!(ok, "{err}");
    assert_eq!(mlx["text"].as_str().unwrap(), llama.trim_end_matches('\n'));
    assert!(llama.contains("Paris"));
}

#[test]
fn bad_conversions_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("cut.gguf");
    let bytes = std::fs::read(smollm2_gguf()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let mut cmd = minerva();
    cmd.arg("convert")
        .arg(&truncated)
        .arg(dir.path().join("out"));
    let (ok, _, err) = run(&mut cmd);
    assert!(
        !ok && err.contains("cut.gguf") && err.contains("truncated"),
        "{err}"
    );

    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "x").unwrap();
    let mut cmd = minerva();
    cmd.arg("convert").arg(smollm2_gguf()).arg(&busy);
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok && err.contains("not empty"), "{err}");
    assert!(busy.join("keep.txt").exists());
}

#[test]
fn dequantized_and_requantized_copies_load_and_answer() {
    let dir = tempfile::tempdir().unwrap();
    let float = dir.path().join("f32");
    let mut cmd = minerva();
    cmd.arg("convert")
        .arg(smollm2_gguf())
        .arg(&float)
        .args(["--dtype", "f32"]);
    let (ok, _, err) = run(&mut cmd);
    assert!(ok, "{err}");

    // The float copy holds ggml's dequantized values exactly.
    let gguf = GgufFile::read(&smollm2_gguf(), Arrays::Skip).unwrap();
    let gguf_map = map(&smollm2_gguf());
    let st_map = map(&float.join("model.safetensors"));
    let st = SafeTensors::deserialize(&st_map).unwrap();
    let got = mlx_values(&st, "model.layers.0.self_attn.v_proj.weight");
    let want: Vec<f32> = ggml_rows(&gguf, &gguf_map, "blk.0.attn_v.weight").concat();
    assert!(got == want, "dequantized v_proj differs from ggml");

    // Our own 4-bit quantization of the float copy loads in mlx_lm and still answers.
    let q4 = dir.path().join("q4");
    let mut cmd = minerva();
    cmd.arg("convert")
        .arg(&float)
        .arg(&q4)
        .args(["--q-bits", "4", "--q-group-size", "32"]);
    let (ok, _, err) = run(&mut cmd);
    assert!(ok, "{err}");
    let mut cmd = minerva();
    cmd.arg("inspect").arg(&q4).arg("--json");
    let (_, text, _) = run(&mut cmd);
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(info["quantization"], "mlx affine 4-bit, group 32");
    assert_eq!(info["parameter_count"], gguf.parameter_count());
    assert!(mlx_generate(&q4)["text"]
        .as_str()
        .unwrap()
        .contains("Paris"));

    // Misuse is refused with a reason.
    for (args, why) in [
        (vec![float.clone(), dir.path().join("x")], "--q-bits"),
        (
            vec![smollm2_gguf(), dir.path().join("y")],
            "float model directories",
        ),
        (vec![q4.clone(), dir.path().join("z")], "already quantized"),
    ] {
        let mut cmd = minerva();
        cmd.arg("convert").args(&args);
        if why != "--q-bits" {
            cmd.args(["--q-bits", "4"]);
        }
        let (ok, _, err) = run(&mut cmd);
        assert!(!ok && err.contains(why), "{args:?}: {err}");
    }
}
