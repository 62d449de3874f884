//! Test support for the crates above the core (not for engines): a deterministic toy
//! evaluator behind a real [`Generator`], and a tiny valid GGUF file. The real engines are
//! tested on real models in tests/.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::format::gguf::GGUF_MAGIC;
use crate::generation::{
    BatchEntry, BatchToken, Evaluator, Generator, Limits, SavedState, Vocabulary, Wanted,
};

pub const VOCAB: usize = 16;
pub const EOS: u32 = 15;

/// The next token after `tokens`: depends on every token, so a wrong KV cache shows.
pub fn next(tokens: &[u32]) -> u32 {
    let sum: u64 = tokens.iter().map(|&t| u64::from(t) * 7 + 3).sum();
    ((sum + tokens.len() as u64 * 5) % VOCAB as u64) as u32
}

/// Logits whose largest entry is [`next`] and whose others are distinct.
fn logits_after(tokens: &[u32]) -> Vec<f32> {
    let best = next(tokens) as usize;
    (0..VOCAB)
        .map(|j| -(((j + VOCAB - best) % VOCAB) as f32))
        .collect()
}

/// An evaluator that keeps each sequence's tokens as its "KV cache" and checks what the core claims about it.
struct Toy {
    kv: Vec<Vec<u32>>,
    limits: Limits,
    pipelined: bool,
    rows: Vec<Vec<f32>>,
    /// Entries per step, for batching checks.
    steps: Arc<Mutex<Vec<usize>>>,
    /// Time each step takes.
    delay: std::time::Duration,
}

impl Evaluator for Toy {
    type Picks = Vec<u32>;

    fn limits(&self) -> Limits {
        self.limits
    }

    fn pipelined(&self) -> bool {
        self.pipelined
    }

    fn evaluate(&mut self, batch: &[BatchEntry], previous: Option<&Vec<u32>>) -> Result<Vec<u32>> {
        self.rows.clear();
        self.steps.lock().unwrap().push(batch.len());
        std::thread::sleep(self.delay);
        let mut picks = Vec::new();
        for e in batch {
            let kv = &mut self.kv[e.slot];
            assert_eq!(e.start, kv.len(), "the core's idea of the cache is wrong");
            for t in &e.tokens {
                kv.push(match *t {
                    BatchToken::Id(id) => id,
                    BatchToken::Picked(row) => previous.unwrap()[row],
                });
            }
            let cells: usize = self.kv.iter().map(Vec::len).sum();
            assert!(cells <= self.limits.kv_cells, "{cells} cells used");
            let kv = &self.kv[e.slot];
            match e.wanted {
                Wanted::Nothing => {}
                Wanted::Pick => picks.push(next(kv)),
                Wanted::Logits(n) => {
                    for back in (0..n).rev() {
                        self.rows.push(logits_after(&kv[..kv.len() - back]));
                    }
                }
            }
        }
        Ok(picks)
    }

    fn logits(&mut self, row: usize) -> Result<&[f32]> {
        Ok(&self.rows[row])
    }

    fn read_picks(&mut self, picks: &Vec<u32>) -> Result<Vec<u32>> {
        Ok(picks.clone())
    }

    fn truncate(&mut self, slot: usize, len: usize) -> Result<()> {
        self.kv[slot].truncate(len);
        Ok(())
    }

    fn copy_prefix(&mut self, from: usize, to: usize, len: usize) -> Result<()> {
        self.kv[to] = self.kv[from][..len].to_vec();
        Ok(())
    }

    /// A token's state takes 4 bytes.
    fn save_state(&mut self, slot: usize) -> Result<Option<SavedState>> {
        Ok(Some(SavedState {
            bytes: self.kv[slot].len() * 4,
            data: Box::new(self.kv[slot].clone()),
        }))
    }

    fn restore_state(&mut self, slot: usize, state: &SavedState) -> Result<()> {
        self.kv[slot] = state.data.downcast_ref::<Vec<u32>>().unwrap().clone();
        Ok(())
    }
}

pub fn toy(pipelined: bool, kv_cells: usize, slots: usize) -> (Generator, Arc<Mutex<Vec<usize>>>) {
    slow_toy(pipelined, kv_cells, slots, std::time::Duration::ZERO)
}

pub fn slow_toy(
    pipelined: bool,
    kv_cells: usize,
    slots: usize,
    delay: std::time::Duration,
) -> (Generator, Arc<Mutex<Vec<usize>>>) {
    spelled_toy(pipelined, kv_cells, slots, delay, b'a', 0)
}

/// A toy whose token `i` is spelled `first + i`, with a prompt store of `store_bytes`.
pub fn spelled_toy(
    pipelined: bool,
    kv_cells: usize,
    slots: usize,
    delay: std::time::Duration,
    first: u8,
    store_bytes: usize,
) -> (Generator, Arc<Mutex<Vec<usize>>>) {
    let steps = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&steps);
    let pieces = (0..VOCAB as u8).map(|i| vec![first + i]).collect();
    let (generator, ()) = Generator::spawn("toy", move |starter| {
        let limits = Limits {
            kv_cells,
            slots,
            batch_tokens: 8,
            prompt_store_bytes: store_bytes,
        };
        let engine = Toy {
            kv: vec![Vec::new(); slots],
            limits,
            pipelined,
            rows: Vec::new(),
            steps: recorded,
            delay,
        };
        starter.serve(engine, Vocabulary::new(pieces, [EOS], false), ());
    })
    .unwrap();
    (generator, steps)
}

/// Writes a small valid GGUF v3 file: some metadata and one F32 tensor.
pub fn write_tiny_gguf(path: &Path) {
    let mut b = Vec::new();
    b.extend_from_slice(GGUF_MAGIC);
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&3u64.to_le_bytes());
    let s = |b: &mut Vec<u8>, v: &str| {
        b.extend_from_slice(&(v.len() as u64).to_le_bytes());
        b.extend_from_slice(v.as_bytes());
    };
    s(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    s(&mut b, "llama");
    s(&mut b, "llama.context_length");
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&2048u32.to_le_bytes());
    s(&mut b, "tokenizer.ggml.tokens");
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    s(&mut b, "a");
    s(&mut b, "bc");
    s(&mut b, "token_embd.weight");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend_from_slice(&[0u8; 32]);
    File::create(path).unwrap().write_all(&b).unwrap();
}
