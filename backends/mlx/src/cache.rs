//! Per-layer key/value cache: buffers grown in steps and written in place, so a decode step
//! costs no copy of the history. The filled length can be cut back to reuse a shared prefix.
//! Keys and values are kept as floats, or quantized in groups along the head dimension
//! ([`KvQuantization`]: MLX's affine packing, as its quantized matmul reads it).

use minerva_core::Result;
use mlx_rs::ops::indexing::{TryIndexMutOp, TryIndexOp};
use mlx_rs::ops::{concatenate, quantize, zeros_dtype};
use mlx_rs::Array;

use crate::error::MlxResultExt;

/// Positions added to the buffers at a time.
const STEP: i32 = 256;

/// How a quantized cache packs keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuantization {
    /// Bits per element (4 or 8).
    pub bits: i32,
    /// Elements sharing one scale and bias.
    pub group_size: i32,
}

/// One layer's keys or values for every position held, `[batch, kv_heads, positions, ..]`:
/// `[data]` for floats, `[packed, scales, biases]` when quantized.
pub type Stored = Vec<Array>;

/// Keys and values of one attention layer.
#[derive(Default)]
pub struct KvCache {
    keys: Stored,
    values: Stored,
    offset: i32,
    quantization: Option<KvQuantization>,
}

impl KvCache {
    /// An empty cache storing floats, or quantized as `quantization` says.
    pub fn new(quantization: Option<KvQuantization>) -> Self {
        KvCache {
            quantization,
            ..KvCache::default()
        }
    }

    /// How it quantizes, if it does.
    pub fn quantization(&self) -> Option<KvQuantization> {
        self.quantization
    }

    /// Positions held.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// The buffers, for evaluation.
    pub fn arrays(&self) -> impl Iterator<Item = &Array> {
        self.keys.iter().chain(self.values.iter())
    }

    /// A cache holding this one's first `len` positions (sharing its buffers until either is
    /// written).
    pub fn prefix(&self, len: i32) -> KvCache {
        KvCache {
            keys: self.keys.clone(),
            values: self.values.clone(),
            offset: self.offset.min(len.max(0)),
            quantization: self.quantization,
        }
    }

    /// Keep only the first `len` positions.
    pub fn truncate(&mut self, len: i32) {
        self.offset = self.offset.min(len.max(0));
    }

    /// Append `keys`/`values` (`[batch, kv_heads, new, head_dim]` floats) for new positions;
    /// returns the whole history as stored.
    pub fn update(&mut self, keys: &Array, values: &Array) -> Result<(Stored, Stored)> {
        let new = keys.dim(2);
        let start = self.offset;
        let end = start + new;
        let (keys, values) = (self.stored(keys)?, self.stored(values)?);
        let capacity = self.keys.first().map_or(0, |k| k.dim(2));
        if end > capacity {
            let grow = (new + STEP - 1) / STEP * STEP;
            self.keys = grow_buffers(std::mem::take(&mut self.keys), &keys, start, grow)?;
            self.values = grow_buffers(std::mem::take(&mut self.values), &values, start, grow)?;
        }
        for (buffers, parts) in [(&mut self.keys, &keys), (&mut self.values, &values)] {
            for (buffer, part) in buffers.iter_mut().zip(parts) {
                buffer.try_index_mut((.., .., start..end, ..), part).mlx()?;
            }
        }
        self.offset = end;
        let history = |buffers: &Stored| -> Result<Stored> {
            buffers
                .iter()
                .map(|b| b.try_index((.., .., ..end, ..)).mlx())
                .collect()
        };
        Ok((history(&self.keys)?, history(&self.values)?))
    }

    /// New positions as this cache stores them.
    fn stored(&self, x: &Array) -> Result<Stored> {
        match self.quantization {
            None => Ok(vec![x.clone()]),
            Some(q) => {
                let (packed, scales, biases) = quantize(x, q.group_size, q.bits).mlx()?;
                Ok(vec![packed, scales, biases])
            }
        }
    }
}

/// Each of `old`'s first `filled` positions followed by `grow` zeroed ones shaped like the
/// matching part of `like`.
fn grow_buffers(old: Stored, like: &Stored, filled: i32, grow: i32) -> Result<Stored> {
    like.iter()
        .enumerate()
        .map(|(i, part)| {
            let shape = part.shape();
            let fresh = zeros_dtype(&[shape[0], shape[1], grow, shape[3]], part.dtype()).mlx()?;
            match old.get(i) {
                Some(old) if filled > 0 => {
                    let kept = old.try_index((.., .., ..filled, ..)).mlx()?;
                    concatenate(&[kept, fresh], 2).mlx()
                }
                _ => Ok(fresh),
            }
        })
        .collect()
}
