//! Decoder-only transformers. The supported architectures share one implementation
//! ([`Transformer`]); each module states what its family changes ([`Family`]).

mod experts;
mod gemma3;
mod llama;
mod mixtral;
mod qwen2;
mod qwen3;
mod qwen_moe;

pub use experts::SwitchLinear;

use std::ops::Range;
use std::path::Path;

use minerva_core::{Error, Result};
use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::ops::{
    clip, concatenate, dequantize, expand_dims, quantized_matmul, select, sigmoid, softmax_axes,
    tanh,
};
use mlx_rs::transforms::compile::compile;
use mlx_rs::{Array, Dtype};

use crate::cache::{KvCache, KvQuantization};
use crate::config::ModelConfig;
use crate::error::MlxResultExt;
use crate::layers::{Embedding, Linear, Projections, RmsNorm};
use crate::rope::Rope;
use crate::weights::Weights;
use experts::{Experts, Routing, SwitchGlu};

/// What an architecture changes in the shared transformer, the same in every layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArchOptions {
    /// Bias on the q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    /// RMSNorm of each query and key head before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Norm weights stored as offsets from one: the scale is `1 + w` (Gemma).
    pub norm_offset: bool,
    /// Attention and MLP outputs are normed too before they join the residual stream, the MLP's
    /// input by a norm of its own (Gemma 2/3: four norms per block).
    pub sandwich_norms: bool,
    /// A float16 residual stream is summed in float32 and clipped to float16's range (Gemma).
    pub clipped_residual: bool,
    /// The MLP's gate activation.
    pub activation: Activation,
    /// Embeddings are multiplied by the square root of the hidden size, rounded to bfloat16
    /// (Gemma).
    pub embed_scale: bool,
    /// Scale of the attention scores; `head_dim^-1/2` when `None`.
    pub attention_scale: Option<f32>,
    /// The mixture of experts of the layers that have one.
    pub moe: Option<Moe>,
}

/// A family's mixture-of-experts layers.
#[derive(Debug, Clone, Copy)]
pub struct Moe {
    /// Experts in each mixture.
    pub experts: i32,
    /// Experts each token goes through.
    pub top_k: i32,
    /// How the router's logits weigh them.
    pub routing: Routing,
    /// The mixture's tensors are named `{layer}.{path}.*`.
    pub path: &'static str,
    /// Hugging Face's names of each expert's gate, up and down projections.
    pub per_expert: [&'static str; 3],
    /// Every token also goes through a shared expert, sigmoid-gated (Qwen2 MoE).
    pub shared_expert: bool,
}

/// The gate activation of a gated MLP.
#[derive(Debug, Clone, Copy, Default)]
pub enum Activation {
    /// `silu(gate) * up` (SwiGLU).
    #[default]
    Silu,
    /// `gelu_tanh(gate) * up` (GeGLU with GELU's tanh approximation).
    GeluTanh,
}

/// What differs between one layer and the next.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layer {
    /// Keys within this many positions of the query (its own included); all when `None`.
    pub window: Option<i32>,
    /// An unscaled RoPE base of its own (Gemma 3's sliding layers); the model's RoPE when
    /// `None`.
    pub rope_base: Option<f32>,
    /// A mixture of experts ([`ArchOptions::moe`]) instead of the dense MLP.
    pub experts: bool,
}

/// An architecture: its options and each layer.
pub struct Family {
    /// The same in every layer.
    pub options: ArchOptions,
    /// One per layer of the model.
    pub layers: Vec<Layer>,
}

impl Family {
    /// Every layer alike: attending to every earlier position with the model's RoPE, and a
    /// mixture of experts if the options have one.
    fn uniform(options: ArchOptions, config: &ModelConfig) -> Family {
        let layer = Layer {
            experts: options.moe.is_some(),
            ..Layer::default()
        };
        Family {
            options,
            layers: vec![layer; config.num_hidden_layers],
        }
    }
}

/// The family of `config.model_type` (already checked to be supported).
fn family(config: &ModelConfig, config_path: &Path) -> Result<Family> {
    match config.model_type.as_str() {
        "llama" | "mistral" => Ok(Family::uniform(llama::options(config), config)),
        "qwen2" => Ok(Family::uniform(qwen2::options(config), config)),
        "qwen3" => Ok(Family::uniform(qwen3::options(config), config)),
        "gemma3_text" => gemma3::family(config, config_path),
        "mixtral" => mixtral::family(config, config_path),
        "qwen2_moe" | "qwen3_moe" => qwen_moe::family(config, config_path),
        other => Err(Error::invalid_model(
            config_path,
            format!("model_type `{other}` is not supported by the MLX engine"),
        )),
    }
}

