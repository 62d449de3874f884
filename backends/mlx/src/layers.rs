//! Building blocks shared by the architectures: projections (float or MLX-quantized),
//! embeddings and RMSNorm.

use minerva_runtime::Result;
use mlx_rs::ops::{dequantize, quantized_matmul};
use mlx_rs::{fast, Array};

use crate::error::MlxResultExt;

/// MLX affine quantization of one layer.
pub struct QuantParams {
    /// Per-group scales.
    pub scales: Array,
    /// Per-group offsets.
    pub biases: Option<Array>,
    /// Weights per group.
    pub group_size: i32,
    /// Bits per weight.
    pub bits: i32,
    /// Inputs of at least this many rows dequantize the weight and take a float product (BLAS
    /// on the CPU) instead of MLX's quantized kernel, whose CPU version dequantizes again for
    /// every row; `None`: always the quantized kernel.
    pub dense_from_rows: Option<i32>,
}

/// `x W^T`, with `W` dense or MLX-quantized.
fn times_transposed(x: &Array, weight: &Array, quant: Option<&QuantParams>) -> Result<Array> {
    let rows = (x.size() / x.dim(-1).max(1) as usize) as i32;
    match quant {
        Some(q) if q.dense_from_rows.is_some_and(|n| rows >= n) => {
            let dense =
                dequantize(weight, &q.scales, q.biases.as_ref(), q.group_size, q.bits).mlx()?;
            x.matmul(dense.t()).mlx()
        }
        Some(q) => quantized_matmul(
            x,
            weight,
            &q.scales,
            q.biases.as_ref(),
            true,
            q.group_size,
            q.bits,
        )
        .mlx(),
        None => x.matmul(weight.t()).mlx(),
    }
}

/// `y = x W^T + b`, with W dense or quantized.
pub struct Linear {
    weight: Array,
    bias: Option<Array>,
    quant: Option<QuantParams>,
}

impl Linear {
    /// A projection from its parts.
    pub fn new(weight: Array, bias: Option<Array>, quant: Option<QuantParams>) -> Self {
        Linear {
            weight,
            bias,
            quant,
        }
    }

    /// Apply to `x` (last axis = input features).
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let y = times_transposed(x, &self.weight, self.quant.as_ref())?;
        match &self.bias {
            Some(b) => y.add(b).mlx(),
            None => Ok(y),
        }
    }
}

/// Token embedding table, dense or quantized; doubles as the output head when tied.
pub struct Embedding {
    weight: Array,
    quant: Option<QuantParams>,
}

impl Embedding {
    /// An embedding from its parts.
    pub fn new(weight: Array, quant: Option<QuantParams>) -> Self {
        Embedding { weight, quant }
    }

    /// Rows for token ids `ids`.
    pub fn forward(&self, ids: &Array) -> Result<Array> {
        match &self.quant {
            Some(q) => {
                let rows = self.weight.take_axis(ids, 0).mlx()?;
                let scales = q.scales.take_axis(ids, 0).mlx()?;
                let biases = match &q.biases {
                    Some(b) => Some(b.take_axis(ids, 0).mlx()?),
                    None => None,
                };
                dequantize(&rows, &scales, biases.as_ref(), q.group_size, q.bits).mlx()
            }
            None => self.weight.take_axis(ids, 0).mlx(),
        }
    }

    /// Logits over the vocabulary for hidden states `x` (tied output head).
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        times_transposed(x, &self.weight, self.quant.as_ref())
    }
}

/// Root-mean-square normalisation over the last axis.
pub struct RmsNorm {
    weight: Array,
    eps: f32,
}

impl RmsNorm {
    /// A norm with learned `weight`.
    pub fn new(weight: Array, eps: f32) -> Self {
        RmsNorm { weight, eps }
    }

    /// Normalise `x`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        fast::rms_norm(x, Some(&self.weight), self.eps).mlx()
    }
}
