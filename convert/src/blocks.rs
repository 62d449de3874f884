//! GGUF quantized blocks -> MLX affine quantization, value for value.
//!
//! MLX stores `w = scale * q + bias` per group with `q` packed little-endian into `u32` words
//! (element `i` of a word at bits `bits * i`). ggml's Q4_1 block (32 values: f16 `d`, f16 `m`,
//! 16 bytes where byte `j` holds value `j` in its low nibble and value `j + 16` in its high one)
//! is exactly MLX 4-bit with group 32, scale `d`, bias `m`. ggml's Q8_0 block (f16 `d`, 32 signed
//! bytes) is MLX 8-bit with group 32, `q + 128`, scale `d`, bias `-128 d`.

/// One row of MLX-quantized weights.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MlxRow {
    /// Packed values.
    pub words: Vec<u32>,
    /// One scale per group of 32.
    pub scales: Vec<f32>,
    /// One bias per group of 32.
    pub biases: Vec<f32>,
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Convert one row of Q4_1 blocks (`row.len()` a multiple of 20 bytes).
pub fn q4_1_row(row: &[u8]) -> MlxRow {
    let mut out = MlxRow::default();
    for block in row.chunks_exact(20) {
        out.scales.push(f16_at(block, 0));
        out.biases.push(f16_at(block, 2));
        let qs = &block[4..20];
        let mut values = [0u8; 32];
        for (j, byte) in qs.iter().enumerate() {
            values[j] = byte & 0x0F;
            values[j + 16] = byte >> 4;
        }
        for eight in values.chunks_exact(8) {
            let word = eight
                .iter()
                .enumerate()
                .fold(0u32, |w, (i, &q)| w | (u32::from(q) << (4 * i)));
            out.words.push(word);
        }
    }
    out
}

/// Convert one row of Q8_0 blocks (`row.len()` a multiple of 34 bytes).
pub fn q8_0_row(row: &[u8]) -> MlxRow {
    let mut out = MlxRow::default();
    for block in row.chunks_exact(34) {
        let d = f16_at(block, 0);
        out.scales.push(d);
        out.biases.push(-128.0 * d);
        for four in block[2..34].chunks_exact(4) {
            let word = four.iter().enumerate().fold(0u32, |w, (i, &q)| {
                w | (u32::from((q as i8 as i16 + 128) as u8) << (8 * i))
            });
            out.words.push(word);
        }
    }
    out
}

/// Quantize one row of floats into MLX affine groups: per group, `bias` is the minimum and
/// `scale` spreads the range over `2^bits - 1` steps (round to nearest).
pub fn quantize_row(values: &[f32], bits: u32, group: usize) -> MlxRow {
    let levels = ((1u32 << bits) - 1) as f32;
    let per_word = (32 / bits) as usize;
    let mut out = MlxRow::default();
    let mut q = Vec::with_capacity(values.len());
    for chunk in values.chunks(group) {
        let (lo, hi) = chunk
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let scale = if hi > lo { (hi - lo) / levels } else { 0.0 };
        out.scales.push(scale);
        out.biases.push(lo);
        q.extend(chunk.iter().map(|&v| {
            if scale == 0.0 {
                0
            } else {
                ((v - lo) / scale).round().clamp(0.0, levels) as u32
            }
        }));
    }
    for word in q.chunks(per_word) {
        out.words.push(
            word.iter()
                .enumerate()
                .fold(0u32, |w, (i, &v)| w | (v << (bits as usize * i))),
        );
    }
    out
}

/// Dequantize an MLX row: `bits` per value, groups of `values / scales` values.
pub fn dequantize(row: &MlxRow, bits: u32) -> Vec<f32> {
    let per_word = 32 / bits;
    let mask = (1u32 << bits) - 1;
    let total = row.words.len() * per_word as usize;
    let group_size = total / row.scales.len().max(1);
    let mut out = Vec::with_capacity(total);
    for (k, word) in row.words.iter().enumerate() {
        for i in 0..per_word {
            let q = ((word >> (bits * i)) & mask) as f32;
            let group = (k * per_word as usize + i as usize) / group_size;
            out.push(row.scales[group] * q + row.biases[group]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_1_block_dequantizes_like_ggml() {
        let mut block = Vec::new();
        block.extend_from_slice(&f16(0.5));
        block.extend_from_slice(&f16(-1.0));
        let qs: Vec<u8> = (0..16u8)
            .map(|j| (j % 16) | (((15 - j) % 16) << 4))
            .collect();
        block.extend_from_slice(&qs);
        let row = q4_1_row(&block);
        let values = dequantize(&row, 4);
        for j in 0..16 {
            assert_eq!(values[j], 0.5 * j as f32 - 1.0);
            assert_eq!(values[j + 16], 0.5 * (15 - j) as f32 - 1.0);
        }
    }

    #[test]
    fn quantization_error_is_at_most_half_a_step() {
        let values: Vec<f32> = (0..128)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        for (bits, group) in [(4, 32), (4, 64), (8, 32), (8, 64)] {
            let row = quantize_row(&values, bits, group);
            let back = dequantize(&row, bits);
            for (g, chunk) in values.chunks(group).enumerate() {
                for (j, v) in chunk.iter().enumerate() {
                    let err = (back[g * group + j] - v).abs();
                    assert!(
                        err <= row.scales[g] / 2.0 + 1e-6,
                        "{bits}-bit g{group}: {err}"
                    );
                }
            }
        }
        // Values on a 4-bit grid come back exactly.
        let grid: Vec<f32> = (0..32).map(|i| 0.25 * (i % 16) as f32 - 1.0).collect();
        assert_eq!(dequantize(&quantize_row(&grid, 4, 32), 4), grid);
    }

    #[test]
    fn q8_0_block_dequantizes_like_ggml() {
        let mut block = f16(0.25).to_vec();
        let qs: Vec<i8> = (0..32).map(|j| (j as i8 - 16) * 7).collect();
        block.extend(qs.iter().map(|&q| q as u8));
        let values = dequantize(&q8_0_row(&block), 8);
        for (v, q) in values.iter().zip(&qs) {
            assert_eq!(*v, 0.25 * f32::from(*q));
        }
    }
}