struct Attention {
    /// q, k and v.
    qkv: Projections,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: i32,
    kv_heads: i32,
    head_dim: i32,
    scale: f32,
    /// See [`Layer::window`].
    window: Option<i32>,
    rope: Rope,
}

impl Attention {
    /// `x` is `[rows, len, hidden]`, one row per sequence, each after what its cache holds.
    fn forward(&self, x: &Array, caches: &mut [&mut KvCache]) -> Result<Array> {
        let (rows, len) = (x.dim(0), x.dim(1));
        let (heads, kv_heads) = (self.heads, self.kv_heads);
        // `[rows, heads + 2 kv_heads, len, head_dim]`, copied once into that layout, so that q, k
        // and v are each a contiguous slice of it rather than a strided view of the projection's
        // output: MLX 0.32's CUDA `rope` reads such a view wrongly (garbage after a few prompt
        // tokens, an illegal memory access at a few hundred).
        let all = self
            .qkv
            .forward_joined(x)?
            .reshape(&[rows, len, heads + 2 * kv_heads, self.head_dim])
            .mlx()?
            .transpose_axes(&[0, 2, 1, 3])
            .mlx()?
            .contiguous()
            .mlx()?;
        let [q, k, v]: [Array; 3] = all
            .split_at_indices(&[heads, heads + kv_heads], 1)
            .mlx()?
            .try_into()
            .map_err(|_| Error::engine(crate::ENGINE_NAME, "q, k and v expected"))?;
        let normed = |y: Array, norm: Option<&RmsNorm>| match norm {
            Some(n) => n.forward(&y),
            None => Ok(y),
        };
        let q = normed(q, self.q_norm.as_ref())?;
        let k = normed(k, self.k_norm.as_ref())?;
        let out = match caches {
            [cache] => self.attend(&q, &k, &v, cache)?,
            // Sequences hold different positions: attention runs per sequence; the projections
            // around it are batched.
            _ => {
                let (qs, ks, vs) = (
                    q.split_equal(rows, 0).mlx()?,
                    k.split_equal(rows, 0).mlx()?,
                    v.split_equal(rows, 0).mlx()?,
                );
                let mut outs = Vec::with_capacity(rows as usize);
                for (i, cache) in caches.iter_mut().enumerate() {
                    outs.push(self.attend(&qs[i], &ks[i], &vs[i], cache)?);
                }
                concatenate(&outs, 0).mlx()?
            }
        };
        let out = out
            .transpose_axes(&[0, 2, 1, 3])
            .mlx()?
            .reshape(&[rows, len, self.heads * self.head_dim])
            .mlx()?;
        self.o_proj.forward(&out)
    }

    /// Attention of one sequence's `[1, heads, len, head_dim]` queries over its cache.
    fn attend(&self, q: &Array, k: &Array, v: &Array, cache: &mut KvCache) -> Result<Array> {
        let offset = cache.offset();
        let q = self.rope.apply(q, offset)?;
        let k = self.rope.apply(k, offset)?;
        let (k, v) = cache.update(&k, v)?;
        // Keys before `first` are outside every query's window.
        let first = self.window.map_or(0, |w| (offset + 1 - w).max(0));
        let (k, v) = (from_position(k, first)?, from_position(v, first)?);
        let len = q.dim(2);
        let quantized = cache.quantization();
        if let Some(quantization) = quantized.filter(|_| crate::load::quantized_attention_kernels())
        {
            let mask = (len > 1)
                .then(|| visible(offset, len, first, self.window))
                .transpose()?;
            return self.quantized_attention(&q, &k, &v, mask.as_ref(), quantization);
        }
        let (k, v) = match quantized {
            None => (k[0].clone(), v[0].clone()),
            // Dequantized history, float attention: the cache stays packed in memory.
            Some(KvQuantization { bits, group_size }) => {
                let float = |parts: &[Array]| {
                    dequantize(&parts[0], &parts[1], Some(&parts[2]), group_size, bits)
                        .mlx()?
                        .as_dtype(q.dtype())
                        .mlx()
                };
                (float(&k)?, float(&v)?)
            }
        };
        // One query sees every key kept; a causal mask is aligned to the last key; a window
        // narrower than the keys needs its own mask.
        let windowed = self.window.is_some_and(|w| w < offset + len - first);
        let explicit = match (len, windowed) {
            (1, _) | (_, false) => None,
            _ => Some(visible(offset, len, first, self.window)?),
        };
        let mask = match (&explicit, len) {
            (Some(mask), _) => Some(ScaledDotProductAttentionMask::Array(mask)),
            (None, 1) => None,
            (None, _) => Some(ScaledDotProductAttentionMask::Causal),
        };
        fast::scaled_dot_product_attention(&q, &k, &v, self.scale, mask, None).mlx()
    }

