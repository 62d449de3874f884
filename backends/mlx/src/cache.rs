//! Per-layer key/value cache: buffers grown in steps and written in place, so a decode step
//! costs no copy of the history. The filled length can be cut back to reuse a shared prefix.

use minerva_runtime::Result;
use mlx_rs::ops::indexing::{TryIndexMutOp, TryIndexOp};
use mlx_rs::ops::{concatenate, zeros_dtype};
use mlx_rs::Array;

use crate::error::MlxResultExt;

/// Positions added to the buffers at a time.
const STEP: i32 = 256;

/// Keys and values of one attention layer, `[batch, kv_heads, positions, head_dim]`.
#[derive(Default)]
pub struct KvCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
}

impl KvCache {
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
        }
    }

    /// Keep only the first `len` positions.
    pub fn truncate(&mut self, len: i32) {
        self.offset = self.offset.min(len.max(0));
    }

    /// Append `keys`/`values` for new positions; returns the whole history.
    pub fn update(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let new = keys.dim(2);
        let start = self.offset;
        let end = start + new;
        let capacity = self.keys.as_ref().map_or(0, |k| k.dim(2));
        if end > capacity {
            let grow = (new + STEP - 1) / STEP * STEP;
            self.keys = Some(grow_buffer(self.keys.take(), keys, start, grow)?);
            self.values = Some(grow_buffer(self.values.take(), values, start, grow)?);
        }
        let (Some(k), Some(v)) = (self.keys.as_mut(), self.values.as_mut()) else {
            unreachable!("buffers exist after growing");
        };
        k.try_index_mut((.., .., start..end, ..), keys).mlx()?;
        v.try_index_mut((.., .., start..end, ..), values).mlx()?;
        self.offset = end;
        Ok((
            k.try_index((.., .., ..end, ..)).mlx()?,
            v.try_index((.., .., ..end, ..)).mlx()?,
        ))
    }
}

/// `old`'s first `filled` positions followed by `grow` zeroed ones shaped like `like`.
fn grow_buffer(old: Option<Array>, like: &Array, filled: i32, grow: i32) -> Result<Array> {
    let shape = like.shape();
    let fresh = zeros_dtype(&[shape[0], shape[1], grow, shape[3]], like.dtype()).mlx()?;
    match old {
        Some(old) if filled > 0 => {
            let kept = old.try_index((.., .., ..filled, ..)).mlx()?;
            concatenate(&[kept, fresh], 2).mlx()
        }
        _ => Ok(fresh),
    }
}
