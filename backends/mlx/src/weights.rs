//! The tensors of a model directory, loaded by MLX and handed out layer by layer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use minerva_runtime::{Error, Result};
use mlx_rs::ops::dequantize;
use mlx_rs::transforms::eval;
use mlx_rs::{Array, Dtype};

use crate::config::ModelConfig;
use crate::error::MlxResultExt;
use crate::layers::{Embedding, Linear, QuantParams, RmsNorm};

/// How weights are kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// As stored: quantized layers stay quantized, floats keep their type.
    AsStored,
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
    /// Load the tensors of every shard (already validated by the format reader) whose names
    /// `keep` accepts into MLX arrays; the others are never read (a rank of a split model reads
    /// only its layers). `dense_from_rows` goes to every quantized layer
    /// ([`QuantParams::dense_from_rows`]).
    pub fn load(
        dir: &Path,
        shards: &[PathBuf],
        layout: Layout,
        dense_from_rows: Option<i32>,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Weights> {
        let mut tensors = HashMap::new();
        for shard in shards {
            let mut loaded = Array::load_safetensors(shard)
                .map_err(|e| Error::invalid_model(shard, format!("MLX could not load it: {e}")))?;
            // MLX loads lazily: a tensor dropped before evaluation is never read.
            loaded.retain(|name, _| keep(name));
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

    /// The token embedding at `prefix`.
    pub fn embedding(&mut self, prefix: &str, config: &ModelConfig) -> Result<Embedding> {
        let weight = self.take(&format!("{prefix}.weight"))?;
        let quant = self.quant_params(prefix, config)?;
        let (weight, quant) = self.arrange(weight, quant)?;
        Ok(Embedding::new(weight, quant))
    }

    /// The RMSNorm at `prefix`.
    pub fn rms_norm(&mut self, prefix: &str, eps: f32) -> Result<RmsNorm> {
        let weight = self.take(&format!("{prefix}.weight"))?;
        Ok(RmsNorm::new(self.float(weight)?, eps))
    }

    /// A weight (and its quantization) in the chosen layout.
    fn arrange(
        &self,
        weight: Array,
        quant: Option<QuantParams>,
    ) -> Result<(Array, Option<QuantParams>)> {
        match (self.layout, quant) {
            (Layout::DenseF32, Some(q)) => {
                let dense = dequantize(&weight, &q.scales, q.biases.as_ref(), q.group_size, q.bits)
                    .mlx()?;
                Ok((self.float(dense)?, None))
            }
            (Layout::DenseF32, None) => Ok((self.float(weight)?, None)),
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
