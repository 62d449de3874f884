//! MLX's side of the generation core: one forward pass per step for every sequence generating a
//! token (batched projections, attention over each sequence's own cache), prompt chunks as passes
//! of their own, device picks (`argmax`) queued with `async_eval` so the core can feed them to the
//! next step before reading them back, as mlx_lm's pipelined decoding does.

use minerva_core::generation::{BatchEntry, BatchToken, Evaluator, Limits, SavedState, Wanted};
use minerva_core::{Error, Result};
use mlx_rs::ops::concatenate;
use mlx_rs::ops::indexing::{argmax_axis, TryIndexOp};
use mlx_rs::transforms::{async_eval, eval};
use mlx_rs::{Array, Dtype};

use crate::cache::{KvCache, KvQuantization};
use crate::distributed::Pipeline;
use crate::error::MlxResultExt;
use crate::models::Transformer;
use crate::ENGINE_NAME;

/// A loaded model and one KV cache per sequence.
pub struct MlxEvaluator {
    model: Transformer,
    /// Per sequence, one cache per layer.
    caches: Vec<Vec<KvCache>>,
    limits: Limits,
    /// Logits rows of the last step, on the device until first read.
    rows: Vec<Array>,
    /// The same rows on the host, once read.
    host: Vec<Vec<f32>>,
    /// The other ranks' layers, when the model is split over an MLX ring.
    pipeline: Option<Pipeline>,
}

impl MlxEvaluator {
    /// Evaluate `model` within `limits`, its KV caches quantized as `quantization` says, the
    /// layers it lacks on the other ranks of `pipeline`.
    pub fn new(
        model: Transformer,
        limits: Limits,
        quantization: Option<KvQuantization>,
        pipeline: Option<Pipeline>,
    ) -> Self {
        let layers = model.layers();
        MlxEvaluator {
            caches: (0..limits.slots)
                .map(|_| (0..layers).map(|_| KvCache::new(quantization)).collect())
                .collect(),
            model,
            limits,
            rows: Vec::new(),
            host: Vec::new(),
            pipeline,
        }
    }

    /// One forward pass over the entries `group` (each of one token, or a single longer one):
    /// per entry, its device pick (`[1]`) or its logits rows (`[n, vocab]`), or nothing.
    fn pass(
        &mut self,
        entries: &[BatchEntry],
        group: &[usize],
        previous: Option<&Array>,
    ) -> Result<Vec<Option<Array>>> {
        let len = entries[group[0]].tokens.len() as i32;
        let ids = group
            .iter()
            .flat_map(|&i| entries[i].tokens.iter())
            .map(|&t| Self::token(t, previous))
            .collect::<Result<Vec<_>>>()?;
        let tokens = concatenate(&ids, 0)
            .mlx()?
            .reshape(&[group.len() as i32, len])
            .mlx()?;
        let last = group
            .iter()
            .map(|&i| outputs(&entries[i]))
            .max()
            .unwrap_or(0);
        let seqs: Vec<usize> = group.iter().map(|&i| entries[i].slot).collect();
        let mut caches = pick_caches(&mut self.caches, seqs.iter().copied());
        let pipeline = self.pipeline.as_ref();
        let rest = |hidden: Array| match pipeline {
            Some(pipeline) => pipeline.through_others(&hidden, &seqs),
            None => Ok(hidden),
        };
        let Some(out) = self.model.forward(&tokens, &mut caches, last, rest)? else {
            return Ok(vec![None; group.len()]);
        };
        let rows = match group.len() {
            1 => vec![out],
            n => out.split_equal(n as i32, 0).mlx()?,
        };
        group
            .iter()
            .zip(rows)
            .map(|(&i, row)| {
                // `[last, vocab]` for this entry.
                let row = row.squeeze_axes(&[0]).mlx()?;
                let n = row.dim(0);
                Ok(match entries[i].wanted {
                    Wanted::Nothing => None,
                    Wanted::Pick => {
                        Some(argmax_axis(&row.try_index(n - 1..n).mlx()?, -1, None).mlx()?)
                    }
                    Wanted::Logits(k) => Some(row.try_index(n - (k as i32).min(n)..).mlx()?),
                })
            })
            .collect()
    }

