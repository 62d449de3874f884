//! Building blocks shared by the architectures: projections (float or MLX-quantized),
//! embeddings and RMSNorm.

use minerva_core::Result;
use mlx_rs::ops::{concatenate, dequantize, quantized_matmul};
use mlx_rs::transforms::eval;
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
    /// Inputs of at least this many rows dequantize the weight and take a float32 product (BLAS
    /// on the CPU, where activations are float32: the `PackedF32` layout) instead of MLX's
    /// quantized kernel, whose CPU version dequantizes again for every row; `None`: always the
    /// quantized kernel.
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

/// Several projections of one input (q, k and v; gate and up) as one product when their weights
/// are stored alike (all float, or quantized with the same bits and group size, biases on all
/// or none): one kernel instead of one per projection. On an H200 a decode step's time went to
/// building and dispatching its kernels. Each output row is the same dot product either way.
pub enum Projections {
    /// One product over the concatenated weights; `ends` are where each output ends.
    Fused { linear: Linear, ends: Vec<i32> },
    /// Stored differently (e.g. a K-quant GGUF's v at more bits than q and k): one each.
    Apart(Vec<Linear>),
}

impl Projections {
    /// `parts`, fused when they can be.
    pub fn new(parts: Vec<Linear>) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Ok(Projections::Apart(parts));
        };
        let alike = parts.iter().all(|p| {
            p.bias.is_some() == first.bias.is_some()
                && match (&p.quant, &first.quant) {
                    (None, None) => p.weight.dtype() == first.weight.dtype(),
                    (Some(a), Some(b)) => {
                        (a.bits, a.group_size, a.biases.is_some(), a.dense_from_rows)
                            == (b.bits, b.group_size, b.biases.is_some(), b.dense_from_rows)
                    }
                    _ => false,
                }
        });
        if parts.len() < 2 || !alike {
            return Ok(Projections::Apart(parts));
        }
        // Evaluated now, so the copy happens once, at load.
        let joined = |pick: &dyn Fn(&Linear) -> Option<&Array>| -> Result<Option<Array>> {
            let arrays: Option<Vec<&Array>> = parts.iter().map(pick).collect();
            let Some(arrays) = arrays else {
                return Ok(None);
            };
            let joined = concatenate(&arrays, 0).mlx()?;
            eval([&joined]).mlx()?;
            Ok(Some(joined))
        };
        let ends = parts
            .iter()
            .scan(0, |end, p| {
                *end += p.weight.dim(0);
                Some(*end)
            })
            .collect();
        let quant = match &first.quant {
            None => None,
            Some(q) => Some(QuantParams {
                scales: joined(&|p| p.quant.as_ref().map(|q| &q.scales))?
                    .expect("every part is quantized"),
                biases: joined(&|p| p.quant.as_ref().and_then(|q| q.biases.as_ref()))?,
                group_size: q.group_size,
                bits: q.bits,
                dense_from_rows: q.dense_from_rows,
            }),
        };
        let linear = Linear {
            weight: joined(&|p| Some(&p.weight))?.expect("every part has a weight"),
            bias: joined(&|p| p.bias.as_ref())?,
            quant,
        };
        Ok(Projections::Fused { linear, ends })
    }

    /// Every projection of `x` side by side along the last axis, in the order given to
    /// [`Projections::new`].
    pub fn forward_joined(&self, x: &Array) -> Result<Array> {
        match self {
            Projections::Fused { linear, .. } => linear.forward(x),
            Projections::Apart(parts) => {
                let outputs = parts
                    .iter()
                    .map(|p| p.forward(x))
                    .collect::<Result<Vec<_>>>()?;
                concatenate(&outputs, -1).mlx()
            }
        }
    }

    /// Each projection of `x`, in the order given to [`Projections::new`].
    pub fn forward(&self, x: &Array) -> Result<Vec<Array>> {
        match self {
            Projections::Fused { linear, ends } => linear
                .forward(x)?
                .split_at_indices(&ends[..ends.len() - 1], -1)
                .mlx(),
            Projections::Apart(parts) => parts.iter().map(|p| p.forward(x)).collect(),
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

#[cfg(test)]
mod tests {
    use mlx_rs::ops::quantize;
    use mlx_rs::random::normal;

    use super::*;

    /// A quantized projection of 64 inputs onto `outputs`, with a bias.
    fn quantized(outputs: i32, bits: i32) -> Linear {
        let weight = normal::<f32>(&[outputs, 64], None, None, None).unwrap();
        let (packed, scales, biases) = quantize(&weight, 32, bits).unwrap();
        let quant = QuantParams {
            scales,
            biases: Some(biases),
            group_size: 32,
            bits,
            dense_from_rows: None,
        };
        let bias = normal::<f32>(&[outputs], None, None, None).unwrap();
        Linear::new(packed, Some(bias), Some(quant))
    }

    fn outputs(p: &Projections, x: &Array) -> Vec<Vec<f32>> {
        p.forward(x)
            .unwrap()
            .iter()
            .map(|y| {
                // A split is a strided view: copy it into one row.
                let y = y.reshape(&[-1]).unwrap();
                eval([&y]).unwrap();
                y.as_slice::<f32>().to_vec()
            })
            .collect()
    }

    #[test]
    fn fused_projections_give_each_projection_exactly() {
        let x = normal::<f32>(&[1, 3, 64], None, None, None).unwrap();
        let parts = vec![quantized(96, 4), quantized(32, 4), quantized(32, 4)];
        // The same arrays, kept apart.
        let share = |l: &Linear| Linear {
            weight: l.weight.clone(),
            bias: l.bias.clone(),
            quant: l.quant.as_ref().map(|q| QuantParams {
                scales: q.scales.clone(),
                biases: q.biases.clone(),
                ..*q
            }),
        };
        let apart = Projections::Apart(parts.iter().map(share).collect());
        let fused = Projections::new(parts).unwrap();
        assert!(matches!(fused, Projections::Fused { .. }));
        let (f, s) = (outputs(&fused, &x), outputs(&apart, &x));
        assert_eq!(f.iter().map(Vec::len).collect::<Vec<_>>(), [288, 96, 96]);
        assert_eq!(f, s);
    }

    #[test]
    fn projections_stored_differently_stay_apart() {
        let mixed = Projections::new(vec![quantized(32, 4), quantized(32, 8)]).unwrap();
        assert!(matches!(mixed, Projections::Apart(_)));
    }
}
