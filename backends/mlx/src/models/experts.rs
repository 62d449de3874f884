//! Mixtures of experts: a router picks `top_k` of the experts' gated MLPs for each token, and
//! their outputs are summed by the router's weights (Mixtral, Qwen2/Qwen3 MoE). The experts'
//! weights are stacked, `[experts, out, in]`, and multiplied with `gather_mm` / `gather_qmm`,
//! the tokens sorted by expert when there are many (as mlx_lm's `SwitchGLU` does).

use minerva_core::Result;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::ops::{
    argpartition_axis, argsort_axis, expand_dims_axes, gather_mm, gather_qmm, sigmoid,
    softmax_axes, sum_axis,
};
use mlx_rs::Array;

use super::{swiglu, Mlp};
use crate::error::MlxResultExt;
use crate::layers::{Linear, QuantParams};

/// From this many (token, expert) pairs on, tokens are sorted by expert first, so that each
/// expert's weights are read once (mlx_lm's threshold).
const SORT_FROM_PAIRS: usize = 64;

/// How router logits become the chosen experts' weights.
#[derive(Debug, Clone, Copy)]
pub enum Routing {
    /// Softmax over every expert, then the `top_k` likeliest; their weights renormalised to
    /// sum to one if `renormalize` (Qwen MoE).
    SoftmaxThenTopK { renormalize: bool },
    /// The `top_k` largest logits, then a softmax over those (Mixtral).
    TopKThenSoftmax,
}

/// One projection of every expert, `[experts, out, in]` (packed when quantized).
pub struct SwitchLinear {
    weight: Array,
    quant: Option<QuantParams>,
}

impl SwitchLinear {
    /// The stacked projection from its parts.
    pub fn new(weight: Array, quant: Option<QuantParams>) -> Self {
        SwitchLinear { weight, quant }
    }

    /// `x` (`[.., 1, in]`) times the transposed weight of expert `experts` (broadcast with
    /// `x`'s leading axes): `[.., 1, out]`.
    fn forward(&self, x: &Array, experts: &Array, sorted: bool) -> Result<Array> {
        match &self.quant {
            Some(q) => gather_qmm(
                x,
                &self.weight,
                &q.scales,
                q.biases.as_ref(),
                None,
                experts,
                true,
                q.group_size,
                q.bits,
                sorted,
            )
            .mlx(),
            None => gather_mm(
                x,
                self.weight.swap_axes(-1, -2).mlx()?,
                None,
                experts,
                sorted,
            )
            .mlx(),
        }
    }
}

/// The experts' gated MLPs, `silu(gate) * up` then down.
pub struct SwitchGlu {
    /// gate, up, down.
    pub projections: [SwitchLinear; 3],
}

impl SwitchGlu {
    /// Each token of `x` (`[rows, len, hidden]`) through each of its experts `experts`
    /// (`[rows, len, k]`): `[rows, len, k, hidden]`.
    fn forward(&self, x: &Array, experts: &Array) -> Result<Array> {
        let [gate, up, down] = &self.projections;
        let shape = experts.shape().to_vec();
        let k = shape[2];
        let x = expand_dims_axes(x, &[-2, -3]).mlx()?;
        let sort = experts.size() >= SORT_FROM_PAIRS;
        let (x, idx, inverse) = match sort {
            true => {
                let flat = experts.flatten(None, None).mlx()?;
                let order = argsort_axis(&flat, 0).mlx()?;
                let inverse = argsort_axis(&order, 0).mlx()?;
                let tokens = order.floor_divide(Array::from_int(k)).mlx()?;
                let x = x.flatten(0, -3).mlx()?.take_axis(&tokens, 0).mlx()?;
                (x, flat.take_axis(&order, 0).mlx()?, Some(inverse))
            }
            false => (x, experts.clone(), None),
        };
        let g = gate.forward(&x, &idx, sort)?;
        let u = up.forward(&x, &idx, sort)?;
        let y = down.forward(&swiglu(&g, &u)?, &idx, sort)?;
        let y = match inverse {
            Some(inverse) => {
                let hidden = y.dim(-1);
                y.take_axis(&inverse, 0)
                    .mlx()?
                    .reshape(&[shape[0], shape[1], k, 1, hidden])
                    .mlx()?
            }
            None => y,
        };
        y.squeeze_axes(&[-2]).mlx()
    }
}

/// A mixture-of-experts feed-forward layer.
pub struct Experts {
    /// Router: one logit per expert.
    pub router: Linear,
    /// The experts.
    pub experts: SwitchGlu,
    /// Experts per token.
    pub top_k: i32,
    /// How the router's logits weigh them.
    pub routing: Routing,
    /// An expert every token goes through, scaled by the sigmoid of its own gate (Qwen2 MoE).
    pub shared: Option<(Mlp, Linear)>,
}

impl Experts {
    /// `x` is `[rows, len, hidden]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let logits = self.router.forward(x)?;
        let k = self.top_k;
        let (chosen, weights) = match self.routing {
            Routing::SoftmaxThenTopK { renormalize } => {
                let probs = softmax_axes(&logits, &[-1], true).mlx()?;
                let chosen = argpartition_axis(&probs, -k, -1)
                    .mlx()?
                    .try_index((.., .., -k..))
                    .mlx()?;
                let mut weights = probs.take_along_axis(&chosen, -1).mlx()?;
                if renormalize {
                    let total = sum_axis(&weights, -1, true).mlx()?;
                    weights = weights.divide(&total).mlx()?;
                }
                (chosen, weights)
            }
            Routing::TopKThenSoftmax => {
                let chosen = argpartition_axis(logits.negative().mlx()?, k - 1, -1)
                    .mlx()?
                    .try_index((.., .., ..k))
                    .mlx()?;
                let top = logits.take_along_axis(&chosen, -1).mlx()?;
                (chosen, softmax_axes(&top, &[-1], true).mlx()?)
            }
        };
        let y = self.experts.forward(x, &chosen)?;
        let weighted = y.multiply(expand_dims_axes(&weights, &[-1]).mlx()?).mlx()?;
        let mut out = sum_axis(&weighted, -2, false)
            .mlx()?
            .as_dtype(y.dtype())
            .mlx()?;
        if let Some((mlp, gate)) = &self.shared {
            let scale = sigmoid(gate.forward(x)?).mlx()?;
            out = out.add(scale.multiply(mlp.forward(x)?).mlx()?).mlx()?;
        }
        Ok(out)
    }
}
