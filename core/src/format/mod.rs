//! Model format detection: what a path holds, read from headers only (no weights are loaded).

pub mod ggml_types;
pub mod gguf;
pub mod safetensors_dir;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use gguf::{Arrays, GgufFile, GGUF_MAGIC};
use safetensors_dir::SafetensorsDir;

/// The on-disk format of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// A single GGUF file (llama.cpp).
    Gguf,
    /// A directory with `config.json` and `*.safetensors` (Hugging Face or MLX layout).
    Safetensors,
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Safetensors => "safetensors",
        })
    }
}

/// What detection found out about a model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The file or directory inspected.
    pub path: PathBuf,
    /// Its format.
    pub format: ModelFormat,
    /// Architecture (`general.architecture` or `model_type`).
    pub architecture: Option<String>,
    /// Quantization or float type, e.g. `Q4_1` or `mlx affine 4-bit, group 32`.
    pub quantization: Option<String>,
    /// Number of weights.
    pub parameter_count: u64,
    /// Bytes of weight data.
    pub weight_bytes: u64,
    /// Effective bits per weight (weight bytes over weights).
    pub bits_per_weight: f64,
    /// Training context length.
    pub context_length: Option<u64>,
    /// Transformer blocks.
    pub layers: Option<u64>,
    /// Whether the model carries its own chat template.
    pub has_chat_template: bool,
    /// Number of tensors.
    pub tensor_count: usize,
}

/// A model's header as detection parsed it, handed to the engine so that it is read once.
#[derive(Debug, Clone)]
pub enum ModelHeader {
    /// A GGUF file's metadata and tensor directory (arrays skipped).
    Gguf(Arc<GgufFile>),
    /// A safetensors directory's `config.json` and shard headers.
    Safetensors(Arc<SafetensorsDir>),
}

/// What detection found: the summary, and the parsed header it came from.
#[derive(Debug, Clone)]
pub struct Detected {
    /// The summary.
    pub info: ModelInfo,
    /// The header.
    pub header: ModelHeader,
}

/// Inspect `path` and say what model it holds, or why it is not a model Minerva can use.
pub fn inspect(path: &Path) -> Result<ModelInfo> {
    detect(path).map(|d| d.info)
}

/// [`inspect`], keeping the parsed header.
pub fn detect(path: &Path) -> Result<Detected> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return inspect_dir(path);
    }
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    if head.starts_with(GGUF_MAGIC) {
        let gguf = GgufFile::read(path, Arrays::Skip)?;
        return Ok(Detected {
            info: gguf_info(&gguf),
            header: ModelHeader::Gguf(Arc::new(gguf)),
        });
    }
    if let Some(why) = pickle_reason(path, head) {
        return Err(Error::invalid_model(path, why));
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        if let Some(dir) = path.parent().filter(|d| d.join("config.json").is_file()) {
            return inspect_dir(dir);
        }
        return Err(Error::invalid_model(
            path,
            "a lone safetensors file: pass the model directory with its config.json",
        ));
    }
    Err(Error::invalid_model(
        path,
        describe_unknown(head, meta.len()),
    ))
}

fn inspect_dir(dir: &Path) -> Result<Detected> {
    if dir.join("config.json").is_file() {
        let st = SafetensorsDir::read(dir).map_err(|e| match e {
            Error::InvalidModel { path, message } if message.contains("no *.safetensors") => {
                match pickle_files(dir).first() {
                    Some(p) => Error::invalid_model(p, PICKLE_REFUSAL),
                    None => Error::InvalidModel { path, message },
                }
            }
            other => other,
        })?;
        return Ok(Detected {
            info: safetensors_info(&st),
            header: ModelHeader::Safetensors(Arc::new(st)),
        });
    }
    let mut ggufs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    ggufs.sort();
    let message = match ggufs.len() {
        1 => return detect(&ggufs[0]),
        0 => "directory has neither config.json with *.safetensors nor a .gguf file".to_string(),
        _ => format!(
            "directory holds {} GGUF files; name one of them: {}",
            ggufs.len(),
            ggufs
                .iter()
                .filter_map(|p| p.file_name()?.to_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Err(Error::invalid_model(dir, message))
}

fn gguf_info(g: &GgufFile) -> ModelInfo {
    let quantization = g
        .get_u64("general.file_type")
        .and_then(ggml_types::file_type_name)
        .map(str::to_string)
        .or_else(|| dominant_tensor_type(g));
    let params = g.parameter_count();
    ModelInfo {
        path: g.path.clone(),
        format: ModelFormat::Gguf,
        architecture: g.architecture().map(str::to_string),
        quantization,
        parameter_count: params,
        weight_bytes: g.tensor_bytes(),
        bits_per_weight: bits_per_weight(g.tensor_bytes(), params),
        context_length: g.arch_u64("context_length"),
        layers: g.arch_u64("block_count"),
        has_chat_template: g.get_str("tokenizer.chat_template").is_some(),
        tensor_count: g.tensors.len(),
    }
}

/// The ggml type holding most weights, for files without `general.file_type`.
fn dominant_tensor_type(g: &GgufFile) -> Option<String> {
    let mut by_type = std::collections::BTreeMap::<&str, u64>::new();
    for t in &g.tensors {
        *by_type.entry(t.ggml_type.name).or_default() += t.elements();
    }
    by_type
        .into_iter()
        .max_by_key(|&(_, n)| n)
        .map(|(name, _)| name.to_string())
}

fn safetensors_info(st: &SafetensorsDir) -> ModelInfo {
    ModelInfo {
        path: st.dir.clone(),
        format: ModelFormat::Safetensors,
        architecture: st.model_type().map(str::to_string),
        quantization: st.quantization(),
        parameter_count: st.parameter_count,
        weight_bytes: st.tensor_bytes,
        bits_per_weight: bits_per_weight(st.tensor_bytes, st.parameter_count),
        context_length: st.config_u64("max_position_embeddings"),
        layers: st.config_u64("num_hidden_layers"),
        has_chat_template: st.has_chat_template,
        tensor_count: st.tensor_count,
    }
}

fn bits_per_weight(bytes: u64, params: u64) -> f64 {
    if params == 0 {
        0.0
    } else {
        bytes as f64 * 8.0 / params as f64
    }
}

const PICKLE_REFUSAL: &str = "PyTorch pickle checkpoint: loading pickles can run arbitrary code, \
     so Minerva refuses them; convert the model to safetensors or GGUF first";

/// Why `path` looks like a PyTorch pickle checkpoint, if it does.
fn pickle_reason(path: &Path, head: &[u8]) -> Option<&'static str> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let raw_pickle = head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]);
    let zip = head.starts_with(b"PK\x03\x04");
    let torch_ext = matches!(ext, "bin" | "pt" | "pth" | "ckpt" | "pkl" | "pickle");
    (raw_pickle || (zip && torch_ext)).then_some(PICKLE_REFUSAL)
}

fn pickle_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| matches!(e.to_str(), Some("bin" | "pt" | "pth" | "ckpt")))
        })
        .collect();
    found.sort();
    found
}

