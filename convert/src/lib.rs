//! `minerva convert`: a GGUF file -> an MLX model directory with the same weights. Q4_1, Q4_K,
//! Q5_0 and Q8_0 blocks map exactly onto MLX affine 4-, 5- and 8-bit groups of 32 ([`blocks`]);
//! the other block types (Q6_K, ...) are dequantized by ggml into floats ([`ggml`]); F32/F16 tensors
//! are copied; what llama.cpp changed in the weights (q/k row order, Gemma's norms) is undone
//! ([`arch`]); the tokenizer is rebuilt from the GGUF vocabulary ([`tokenizer`]). Scales and
//! biases are f32 (MLX's CPU kernels are ~40x slower with f16 scales).

pub mod arch;
pub mod blocks;
mod ggml;
pub mod tokenizer;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Map, Value};

use blocks::MlxRow;
use minerva_core::format::gguf::{Arrays, GgufFile, GgufTensor};
use minerva_core::{Error, Result};

/// Float type of dequantized output (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
}

impl FloatType {
    fn dtype(self) -> Dtype {
        match self {
            FloatType::F32 => Dtype::F32,
            FloatType::F16 => Dtype::F16,
            FloatType::Bf16 => Dtype::BF16,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FloatType::F32 => "float32",
            FloatType::F16 => "float16",
            FloatType::Bf16 => "bfloat16",
        }
    }

    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            FloatType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            FloatType::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            FloatType::Bf16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
        }
    }
}

