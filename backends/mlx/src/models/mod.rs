//! Decoder-only transformers. The supported architectures share one implementation
//! ([`Transformer`]); each module states what its family changes ([`ArchOptions`]).

mod llama;
mod qwen2;
mod qwen3;

use std::ops::Range;
use std::path::Path;

use minerva_runtime::{Error, Result};
use mlx_rs::fast::{self, ScaledDotProductAttentionMask};
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::ops::{
    concatenate, dequantize, expand_dims, quantized_matmul, select, sigmoid, softmax_axes,
};
use mlx_rs::transforms::compile::compile;
use mlx_rs::Array;

use crate::cache::{KvCache, KvQuantization};
use crate::config::ModelConfig;
use crate::error::MlxResultExt;
use crate::layers::{Embedding, Linear, Projections, RmsNorm};
use crate::rope::Rope;
use crate::weights::Weights;

/// What an architecture changes in the shared transformer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArchOptions {
    /// Bias on the q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    /// RMSNorm of each query and key head before RoPE (Qwen3).
    pub qk_norm: bool,
}

/// The options of `config.model_type` (already checked to be supported).
fn arch_options(config: &ModelConfig, config_path: &Path) -> Result<ArchOptions> {
    match config.model_type.as_str() {
        "llama" | "mistral" => Ok(llama::options(config)),
        "qwen2" => Ok(qwen2::options(config)),
        "qwen3" => Ok(qwen3::options(config)),
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
}

impl Attention {
    /// `x` is `[rows, len, hidden]`, one row per sequence, each after what its cache holds.
    fn forward(&self, x: &Array, caches: &mut [&mut KvCache], rope: &Rope) -> Result<Array> {
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
            [cache] => self.attend(&q, &k, &v, cache, rope)?,
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
                    outs.push(self.attend(&qs[i], &ks[i], &vs[i], cache, rope)?);
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
    fn attend(
        &self,
        q: &Array,
        k: &Array,
        v: &Array,
        cache: &mut KvCache,
        rope: &Rope,
    ) -> Result<Array> {
        let offset = cache.offset();
        let q = rope.apply(q, offset)?;
        let k = rope.apply(k, offset)?;
        let (k, v) = cache.update(&k, v)?;
        match (cache.quantization(), &k[..], &v[..]) {
            (None, [k], [v]) => {
                let mask = (q.dim(2) > 1).then_some(ScaledDotProductAttentionMask::Causal);
                fast::scaled_dot_product_attention(&q, k, v, self.scale, mask, None).mlx()
            }
            (Some(quantization), _, _) if !crate::load::quantized_attention_kernels() => {
                // Dequantized history, float attention: the cache stays packed in memory.
                let float = |parts: &[Array]| {
                    let KvQuantization { bits, group_size } = quantization;
                    dequantize(&parts[0], &parts[1], Some(&parts[2]), group_size, bits).mlx()
                };
                let (k, v) = (
                    float(&k)?.as_dtype(q.dtype()).mlx()?,
                    float(&v)?.as_dtype(q.dtype()).mlx()?,
                );
                let mask = (q.dim(2) > 1).then_some(ScaledDotProductAttentionMask::Causal);
                fast::scaled_dot_product_attention(&q, &k, &v, self.scale, mask, None).mlx()
            }
            (Some(quantization), _, _) => {
                self.quantized_attention(&q, &k, &v, offset, quantization)
            }
            _ => unreachable!("a float cache stores one array for keys and one for values"),
        }
    }

    /// Attention over a quantized cache: each group of query heads sharing a KV head is
    /// multiplied with the packed keys and values directly (`quantized_matmul`), never
    /// dequantizing the history. `q` is `[1, heads, len, head_dim]`, after `offset` positions.
    fn quantized_attention(
        &self,
        q: &Array,
        keys: &[Array],
        values: &[Array],
        offset: i32,
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
        if len > 1 {
            // Query i (at position offset + i) sees keys 0..=offset + i.
            let total = offset + len;
            let key_positions = Array::arange::<_, i32>(None, total, None).mlx()?;
            let query_positions = Array::arange::<_, i32>(offset, total, None)
                .mlx()?
                .reshape(&[len, 1])
                .mlx()?;
            let visible = key_positions.le(&query_positions).mlx()?;
            let hidden = Array::from_f32(f32::NEG_INFINITY)
                .as_dtype(scores.dtype())
                .mlx()?;
            scores = select(&visible, &scores, &hidden).mlx()?;
        }
        let weights = softmax_axes(&scores, &[-1], true).mlx()?;
        quantized_matmul(&weights, &v[0], &v[1], &v[2], false, group_size, bits)
            .mlx()?
            .reshape(&[1, self.heads, len, self.head_dim])
            .mlx()
    }
}

struct Mlp {
    /// gate and up.
    gate_up: Projections,
    down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        let [gate, up]: [Array; 2] = self
            .gate_up
            .forward(x)?
            .try_into()
            .map_err(|_| Error::engine(crate::ENGINE_NAME, "gate and up expected"))?;
        self.down_proj.forward(&swiglu(&gate, &up)?)
    }
}

/// `silu(gate) * up` as one compiled (fused) kernel.
fn swiglu(gate: &Array, up: &Array) -> Result<Array> {
    let f = |(g, u): (&Array, &Array)| g.multiply(sigmoid(g)?)?.multiply(u);
    compile(f, true)((gate, up)).mlx()
}

struct Block {
    input_norm: RmsNorm,
    attention: Attention,
    post_attention_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn forward(&self, x: &Array, caches: &mut [&mut KvCache], rope: &Rope) -> Result<Array> {
        let h = x
            .add(
                self.attention
                    .forward(&self.input_norm.forward(x)?, caches, rope)?,
            )
            .mlx()?;
        h.add(self.mlp.forward(&self.post_attention_norm.forward(&h)?)?)
            .mlx()
    }
}

/// A loaded decoder: embeddings, blocks, final norm and output head.
pub struct Transformer {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Linear>,
    rope: Rope,
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
        let arch = arch_options(config, config_path)?;
        let eps = config.rms_norm_eps;
        let head_dim = config.head_dim();
        let mut blocks = Vec::with_capacity(layers.len());
        for i in layers {
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            let m = format!("{p}.mlp");
            let qk_norm = |w: &mut Weights, name: &str| -> Result<Option<RmsNorm>> {
                arch.qk_norm
                    .then(|| w.rms_norm(&format!("{a}.{name}"), eps))
                    .transpose()
            };
            let q_norm = qk_norm(weights, "q_norm")?;
            let k_norm = qk_norm(weights, "k_norm")?;
            blocks.push(Block {
                input_norm: weights.rms_norm(&format!("{p}.input_layernorm"), eps)?,
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
                    scale: (head_dim as f32).powf(-0.5),
                },
                post_attention_norm: weights
                    .rms_norm(&format!("{p}.post_attention_layernorm"), eps)?,
                mlp: Mlp {
                    gate_up: Projections::new(
                        ["gate_proj", "up_proj"]
                            .iter()
                            .map(|n| weights.linear(&format!("{m}.{n}"), config, arch.mlp_bias))
                            .collect::<Result<_>>()?,
                    )?,
                    down_proj: weights.linear(&format!("{m}.down_proj"), config, arch.mlp_bias)?,
                },
            });
        }
        // A tied head reuses the embedding; some tied checkpoints still ship a copy.
        let lm_head = if config.tie_word_embeddings && !weights.has("lm_head.weight") {
            None
        } else {
            Some(weights.linear("lm_head", config, false)?)
        };
        Ok(Transformer {
            embed: weights.embedding("model.embed_tokens", config)?,
            blocks,
            norm: weights.rms_norm("model.norm", eps)?,
            lm_head,
            rope: Rope::new(config, config_path)?,
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
        self.layer_states(&self.embed.forward(tokens)?, caches)
    }

    /// Hidden states `[rows, n, hidden]` through these blocks (a share of a model split over a
    /// ring takes them from the previous rank).
    pub fn layer_states(&self, hidden: &Array, caches: &mut [&mut Vec<KvCache>]) -> Result<Array> {
        let mut h = hidden.clone();
        for (layer, block) in self.blocks.iter().enumerate() {
            let mut layer_caches: Vec<&mut KvCache> =
                caches.iter_mut().map(|c| &mut c[layer]).collect();
            h = block.forward(&h, &mut layer_caches, &self.rope)?;
        }
        Ok(h)
    }
}