fn describe_unknown(head: &[u8], len: u64) -> String {
    if len == 0 {
        return "empty file, not a model".to_string();
    }
    let shown: String = head
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "not a recognised model format ({len} bytes starting with {shown}); expected a GGUF file \
         or a directory with config.json and *.safetensors"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_safetensors(path: &Path, tensors: &[(&str, &str, &[usize])]) {
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for (name, dtype, shape) in tensors {
            let width = match *dtype {
                "F32" | "U32" => 4,
                _ => 2,
            };
            let bytes = shape.iter().product::<usize>() * width;
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
            );
            offset += bytes;
        }
        let json = serde_json::Value::Object(header).to_string();
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(json.as_bytes());
        out.extend(std::iter::repeat_n(0u8, offset));
        std::fs::write(path, out).unwrap();
    }

    #[test]
    fn mlx_quantized_directory_is_detected_with_unpacked_parameter_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type":"llama","num_hidden_layers":2,"max_position_embeddings":4096,
                "quantization":{"group_size":32,"bits":4}}"#,
        )
        .unwrap();
        write_safetensors(
            &dir.path().join("model.safetensors"),
            &[
                ("layers.0.q.weight", "U32", &[64, 8]),
                ("layers.0.q.scales", "F32", &[64, 2]),
                ("layers.0.q.biases", "F32", &[64, 2]),
                ("norm.weight", "F32", &[64]),
            ],
        );
        let info = inspect(dir.path()).unwrap();
        assert_eq!(info.format, ModelFormat::Safetensors);
        assert_eq!(info.architecture.as_deref(), Some("llama"));
        assert_eq!(info.parameter_count, 64 * 64 + 64);
        assert_eq!(info.layers, Some(2));
        assert_eq!(
            info.quantization.as_deref(),
            Some("mlx affine 4-bit, group 32")
        );
    }

    #[test]
    fn truncated_shard_and_missing_shard_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"model_type":"llama"}"#).unwrap();
        let shard = dir.path().join("model-00001-of-00002.safetensors");
        write_safetensors(&shard, &[("a.weight", "F32", &[16, 16])]);
        let bytes = std::fs::read(&shard).unwrap();
        std::fs::write(&shard, &bytes[..bytes.len() - 10]).unwrap();
        let err = inspect(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("model-00001-of-00002.safetensors") && err.contains("truncated"),
            "{err}"
        );

        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        write_safetensors(&shard, &[("a.weight", "F32", &[16, 16])]);
        let err = inspect(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("model-00002-of-00002.safetensors") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn pickles_and_junk_are_refused_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let pt = dir.path().join("model.pt");
        std::fs::write(&pt, b"PK\x03\x04archive/data.pkl").unwrap();
        assert!(inspect(&pt).unwrap_err().to_string().contains("pickle"));
        let raw = dir.path().join("weights.bin");
        std::fs::write(&raw, [0x80, 0x02, b'}', b'q']).unwrap();
        assert!(inspect(&raw).unwrap_err().to_string().contains("pickle"));
        let empty = dir.path().join("empty.gguf");
        std::fs::write(&empty, b"").unwrap();
        assert!(inspect(&empty).unwrap_err().to_string().contains("empty"));

        let hf = dir.path().join("hf");
        std::fs::create_dir(&hf).unwrap();
        std::fs::write(hf.join("config.json"), "{}").unwrap();
        std::fs::write(hf.join("pytorch_model.bin"), b"PK\x03\x04").unwrap();
        let err = inspect(&hf).unwrap_err().to_string();
        assert!(
            err.contains("pytorch_model.bin") && err.contains("pickle"),
            "{err}"
        );
    }

    #[test]
    fn gguf_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny.gguf");
        crate::testing::write_tiny_gguf(&p);
        let info = inspect(&p).unwrap();
        assert_eq!(info.format, ModelFormat::Gguf);
        assert_eq!(info.context_length, Some(2048));
        assert_eq!(info.quantization.as_deref(), Some("F32"));
        assert_eq!(info.bits_per_weight, 32.0);
    }
}