/// Decode little-endian F32/F16/BF16 bytes to f32 (`None` for other types).
fn decode_floats(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

use arch::Arch;
pub use arch::SUPPORTED as SUPPORTED_ARCHITECTURES;

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct ConvertSummary {
    /// The output directory.
    pub out: PathBuf,
    /// Tensors written (packed weights, scales and biases counted separately).
    pub tensors: usize,
    /// Bytes of `model.safetensors`.
    pub weight_bytes: u64,
}

/// What a GGUF conversion has produced so far.
#[derive(Default)]
struct Written {
    /// Output tensors by name.
    tensors: BTreeMap<String, Out>,
    /// Bits of each quantized layer (by module path).
    layer_bits: BTreeMap<String, u32>,
}

/// One output tensor.
struct Out {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Convert the GGUF at `src` into an MLX directory at `out` (created; must be empty or absent):
/// exact MLX quantization, or with `dtype` dequantized floats. `progress(done, total)` is called
/// after each source tensor.
pub fn gguf_to_mlx(
    src: &Path,
    out: &Path,
    dtype: Option<FloatType>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ConvertSummary> {
    let gguf = GgufFile::read(src, Arrays::Keep)?;
    let arch_name = gguf.architecture().unwrap_or("unknown").to_string();
    let Some(arch) = Arch::of(&arch_name) else {
        return Err(Error::invalid_model(
            src,
            format!(
                "architecture `{arch_name}` cannot be converted yet (supported: {})",
                SUPPORTED_ARCHITECTURES.join(", ")
            ),
        ));
    };
    let need = |key: &str| {
        gguf.arch_u64(key).ok_or_else(|| {
            Error::invalid_model(src, format!("metadata `{arch_name}.{key}` is missing"))
        })
    };
    let n_head = need("attention.head_count")? as usize;
    let n_head_kv = gguf
        .arch_u64("attention.head_count_kv")
        .unwrap_or(n_head as u64) as usize;
    let tokenizer = tokenizer::Tokenizer::from_gguf(&gguf)?;

    create_empty_dir(out)?;

    let file = File::open(src).map_err(|e| Error::io(src, e))?;
    // SAFETY: read-only map of a file we validated; not modified while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(src, e))?;
    let mut written = Written::default();
    for (done, t) in gguf.tensors.iter().enumerate() {
        let name = arch.hf_name(&t.name).ok_or_else(|| {
            Error::invalid_model(src, format!("tensor `{}` has no known MLX name", t.name))
        })?;
        let start = (gguf.data_offset + t.offset) as usize;
        let data = &map[start..start + t.size as usize];
        let heads = if !arch.permutes_qk() {
            None
        } else if t.name.ends_with("attn_q.weight") {
            Some(n_head)
        } else if t.name.ends_with("attn_k.weight") {
            Some(n_head_kv)
        } else {
            None
        };
        let offset = if name.ends_with("norm.weight") {
            arch.norm_offset()
        } else {
            0.0
        };
        let tensor = Source {
            tensor: t,
            data,
            heads,
            offset,
        };
        convert_tensor(src, &tensor, &name, dtype, &mut written)?;
        progress(done + 1, gguf.tensors.len());
    }

    let weight_bytes = write_weights(&out.join("model.safetensors"), &written.tensors)?;
    let tied = !gguf.tensors.iter().any(|t| t.name == "output.weight");
    let mut config = model_config(
        &gguf,
        arch,
        n_head,
        n_head_kv,
        tied,
        &tokenizer,
        &written.layer_bits,
    )?;
    if let Some(dtype) = dtype {
        config["torch_dtype"] = json!(dtype.name());
    }
    write_json(&out.join("config.json"), &config)?;
    write_json(&out.join("tokenizer.json"), &tokenizer.tokenizer_json())?;
    write_json(
        &out.join("tokenizer_config.json"),
        &tokenizer.tokenizer_config(
            gguf.get_str("tokenizer.chat_template"),
            gguf.arch_u64("context_length"),
        ),
    )?;
    Ok(ConvertSummary {
        out: out.to_path_buf(),
        tensors: written.tensors.len(),
        weight_bytes,
    })
}

/// Files of a Hugging Face / MLX directory copied unchanged by [`quantize_dir`].
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
];

/// Quantize the float model directory `src` (f32/f16/bf16 safetensors) into an MLX directory at
/// `out` with `bits` per weight in groups of `group`: every 2-D `*.weight` whose rows divide
/// into groups is quantized, the rest (norms, biases) is copied.
pub fn quantize_dir(
    src: &Path,
    out: &Path,
    bits: u32,
    group: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ConvertSummary> {
    if !matches!(bits, 4 | 8) || !matches!(group, 32 | 64 | 128) {
        return Err(Error::InvalidRequest(format!(
            "quantization to {bits} bits in groups of {group} is not supported (bits 4|8, group 32|64|128)"
        )));
    }
    let dir = minerva_core::format::safetensors_dir::SafetensorsDir::read(src)?;
    if dir.config.get("quantization").is_some() || dir.config.get("quantization_config").is_some() {
        return Err(Error::invalid_model(
            src,
            "the model is already quantized; quantize a float model",
        ));
    }
    create_empty_dir(out)?;
    let mut tensors: BTreeMap<String, Out> = BTreeMap::new();
    for (done, shard) in dir.shards.iter().enumerate() {
        let file = File::open(shard).map_err(|e| Error::io(shard, e))?;
        // SAFETY: read-only map of a file validated by SafetensorsDir::read.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(shard, e))?;
        let st = safetensors::SafeTensors::deserialize(&map).map_err(|e| {
            Error::invalid_model(shard, format!("not a valid safetensors file: {e}"))
        })?;
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let quantizable =
                shape.len() == 2 && name.ends_with(".weight") && shape[1] % group == 0;
            let values = decode_floats(view.dtype(), view.data()).filter(|_| quantizable);
            let Some(values) = values else {
                let data = view.data().to_vec();
                tensors.insert(
                    name,
                    Out {
                        dtype: view.dtype(),
                        shape,
                        data,
                    },
                );
                continue;
            };
            let (rows, cols) = (shape[0], shape[1]);
            let (mut words, mut scales, mut biases) = (Vec::new(), Vec::new(), Vec::new());
            for row in values.chunks(cols) {
                let q = blocks::quantize_row(row, bits, group);
                words.extend(q.words.iter().flat_map(|w| w.to_le_bytes()));
                scales.extend(q.scales.iter().flat_map(|s| s.to_le_bytes()));
                biases.extend(q.biases.iter().flat_map(|b| b.to_le_bytes()));
            }
            let prefix = name.strip_suffix(".weight").unwrap_or(&name).to_string();
            let groups = vec![rows, cols / group];
            tensors.insert(
                format!("{prefix}.scales"),
                Out {
                    dtype: Dtype::F32,
                    shape: groups.clone(),
                    data: scales,
                },
            );
            tensors.insert(
                format!("{prefix}.biases"),
                Out {
                    dtype: Dtype::F32,
                    shape: groups,
                    data: biases,
                },
            );
            let packed = vec![rows, cols * bits as usize / 32];
            tensors.insert(
                name,
                Out {
                    dtype: Dtype::U32,
                    shape: packed,
                    data: words,
                },
            );
        }
        progress(done + 1, dir.shards.len());
    }
    let weight_bytes = write_weights(&out.join("model.safetensors"), &tensors)?;
    let mut config = dir.config.clone();
    let quant = json!({"group_size": group, "bits": bits});
    config["quantization"] = quant.clone();
    config["quantization_config"] = quant;
    write_json(&out.join("config.json"), &config)?;
    for name in TOKENIZER_FILES {
        let from = src.join(name);
        if from.is_file() {
            std::fs::copy(&from, out.join(name)).map_err(|e| Error::io(&from, e))?;
        }
    }
    Ok(ConvertSummary {
        out: out.to_path_buf(),
        tensors: tensors.len(),
        weight_bytes,
    })
}

/// Create `out`, refusing a non-empty existing directory.
fn create_empty_dir(out: &Path) -> Result<()> {
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .next()
            .is_some()
    {
        return Err(Error::invalid_model(
            out,
            "output directory exists and is not empty",
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))
}

/// Write `tensors` as one safetensors file; returns its size.
fn write_weights(path: &Path, tensors: &BTreeMap<String, Out>) -> Result<u64> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, o)| {
            TensorView::new(o.dtype, o.shape.clone(), &o.data)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::invalid_model(path, format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "mlx".to_string(),
    )]));
    safetensors::serialize_to_file(views, metadata, path)
        .map_err(|e| Error::invalid_model(path, format!("writing safetensors: {e}")))?;
    Ok(std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len())
}