    /// Attention over a quantized cache: each group of query heads sharing a KV head is
    /// multiplied with the packed keys and values directly (`quantized_matmul`), never
    /// dequantizing the history. `q` is `[1, heads, len, head_dim]`; `visible` is which keys
    /// each query sees (all when `None`).
    fn quantized_attention(
        &self,
        q: &Array,
        keys: &[Array],
        values: &[Array],
        visible: Option<&Array>,
        quantization: KvQuantization,
    ) -> Result<Array> {
        let (len, KvQuantization { bits, group_size }) = (q.dim(2), quantization);
        let per_kv = self.heads / self.kv_heads;
        let q = q
            .multiply(Array::from_f32(self.scale))
            .mlx()?
            .reshape(&[1, self.kv_heads, per_kv, len, self.head_dim])
            .mlx()?;
        let grouped = |parts: &[Array]| -> Result<Vec<Array>> {
            parts.iter().map(|p| expand_dims(p, 2).mlx()).collect()
        };
        let (k, v) = (grouped(keys)?, grouped(values)?);
        let mut scores = quantized_matmul(&q, &k[0], &k[1], &k[2], true, group_size, bits).mlx()?;
        if let Some(visible) = visible {
            let hidden = Array::from_f32(f32::NEG_INFINITY)
                .as_dtype(scores.dtype())
                .mlx()?;
            scores = select(visible, &scores, &hidden).mlx()?;
        }
        let weights = softmax_axes(&scores, &[-1], true).mlx()?;
        quantized_matmul(&weights, &v[0], &v[1], &v[2], false, group_size, bits)
            .mlx()?
            .reshape(&[1, self.heads, len, self.head_dim])
            .mlx()
    }
}

/// The positions from `first` on of a cache's keys or values (every part, when quantized).
fn from_position(parts: Vec<Array>, first: i32) -> Result<Vec<Array>> {
    if first == 0 {
        return Ok(parts);
    }
    parts
        .iter()
        .map(|p| p.try_index((.., .., first.., ..)).mlx())
        .collect()
}

/// Which of the keys at `first..offset + len` each of the `len` queries at `offset..` sees,
/// `[len, keys]`: those at or before its own position and, with a `window`, within it.
fn visible(offset: i32, len: i32, first: i32, window: Option<i32>) -> Result<Array> {
    let end = offset + len;
    let keys = Array::arange::<_, i32>(first, end, None).mlx()?;
    let queries = Array::arange::<_, i32>(offset, end, None)
        .mlx()?
        .reshape(&[len, 1])
        .mlx()?;
    let causal = keys.le(&queries).mlx()?;
    match window {
        None => Ok(causal),
        Some(w) => {
            let near = keys.add(Array::from_int(w)).mlx()?.gt(&queries).mlx()?;
            causal.logical_and(&near).mlx()
        }
    }
}

struct Mlp {
    /// gate and up.
    gate_up: Projections,
    down_proj: Linear,
    activation: Activation,
}

impl Mlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        let [gate, up]: [Array; 2] = self
            .gate_up
            .forward(x)?
            .try_into()
            .map_err(|_| Error::engine(crate::ENGINE_NAME, "gate and up expected"))?;
        let hidden = match self.activation {
            Activation::Silu => swiglu(&gate, &up)?,
            Activation::GeluTanh => geglu(&gate, &up)?,
        };
        self.down_proj.forward(&hidden)
    }
}

