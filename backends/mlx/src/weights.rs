//! The tensors of a model directory, loaded by MLX and handed out layer by layer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use minerva_core::{Error, Result};
use mlx_rs::ops::{dequantize, stack};
use mlx_rs::transforms::eval;
use mlx_rs::{Array, Dtype};

use crate::config::ModelConfig;
use crate::error::MlxResultExt;
use crate::layers::{Embedding, Linear, QuantParams, RmsNorm};
use crate::models::SwitchLinear;

/// How weights are kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// As stored: quantized layers stay quantized, floats keep their type (GPUs: half and
    /// bfloat16 kernels are the fast ones there).
    AsStored,
    /// Quantized layers stay quantized with float32 scales and biases, every other tensor is
    /// float32, so activations are float32 (the CPU beyond the dense limit). MLX's CPU kernels
    /// for half-precision activations are plain loops: its bfloat16 `quantized_matmul` took 8x
    /// and float16's 36x the float32 time at Gemma 3 270M's shapes.
    PackedF32,
    /// Everything dequantized / cast to f32 at load. On the CPU, MLX's float products go to BLAS
    /// while its quantized kernels are plain loops, so this is several times faster there, at
    /// up to 8x the memory of 4-bit weights. The values are the same numbers.
    DenseF32,
}

/// Named tensors of every shard; each is taken once by the layer that owns it.
pub struct Weights {
    dir: PathBuf,
    tensors: HashMap<String, Array>,
    layout: Layout,
    /// Set on quantized layers: see [`QuantParams::dense_from_rows`].
    dense_from_rows: Option<i32>,
}