/// HF row index -> GGUF row index for llama.cpp's rotary permutation of a q/k weight with
/// `heads` heads (GGUF interleaves the two rotary halves of each head).
pub fn gguf_row(hf_row: usize, rows: usize, heads: usize) -> usize {
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let (head, within) = (hf_row / head_dim, hf_row % head_dim);
    let (part, i) = (within / half, within % half);
    head * head_dim + i * 2 + part
}

/// One GGUF tensor to convert.
struct Source<'a> {
    tensor: &'a GgufTensor,
    /// Its bytes.
    data: &'a [u8],
    /// Heads of a q/k weight whose rows llama.cpp permuted.
    heads: Option<usize>,
    /// What llama.cpp added to every value (taken off again).
    offset: f32,
}

/// Converts one row of a GGUF block type to MLX groups, value for value.
type BlockConverter = fn(&[u8]) -> MlxRow;

fn convert_tensor(
    src: &Path,
    source: &Source,
    name: &str,
    float: Option<FloatType>,
    written: &mut Written,
) -> Result<()> {
    let Written {
        tensors: out,
        layer_bits,
    } = written;
    let Source {
        tensor: t,
        data,
        heads,
        offset,
    } = *source;
    let cols = t.dims[0] as usize;
    let rows: usize = t.dims[1..].iter().product::<u64>() as usize;
    let row_bytes = data.len() / rows.max(1);
    if let Some(heads) = heads {
        if !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
            return Err(Error::invalid_model(
                src,
                format!("{}: {rows} rows do not split into {heads} heads", t.name),
            ));
        }
    }
    let source_row = |r: usize| {
        let g = heads.map_or(r, |h| gguf_row(r, rows, h));
        &data[g * row_bytes..(g + 1) * row_bytes]
    };
    let shape: Vec<usize> = if t.dims.len() == 1 {
        vec![cols]
    } else {
        vec![rows, cols]
    };
    let exact: Option<(u32, BlockConverter)> = match t.ggml_type.name {
        "Q4_1" => Some((4, blocks::q4_1_row)),
        "Q8_0" => Some((8, blocks::q8_0_row)),
        "Q4_K" => Some((4, blocks::q4_k_row)),
        "Q5_0" => Some((5, blocks::q5_0_row)),
        _ => None,
    };
    match (t.ggml_type.name, exact) {
        ("F32" | "F16", _) => {
            let mut bytes = Vec::with_capacity(data.len());
            for r in 0..rows.max(1) {
                bytes.extend_from_slice(if t.dims.len() == 1 {
                    data
                } else {
                    source_row(r)
                });
            }
            let dtype = if t.ggml_type.name == "F32" {
                Dtype::F32
            } else {
                Dtype::F16
            };
            let (dtype, bytes) = match decode_floats(dtype, &bytes) {
                Some(values) if float.is_some() || offset != 0.0 => {
                    let values: Vec<f32> = values.iter().map(|v| v - offset).collect();
                    let f = float.unwrap_or(if dtype == Dtype::F32 {
                        FloatType::F32
                    } else {
                        FloatType::F16
                    });
                    (f.dtype(), f.encode(&values))
                }
                _ => (dtype, bytes),
            };
            out.insert(
                name.to_string(),
                Out {
                    dtype,
                    shape,
                    data: bytes,
                },
            );
        }
        (_, Some((bits, convert))) if float.is_none() => {
            let (mut words, mut scales, mut biases) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..rows {
                let row = convert(source_row(r));
                words.extend(row.words.iter().flat_map(|w| w.to_le_bytes()));
                scales.extend(row.scales.iter().flat_map(|s| s.to_le_bytes()));
                biases.extend(row.biases.iter().flat_map(|b| b.to_le_bytes()));
            }
            let prefix = name.strip_suffix(".weight").unwrap_or(name);
            let packed = cols * bits as usize / 32;
            out.insert(
                name.to_string(),
                Out {
                    dtype: Dtype::U32,
                    shape: vec![rows, packed],
                    data: words,
                },
            );
            for (part, values) in [("scales", scales), ("biases", biases)] {
                out.insert(
                    format!("{prefix}.{part}"),
                    Out {
                        dtype: Dtype::F32,
                        shape: vec![rows, cols / 32],
                        data: values,
                    },
                );
            }
            layer_bits.insert(prefix.to_string(), bits);
        }
        (type_name, exact) => {
            // Floats: asked for, or a block type MLX has no exact form of (f32 unless asked:
            // every value ggml computes fits it exactly).
            let mut values = Vec::with_capacity(rows * cols);
            for r in 0..rows {
                let row = match exact {
                    Some((bits, convert)) => {
                        Some(blocks::dequantize(&convert(source_row(r)), bits))
                    }
                    None => ggml::dequantize_row(t, source_row(r), cols),
                };
                let Some(row) = row else {
                    return Err(Error::invalid_model(
                        src,
                        format!(
                            "tensor `{}` is {type_name}, which ggml cannot dequantize",
                            t.name
                        ),
                    ));
                };
                values.extend(row.iter().map(|v| v - offset));
            }
            let f = float.unwrap_or(FloatType::F32);
            out.insert(
                name.to_string(),
                Out {
                    dtype: f.dtype(),
                    shape,
                    data: f.encode(&values),
                },
            );
        }
    }
    Ok(())
}