/// `silu(gate) * up` as one compiled (fused) kernel.
fn swiglu(gate: &Array, up: &Array) -> Result<Array> {
    let f = |(g, u): (&Array, &Array)| g.multiply(sigmoid(g)?)?.multiply(u);
    compile(f, true)((gate, up)).mlx()
}

/// `gelu_tanh(gate) * up` as one compiled kernel, in the gate's type: MLX's `gelu_approx`,
/// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
fn geglu(gate: &Array, up: &Array) -> Result<Array> {
    let f = |(g, u): (&Array, &Array)| {
        let c = |v: f32| Array::from_f32(v).as_dtype(g.dtype());
        let cubed = g.multiply(g)?.multiply(g)?;
        let inner = g.add(cubed.multiply(c(0.044715)?)?)?;
        let t = tanh(inner.multiply(c((2.0 / std::f32::consts::PI).sqrt())?)?)?;
        c(0.5)?.multiply(g)?.multiply(c(1.0)?.add(t)?)?.multiply(u)
    };
    compile(f, true)((gate, up)).mlx()
}

/// A block's feed-forward layer.
enum FeedForward {
    Dense(Mlp),
    Experts(Box<Experts>),
}

impl FeedForward {
    fn forward(&self, x: &Array) -> Result<Array> {
        match self {
            FeedForward::Dense(mlp) => mlp.forward(x),
            FeedForward::Experts(experts) => experts.forward(x),
        }
    }
}

struct Block {
    attention_norm: RmsNorm,
    attention: Attention,
    /// Norms the attention's output (sandwich norms).
    attention_out_norm: Option<RmsNorm>,
    mlp_norm: RmsNorm,
    mlp: FeedForward,
    /// Norms the MLP's output (sandwich norms).
    mlp_out_norm: Option<RmsNorm>,
    clipped_residual: bool,
}

impl Block {
    fn forward(&self, x: &Array, caches: &mut [&mut KvCache]) -> Result<Array> {
        let out = |y: Array, norm: &Option<RmsNorm>| match norm {
            Some(n) => n.forward(&y),
            None => Ok(y),
        };
        let r = self
            .attention
            .forward(&self.attention_norm.forward(x)?, caches)?;
        let h = self.residual(x, &out(r, &self.attention_out_norm)?)?;
        let r = self.mlp.forward(&self.mlp_norm.forward(&h)?)?;
        self.residual(&h, &out(r, &self.mlp_out_norm)?)
    }

    /// `x + y`; in float32 and clipped to float16's range for a clipped float16 stream.
    fn residual(&self, x: &Array, y: &Array) -> Result<Array> {
        if !self.clipped_residual || x.dtype() != Dtype::Float16 {
            return x.add(y).mlx();
        }
        let sum = x
            .as_dtype(Dtype::Float32)
            .mlx()?
            .add(y.as_dtype(Dtype::Float32).mlx()?)
            .mlx()?;
        // float16's largest finite value.
        let bound = 65504.0f32;
        clip(&sum, (-bound, bound))
            .mlx()?
            .as_dtype(Dtype::Float16)
            .mlx()
    }
}

/// A loaded decoder: embeddings, blocks, final norm and output head.
pub struct Transformer {
    embed: Embedding,
    /// Multiplies the embeddings (Gemma).
    embed_scale: Option<f32>,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
}

