//! Hugging Face / MLX model directories: `config.json` plus one or more `*.safetensors` shards.
//! Only headers are read (through a memory map, so no weight page is touched).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensorError};
use safetensors::SafeTensors;
use serde_json::Value;

use crate::error::{Error, Result};

/// What the headers and `config.json` of a safetensors model directory say.
#[derive(Debug, Clone)]
pub struct SafetensorsDir {
    /// The directory.
    pub dir: PathBuf,
    /// The parsed `config.json`.
    pub config: Value,
    /// The shard files, sorted.
    pub shards: Vec<PathBuf>,
    /// Number of tensors over all shards.
    pub tensor_count: usize,
    /// Logical weights (packed quantized weights counted unpacked).
    pub parameter_count: u64,
    /// Bytes of tensor data over all shards.
    pub tensor_bytes: u64,
    /// Whether the model ships a chat template.
    pub has_chat_template: bool,
}

impl SafetensorsDir {
    /// Read `config.json` and every shard header of `dir`.
    pub fn read(dir: &Path) -> Result<SafetensorsDir> {
        let config_path = dir.join("config.json");
        let config: Value = read_json(&config_path)?;
        if !config.is_object() {
            return Err(Error::invalid_model(&config_path, "not a JSON object"));
        }
        let shards = shard_files(dir)?;
        let quant = config
            .get("quantization")
            .or(config.get("quantization_config"));
        let mut tensor_count = 0;
        let mut parameter_count = 0;
        let mut tensor_bytes = 0;
        for shard in &shards {
            let header = read_header(shard)?;
            tensor_count += header.len();
            for (name, (dtype, elements)) in &header {
                tensor_bytes += elements * dtype.bitsize() as u64 / 8;
                if name.ends_with(".scales") || name.ends_with(".biases") {
                    continue;
                }
                parameter_count += logical_elements(name, *dtype, *elements, &header, quant);
            }
        }
        let has_chat_template = dir.join("chat_template.jinja").is_file()
            || dir.join("chat_template.json").is_file()
            || read_json(&dir.join("tokenizer_config.json"))
                .map(|c| c.get("chat_template").is_some_and(|t| !t.is_null()))
                .unwrap_or(false);
        Ok(SafetensorsDir {
            dir: dir.to_path_buf(),
            config,
            shards,
            tensor_count,
            parameter_count,
            tensor_bytes,
            has_chat_template,
        })
    }

    /// A top-level integer from `config.json` (or its `text_config`).
    pub fn config_u64(&self, key: &str) -> Option<u64> {
        self.config
            .get(key)
            .or_else(|| self.config.get("text_config")?.get(key))
            .and_then(Value::as_u64)
    }

    /// `model_type` from `config.json`.
    pub fn model_type(&self) -> Option<&str> {
        self.config.get("model_type").and_then(Value::as_str)
    }

    /// A readable description of the weights' quantization or float type.
    pub fn quantization(&self) -> Option<String> {
        if let Some(q) = self.config.get("quantization") {
            let bits = q.get("bits").and_then(Value::as_u64);
            let group = q.get("group_size").and_then(Value::as_u64);
            let mode = q.get("mode").and_then(Value::as_str).unwrap_or("affine");
            // Layers quantized otherwise (a converted K-quant GGUF mixes widths).
            let mut others: Vec<u64> = q
                .as_object()
                .into_iter()
                .flat_map(|layers| layers.values())
                .filter_map(|layer| layer.get("bits")?.as_u64())
                .filter(|b| Some(*b) != bits)
                .collect();
            others.sort_unstable();
            others.dedup();
            let mixed = match others.as_slice() {
                [] => String::new(),
                list => {
                    let list: Vec<String> = list.iter().map(u64::to_string).collect();
                    format!(" (some layers {}-bit)", list.join(", "))
                }
            };
            return Some(match (bits, group) {
                (Some(b), Some(g)) => format!("mlx {mode} {b}-bit, group {g}{mixed}"),
                _ => format!("mlx {mode}{mixed}"),
            });
        }
        if let Some(q) = self.config.get("quantization_config") {
            let method = q
                .get("quant_method")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            return Some(format!("{method} (quantization_config)"));
        }
        self.config
            .get("torch_dtype")
            .or(self.config.get("dtype"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

/// Shards named by `model.safetensors.index.json`, or else every `*.safetensors` in the directory.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        let index = read_json(&index_path)?;
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::invalid_model(&index_path, "no `weight_map` object"))?;
        let mut names: Vec<&str> = map.values().filter_map(Value::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let mut shards = Vec::new();
        for name in names {
            let shard = dir.join(name);
            if !shard.is_file() {
                return Err(Error::invalid_model(
                    &shard,
                    format!("shard listed in {} is missing", index_path.display()),
                ));
            }
            shards.push(shard);
        }
        return Ok(shards);
    }
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    shards.sort();
    if shards.is_empty() {
        return Err(Error::invalid_model(
            dir,
            "config.json found but no *.safetensors weights",
        ));
    }
    Ok(shards)
}

/// Tensor name -> (dtype, element count) of one shard, validated against the file's size.
fn read_header(path: &Path) -> Result<BTreeMap<String, (Dtype, u64)>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and dropped before returning; only the header pages are touched.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let (_, metadata) = SafeTensors::read_metadata(&map).map_err(|e| {
        let why = match e {
            SafeTensorError::MetadataIncompleteBuffer | SafeTensorError::InvalidHeaderLength => {
                "safetensors file is truncated (its header describes more data than the file has)"
                    .to_string()
            }
            SafeTensorError::HeaderTooSmall => "not a safetensors file (too small)".to_string(),
            other => format!("not a valid safetensors file: {other}"),
        };
        Error::invalid_model(path, why)
    })?;
    Ok(metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let elements = info.shape.iter().map(|&d| d as u64).product();
            (name, (info.dtype, elements))
        })
        .collect())
}

/// Weights a tensor stands for: MLX packs `32 / bits` quantized values into each `u32`.
fn logical_elements(
    name: &str,
    dtype: Dtype,
    elements: u64,
    header: &BTreeMap<String, (Dtype, u64)>,
    quant: Option<&Value>,
) -> u64 {
    let Some(prefix) = name.strip_suffix(".weight") else {
        return elements;
    };
    let Some((_, scale_count)) = header.get(&format!("{prefix}.scales")) else {
        return elements;
    };
    if dtype != Dtype::U32 {
        return elements;
    }
    let layer = quant.and_then(|q| q.get(prefix)).filter(|v| v.is_object());
    let group = layer
        .or(quant)
        .and_then(|q| q.get("group_size"))
        .and_then(Value::as_u64)
        .unwrap_or(64);
    scale_count * group
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::invalid_model(path, format!("invalid JSON: {e}")))
}