impl Weights {
    /// Load the tensors of every shard (already validated by the format reader) named
    /// `prefix` + a name that `keep` accepts into MLX arrays, by that name; the others are never
    /// read (a rank of a split model reads only its layers, a multimodal checkpoint's text model
    /// only its own). `dense_from_rows` goes to every quantized layer
    /// ([`QuantParams::dense_from_rows`]).
    pub fn load(
        dir: &Path,
        shards: &[PathBuf],
        layout: Layout,
        dense_from_rows: Option<i32>,
        prefix: &str,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Weights> {
        let mut tensors = HashMap::new();
        for shard in shards {
            let loaded = Array::load_safetensors(shard)
                .map_err(|e| Error::invalid_model(shard, format!("MLX could not load it: {e}")))?;
            // MLX loads lazily: a tensor dropped before evaluation is never read.
            let loaded: HashMap<String, Array> = loaded
                .into_iter()
                .filter_map(|(name, a)| Some((name.strip_prefix(prefix)?.to_string(), a)))
                .filter(|(name, _)| keep(name))
                .collect();
            // Read now, so that load time is load time and a bad shard fails here.
            eval(loaded.values())
                .map_err(|e| Error::invalid_model(shard, format!("MLX could not read it: {e}")))?;
            tensors.extend(loaded);
        }
        Ok(Weights {
            dir: dir.to_path_buf(),
            tensors,
            layout,
            dense_from_rows,
        })
    }

    /// Take tensor `name`, or fail naming it.
    pub fn take(&mut self, name: &str) -> Result<Array> {
        self.tensors.remove(name).ok_or_else(|| {
            Error::invalid_model(
                &self.dir,
                format!("tensor `{name}` is missing from the weights"),
            )
        })
    }

    /// Take tensor `name` if present.
    pub fn take_optional(&mut self, name: &str) -> Option<Array> {
        self.tensors.remove(name)
    }

    /// Whether tensor `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Quantization of the layer at `prefix`: present when it has `scales`.
    fn quant_params(&mut self, prefix: &str, config: &ModelConfig) -> Result<Option<QuantParams>> {
        let Some(scales) = self.take_optional(&format!("{prefix}.scales")) else {
            return Ok(None);
        };
        let (group_size, bits) = config.quantization_of(prefix).ok_or_else(|| {
            Error::invalid_model(
                self.dir.join("config.json"),
                format!("`{prefix}` is quantized but config.json has no `quantization` for it"),
            )
        })?;
        Ok(Some(QuantParams {
            scales,
            biases: self.take_optional(&format!("{prefix}.biases")),
            group_size,
            bits,
            dense_from_rows: self.dense_from_rows,
        }))
    }

    /// The projection at `prefix` (`.weight`, optional `.bias`, and quantization if any).
    pub fn linear(&mut self, prefix: &str, config: &ModelConfig, bias: bool) -> Result<Linear> {
        let weight = self.take(&format!("{prefix}.weight"))?;
        let bias = if bias {
            Some(self.take(&format!("{prefix}.bias"))?)
        } else {
            self.take_optional(&format!("{prefix}.bias"))
        };
        let quant = self.quant_params(prefix, config)?;
        let (weight, quant) = self.arrange(weight, quant)?;
        let bias = bias.map(|b| self.float(b)).transpose()?;
        Ok(Linear::new(weight, bias, quant))
    }

    /// Projection `name` of every expert of the mixture at `prefix`: stored stacked
    /// (`{prefix}.switch_mlp.{name}`, as mlx_lm saves it) or one tensor per expert
    /// (`{prefix}.experts.{e}.{per_expert}`, as Hugging Face does), quantized or not.
    pub fn stacked(
        &mut self,
        prefix: &str,
        name: &str,
        per_expert: &str,
        experts: i32,
        config: &ModelConfig,
    ) -> Result<SwitchLinear> {
        let switch = format!("{prefix}.switch_mlp.{name}");
        let (weight, quant) = if self.has(&format!("{switch}.weight")) {
            let weight = self.take(&format!("{switch}.weight"))?;
            (weight, self.quant_params(&switch, config)?)
        } else {
            let mut parts: [Vec<Array>; 3] = Default::default();
            let mut quant = None;
            for e in 0..experts {
                let one = format!("{prefix}.experts.{e}.{per_expert}");
                parts[0].push(self.take(&format!("{one}.weight"))?);
                if let Some(q) = self.quant_params(&one, config)? {
                    parts[1].push(q.scales.clone());
                    parts[2].extend(q.biases.clone());
                    quant = Some(q);
                }
            }
            let joined = |arrays: &[Array]| -> Result<Array> {
                let joined = stack(arrays, 0).mlx()?;
                eval([&joined]).mlx()?;
                Ok(joined)
            };
            let quant = match quant {
                Some(q) => Some(QuantParams {
                    scales: joined(&parts[1])?,
                    biases: (!parts[2].is_empty())
                        .then(|| joined(&parts[2]))
                        .transpose()?,
                    ..q
                }),
                None => None,
            };
            (joined(&parts[0])?, quant)
        };
        let (weight, quant) = self.arrange(weight, quant)?;
        Ok(SwitchLinear::new(weight, quant))
    }

    /// The token embedding at `prefix`.
    pub fn embedding(&mut self, prefix: &str, config: &ModelConfig) -> Result<Embedding> {
        let weight = self.take(&format!("{prefix}.weight"))?;
        let quant = self.quant_params(prefix, config)?;
        let (weight, quant) = self.arrange(weight, quant)?;
        Ok(Embedding::new(weight, quant))
    }

    /// The RMSNorm at `prefix`; with `offset`, its stored weight `w` scales by `1 + w` (Gemma),
    /// added here once in the layout's type (the reference adds it on every call, in the type
    /// it computes in).
    pub fn rms_norm(&mut self, prefix: &str, eps: f32, offset: bool) -> Result<RmsNorm> {
        let stored = self.take(&format!("{prefix}.weight"))?;
        let mut weight = self.float(stored)?;
        if offset {
            let one = Array::from_f32(1.0).as_dtype(weight.dtype()).mlx()?;
            weight = one.add(&weight).mlx()?;
            eval([&weight]).mlx()?;
        }
        Ok(RmsNorm::new(weight, eps))
    }

    /// A weight (and its quantization) in the chosen layout.
    fn arrange(
        &self,
        weight: Array,
        quant: Option<QuantParams>,
    ) -> Result<(Array, Option<QuantParams>)> {
        match (self.layout, quant) {
            (Layout::DenseF32, Some(q)) => {
                // Scales and biases first, so that a half-precision checkpoint's weights are
                // computed in float32, not rounded to its type.
                let (scales, biases) = (self.float(q.scales)?, q.biases.map(|b| self.float(b)));
                let dense = dequantize(
                    &weight,
                    &scales,
                    biases.transpose()?.as_ref(),
                    q.group_size,
                    q.bits,
                )
                .mlx()?;
                Ok((self.float(dense)?, None))
            }
            (Layout::DenseF32 | Layout::PackedF32, None) => Ok((self.float(weight)?, None)),
            (Layout::PackedF32, Some(q)) => {
                let quant = QuantParams {
                    scales: self.float(q.scales)?,
                    biases: q.biases.map(|b| self.float(b)).transpose()?,
                    ..q
                };
                Ok((weight, Some(quant)))
            }
            (Layout::AsStored, quant) => Ok((weight, quant)),
        }
    }

    /// A float tensor in the chosen layout (evaluated, so the conversion happens once, now).
    fn float(&self, tensor: Array) -> Result<Array> {
        if self.layout == Layout::AsStored {
            return Ok(tensor);
        }
        let converted = if tensor.dtype() == Dtype::Float32 {
            tensor
        } else {
            tensor.as_dtype(Dtype::Float32).mlx()?
        };
        eval([&converted]).mlx()?;
        Ok(converted)
    }
}