impl Transformer {
    /// Build the model of `config` from `weights` (Hugging Face tensor names), with the blocks
    /// of `layers` only (all of them, or this rank's share of a model split over a ring).
    pub fn new(
        config: &ModelConfig,
        config_path: &Path,
        weights: &mut Weights,
        layers: Range<usize>,
    ) -> Result<Self> {
        let family = family(config, config_path)?;
        let arch = family.options;
        let eps = config.rms_norm_eps;
        let head_dim = config.head_dim();
        let rope = Rope::new(config, config_path)?;
        let norm = |w: &mut Weights, name: &str| w.rms_norm(name, eps, arch.norm_offset);
        let mut blocks = Vec::with_capacity(layers.len());
        for i in layers {
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            let m = format!("{p}.mlp");
            let layer = family.layers[i];
            let optional = |w: &mut Weights, on: bool, name: &str| -> Result<Option<RmsNorm>> {
                on.then(|| w.rms_norm(name, eps, arch.norm_offset))
                    .transpose()
            };
            let q_norm = optional(weights, arch.qk_norm, &format!("{a}.q_norm"))?;
            let k_norm = optional(weights, arch.qk_norm, &format!("{a}.k_norm"))?;
            let sandwich = arch.sandwich_norms;
            // Llama's `post_attention_layernorm` is the MLP's input norm; Gemma's norms the
            // attention's output, and the MLP has a norm of its own.
            let (attention_out_norm, mlp_norm) = match sandwich {
                true => (
                    Some(norm(weights, &format!("{p}.post_attention_layernorm"))?),
                    norm(weights, &format!("{p}.pre_feedforward_layernorm"))?,
                ),
                false => (
                    None,
                    norm(weights, &format!("{p}.post_attention_layernorm"))?,
                ),
            };
            blocks.push(Block {
                attention_norm: norm(weights, &format!("{p}.input_layernorm"))?,
                attention: Attention {
                    qkv: Projections::new(
                        ["q_proj", "k_proj", "v_proj"]
                            .iter()
                            .map(|n| weights.linear(&format!("{a}.{n}"), config, arch.qkv_bias))
                            .collect::<Result<_>>()?,
                    )?,
                    o_proj: weights.linear(&format!("{a}.o_proj"), config, arch.o_bias)?,
                    q_norm,
                    k_norm,
                    heads: config.num_attention_heads,
                    kv_heads: config.kv_heads(),
                    head_dim,
                    scale: arch
                        .attention_scale
                        .unwrap_or((head_dim as f64).powf(-0.5) as f32),
                    window: layer.window,
                    rope: match layer.rope_base {
                        Some(base) => Rope::plain(head_dim, base),
                        None => rope.clone(),
                    },
                },
                attention_out_norm,
                mlp_norm,
                mlp: match (arch.moe, layer.experts) {
                    (Some(moe), true) => {
                        FeedForward::Experts(Box::new(experts(weights, config, &p, moe)?))
                    }
                    _ => FeedForward::Dense(mlp(weights, config, &m, arch)?),
                },
                mlp_out_norm: optional(
                    weights,
                    sandwich,
                    &format!("{p}.post_feedforward_layernorm"),
                )?,
                clipped_residual: arch.clipped_residual,
            });
        }
        // A tied head reuses the embedding (a copy some tied checkpoints still ship is
        // dropped); a checkpoint without a head is tied, as the reference reads it.
        let tied = config.tie_word_embeddings || !weights.has("lm_head.weight");
        let lm_head = match tied {
            true => None,
            false => Some(weights.linear("lm_head", config, false)?),
        };
        let embed_scale = arch
            .embed_scale
            .then(|| bf16_round((config.hidden_size as f32).sqrt()));
        Ok(Transformer {
            embed: weights.embedding("model.embed_tokens", config)?,
            embed_scale,
            blocks,
            norm: norm(weights, "model.norm")?,
            lm_head,
        })
    }

    /// Layers, i.e. caches needed.
    pub fn layers(&self) -> usize {
        self.blocks.len()
    }

    /// Run `tokens` (`[rows, n]`, one row per sequence, each after what its per-layer `caches`
    /// hold) through the embedding and these blocks, then `rest` (the layers other processes
    /// hold, or nothing); returns the logits of each row's last `last` positions,
    /// `[rows, last, vocab]`, or `None` when `last` is 0 (only the caches are wanted).
    pub fn forward(
        &self,
        tokens: &Array,
        caches: &mut [&mut Vec<KvCache>],
        last: i32,
        rest: impl FnOnce(Array) -> Result<Array>,
    ) -> Result<Option<Array>> {
        let h = rest(self.blocks(tokens, caches)?)?;
        if last == 0 {
            return Ok(None);
        }
        // Only the last positions' logits are used: skip the output head for the others.
        let n = h.dim(1);
        let h = h.try_index((.., n - last.min(n).., ..)).mlx()?;
        let h = self.norm.forward(&h)?;
        match &self.lm_head {
            Some(head) => head.forward(&h).map(Some),
            None => self.embed.as_linear(&h).map(Some),
        }
    }

    /// The final-norm hidden states of every position, `[rows, n, hidden]` (embeddings).
    pub fn hidden_states(&self, tokens: &Array, caches: &mut [&mut Vec<KvCache>]) -> Result<Array> {
        self.norm.forward(&self.blocks(tokens, caches)?)
    }