fn model_config(
    gguf: &GgufFile,
    arch: Arch,
    n_head: usize,
    n_head_kv: usize,
    tied: bool,
    tokenizer: &tokenizer::Tokenizer,
    layer_bits: &BTreeMap<String, u32>,
) -> Result<Value> {
    let u = |key: &str| gguf.arch_u64(key);
    let arch_name = gguf.architecture().unwrap_or("");
    let f = |key: &str| {
        gguf.get(&format!("{arch_name}.{key}"))
            .and_then(|v| v.as_f64())
    };
    let mut config = json!({
        "hidden_size": u("embedding_length"),
        "intermediate_size": u("feed_forward_length"),
        "num_hidden_layers": u("block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv,
        "max_position_embeddings": u("context_length"),
        "rms_norm_eps": f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        "rope_theta": f("rope.freq_base").unwrap_or(10000.0),
        "vocab_size": tokenizer.vocab_size(),
        "tie_word_embeddings": tied,
        "bos_token_id": tokenizer.bos_id(),
        "eos_token_id": tokenizer.eos_id(),
        "torch_dtype": "float32",
    });
    if let (Value::Object(config), Value::Object(own)) = (&mut config, arch.config(gguf, n_head)) {
        config.extend(own);
    }
    // The most common bit width is the default; other layers get their own entry.
    let mut counts = BTreeMap::<u32, usize>::new();
    for bits in layer_bits.values() {
        *counts.entry(*bits).or_default() += 1;
    }
    if let Some((&bits, _)) = counts.iter().max_by_key(|(_, n)| **n) {
        let mut quant = Map::new();
        quant.insert("group_size".into(), json!(32));
        quant.insert("bits".into(), json!(bits));
        for (layer, &b) in layer_bits {
            if b != bits {
                quant.insert(layer.clone(), json!({"group_size": 32, "bits": b}));
            }
        }
        config["quantization"] = Value::Object(quant.clone());
        config["quantization_config"] = Value::Object(quant);
    }
    Ok(config)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::invalid_model(path, e.to_string()))?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotary_permutation_round_trips() {
        // 2 heads of 4 rows: GGUF order per head is (i0 p0, i0 p1, i1 p0, i1 p1).
        let rows: Vec<usize> = (0..8).map(|r| gguf_row(r, 8, 2)).collect();
        assert_eq!(rows, vec![0, 2, 1, 3, 4, 6, 5, 7]);
    }
}