    fn cache_arrays(&self) -> impl Iterator<Item = &Array> {
        self.caches.iter().flatten().flat_map(KvCache::arrays)
    }

    /// One token id of an entry as a `[1]` array.
    fn token(token: BatchToken, previous: Option<&Array>) -> Result<Array> {
        match token {
            BatchToken::Id(id) => Ok(Array::from_slice(&[id], &[1])),
            BatchToken::Picked(row) => {
                let picks = previous
                    .ok_or_else(|| Error::engine(ENGINE_NAME, "a picked token is missing"))?;
                picks.try_index(row as i32..row as i32 + 1).mlx()
            }
        }
    }
}

/// How many last positions of `entry` need logits.
fn outputs(entry: &BatchEntry) -> i32 {
    match entry.wanted {
        Wanted::Nothing => 0,
        Wanted::Pick => 1,
        Wanted::Logits(n) => n.min(entry.tokens.len()) as i32,
    }
}

impl Evaluator for MlxEvaluator {
    type Picks = Array;

    fn limits(&self) -> Limits {
        self.limits
    }

    fn pipelined(&self) -> bool {
        true
    }

    fn evaluate(&mut self, entries: &[BatchEntry], previous: Option<&Array>) -> Result<Array> {
        self.rows.clear();
        self.host.clear();
        // Entries of one token share one pass; longer ones (prompt chunks) get a pass each.
        let single: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].tokens.len() == 1)
            .collect();
        let mut passes: Vec<Vec<usize>> = Vec::new();
        if !single.is_empty() {
            passes.push(single);
        }
        passes.extend(
            (0..entries.len())
                .filter(|&i| entries[i].tokens.len() > 1)
                .map(|i| vec![i]),
        );
        let mut results: Vec<Option<Array>> = vec![None; entries.len()];
        let mut prefill_only = false;
        for group in passes {
            let out = self.pass(entries, &group, previous)?;
            prefill_only |= out.iter().all(Option::is_none);
            for (i, result) in group.into_iter().zip(out) {
                results[i] = result;
            }
        }
        let mut picks = Vec::new();
        for (entry, result) in entries.iter().zip(results) {
            match (entry.wanted, result) {
                (Wanted::Pick, Some(pick)) => picks.push(pick),
                (Wanted::Logits(_), Some(rows)) => {
                    self.rows.extend(rows.split_equal(rows.dim(0), 0).mlx()?)
                }
                _ => {}
            }
        }
        let picks = match picks.is_empty() {
            true => Array::from_slice::<u32>(&[], &[0]),
            false => concatenate(&picks, 0).mlx()?,
        };
        async_eval([&picks]).mlx()?;
        if prefill_only {
            // Keep the graph of a long prompt bounded: materialise its caches chunk by chunk.
            eval(self.cache_arrays()).mlx()?;
        }
        Ok(picks)
    }

    fn logits(&mut self, row: usize) -> Result<&[f32]> {
        if self.host.is_empty() && !self.rows.is_empty() {
            eval(&self.rows).mlx()?;
            for r in &self.rows {
                let r = r.as_dtype(Dtype::Float32).mlx()?;
                self.host.push(r.as_slice::<f32>().to_vec());
            }
        }
        self.host.get(row).map(Vec::as_slice).ok_or_else(|| {
            Error::engine(ENGINE_NAME, format!("no logits row {row} in the last step"))
        })
    }

    fn read_picks(&mut self, picks: &Array) -> Result<Vec<u32>> {
        eval([picks]).mlx()?;
        Ok(picks
            .as_dtype(Dtype::Uint32)
            .mlx()?
            .as_slice::<u32>()
            .to_vec())
    }

    fn truncate(&mut self, slot: usize, len: usize) -> Result<()> {
        for cache in &mut self.caches[slot] {
            cache.truncate(len as i32);
        }
        match &self.pipeline {
            Some(pipeline) => pipeline.truncate(slot, len),
            None => Ok(()),
        }
    }

    fn copy_prefix(&mut self, from: usize, to: usize, len: usize) -> Result<()> {
        if let Some(pipeline) = &self.pipeline {
            pipeline.copy_prefix(from, to, len)?;
        }
        let copy: Vec<KvCache> = self.caches[from]
            .iter()
            .map(|c| c.prefix(len as i32))
            .collect();
        self.caches[to] = copy;
        Ok(())
    }

    /// The sequence's per-layer caches, sharing their buffers: MLX arrays are never written in
    /// place while another holder keeps them, so the copy costs nothing until the slot is
    /// written again.
    fn save_state(&mut self, slot: usize) -> Result<Option<SavedState>> {
        if self.pipeline.is_some() {
            // The other ranks' shares of the state stay there; no prompt store for a split model.
            return Ok(None);
        }
        let caches: Vec<KvCache> = self.caches[slot]
            .iter()
            .map(|c| c.prefix(c.offset()))
            .collect();
        let bytes = caches
            .iter()
            .flat_map(KvCache::arrays)
            .map(Array::nbytes)
            .sum();
        Ok(Some(SavedState {
            bytes,
            data: Box::new(caches),
        }))
    }

    fn restore_state(&mut self, slot: usize, state: &SavedState) -> Result<()> {
        let caches = state.data.downcast_ref::<Vec<KvCache>>().ok_or_else(|| {
            Error::engine(
                ENGINE_NAME,
                "restoring a sequence's state: not an MLX state",
            )
        })?;
        self.caches[slot] = caches.iter().map(|c| c.prefix(c.offset())).collect();
        Ok(())
    }

    fn settle(&mut self) -> Result<()> {
        eval(self.cache_arrays()).mlx()
    }

    fn embed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if self.pipeline.is_some() {
            return Err(Error::InvalidRequest(
                "embeddings are not served by a model split over an MLX ring".into(),
            ));
        }
        // A cache of its own, filled chunk by chunk: long inputs never build one huge graph.
        let mut cache: Vec<KvCache> = (0..self.model.layers())
            .map(|_| KvCache::default())
            .collect();
        let mut sum: Option<Array> = None;
        for chunk in tokens.chunks(self.limits.batch_tokens.max(1)) {
            let input = Array::from_slice(chunk, &[1, chunk.len() as i32]);
            let hidden = self.model.hidden_states(&input, &mut [&mut cache])?;
            let part = hidden
                .as_dtype(Dtype::Float32)
                .mlx()?
                .sum_axis(1, None)
                .mlx()?;
            let total = match sum.take() {
                Some(s) => s.add(&part).mlx()?,
                None => part,
            };
            eval([&total]).mlx()?;
            eval(cache.iter().flat_map(KvCache::arrays)).mlx()?;
            sum = Some(total);
        }
        let sum = sum.ok_or_else(|| Error::engine(ENGINE_NAME, "nothing to embed"))?;
        let mean = sum.divide(Array::from_f32(tokens.len() as f32)).mlx()?;
        eval([&mean]).mlx()?;
        Ok(mean.as_slice::<f32>().to_vec())
    }
}

/// Mutable borrows of the caches of sequences `seqs` (distinct), in that order.
fn pick_caches(
    caches: &mut [Vec<KvCache>],
    seqs: impl IntoIterator<Item = usize>,
) -> Vec<&mut Vec<KvCache>> {
    let seqs: Vec<usize> = seqs.into_iter().collect();
    let mut picked: Vec<(usize, &mut Vec<KvCache>)> = caches
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| seqs.contains(i))
        .collect();
    picked.sort_by_key(|(i, _)| seqs.iter().position(|s| s == i));
    picked.into_iter().map(|(_, c)| c).collect()
}