    /// The embedding and every block, before the final norm.
    fn blocks(&self, tokens: &Array, caches: &mut [&mut Vec<KvCache>]) -> Result<Array> {
        let mut h = self.embed.forward(tokens)?;
        if let Some(scale) = self.embed_scale {
            let scale = Array::from_f32(scale).as_dtype(h.dtype()).mlx()?;
            h = h.multiply(&scale).mlx()?;
        }
        self.layer_states(&h, caches)
    }

    /// Hidden states `[rows, n, hidden]` through these blocks (a share of a model split over a
    /// ring takes them from the previous rank).
    pub fn layer_states(&self, hidden: &Array, caches: &mut [&mut Vec<KvCache>]) -> Result<Array> {
        let mut h = hidden.clone();
        for (layer, block) in self.blocks.iter().enumerate() {
            let mut layer_caches: Vec<&mut KvCache> =
                caches.iter_mut().map(|c| &mut c[layer]).collect();
            h = block.forward(&h, &mut layer_caches)?;
        }
        Ok(h)
    }
}

/// The gated MLP at `prefix`.
fn mlp(
    weights: &mut Weights,
    config: &ModelConfig,
    prefix: &str,
    arch: ArchOptions,
) -> Result<Mlp> {
    let bias = arch.mlp_bias;
    Ok(Mlp {
        gate_up: Projections::new(
            ["gate_proj", "up_proj"]
                .iter()
                .map(|n| weights.linear(&format!("{prefix}.{n}"), config, bias))
                .collect::<Result<_>>()?,
        )?,
        down_proj: weights.linear(&format!("{prefix}.down_proj"), config, bias)?,
        activation: arch.activation,
    })
}

/// The mixture of experts of the layer at `layer`.
fn experts(weights: &mut Weights, config: &ModelConfig, layer: &str, moe: Moe) -> Result<Experts> {
    let at = format!("{layer}.{}", moe.path);
    let [gate, up, down] = moe.per_expert;
    let mut switch = |name: &str, hf: &str| weights.stacked(&at, name, hf, moe.experts, config);
    let projections = [
        switch("gate_proj", gate)?,
        switch("up_proj", up)?,
        switch("down_proj", down)?,
    ];
    let shared = match moe.shared_expert {
        true => {
            let options = ArchOptions::default();
            let expert = mlp(weights, config, &format!("{at}.shared_expert"), options)?;
            let gate = weights.linear(&format!("{at}.shared_expert_gate"), config, false)?;
            Some((expert, gate))
        }
        false => None,
    };
    Ok(Experts {
        router: weights.linear(&format!("{at}.gate"), config, false)?,
        experts: SwitchGlu { projections },
        top_k: moe.top_k,
        routing: moe.routing,
        shared,
    })
}

/// `x` rounded to the nearest bfloat16 (ties to even), as a float32.
fn bf16_round(x: f32) -> f32 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) & 0xFFFF_0000;
    f32::from_bits(rounded)
}

#[cfg(test)]
mod tests {
    use mlx_rs::transforms::eval;

    use super::*;

    #[test]
    fn bf16_rounding_matches_mlx() {
        for x in [
            640f32.sqrt(),
            1152f32.sqrt(),
            2560f32.sqrt(),
            5376f32.sqrt(),
            1.0,
        ] {
            let mlx = Array::from_f32(x).as_dtype(Dtype::Bfloat16).unwrap();
            let mlx = mlx.as_dtype(Dtype::Float32).unwrap();
            eval([&mlx]).unwrap();
            assert_eq!(bf16_round(x), mlx.as_slice::<f32>()[0], "{x}");
        }
    }

    #[test]
    fn a_window_hides_keys_behind_it() {
        // Queries at 3..5 over keys 1..5, window 3: query 3 sees 1..=3, query 4 sees 2..=4.
        let mask = visible(3, 2, 1, Some(3)).unwrap();
        eval([&mask]).unwrap();
        assert_eq!(mask.shape(), [2, 4]);
        assert_eq!(
            mask.as_slice::<bool>(),
            [true, true, true, false, false, true, true, true]
        );
        let causal = visible(1, 2, 0, None).unwrap();
        eval([&causal]).unwrap();
        assert_eq!(
            causal.as_slice::<bool>(),
            [true, true, false, true, true, true]
        );
    }
}
