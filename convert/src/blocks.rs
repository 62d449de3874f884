//! GGUF quantized blocks -> MLX affine quantization, value for value.
//!
//! MLX stores `w = scale * q + bias` per group with the `q` of a row packed as one little-endian
//! bit stream in `u32` words (value `i` at bit `bits * i`; 3, 5 and 6 bits straddle words).
//! ggml's Q4_1 block (32 values: f16 `d`, f16 `m`, 16 bytes where byte `j` holds value `j` in its
//! low nibble and value `j + 16` in its high one) is exactly MLX 4-bit with group 32, scale `d`, bias `m`. ggml's Q8_0 block (f16 `d`, 32 signed
//! bytes) is MLX 8-bit with group 32, `q + 128`, scale `d`, bias `-128 d`. ggml's Q4_K super-block
//! (256 values: f16 `d` and `dmin`, eight 6-bit scales `sc` and mins `m`, 128 bytes of nibbles)
//! is eight MLX 4-bit groups of 32 with scale `d sc` and bias `-dmin m`. ggml's Q5_0 block (f16
//! `d`, 32 high bits, 16 bytes of low nibbles as in Q4_1) is MLX 5-bit with group 32, scale `d`,
//! bias `-16 d`. Every product and sum here is exact in f32 (an f16 times a small integer).

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
        out.words.extend(pack(&nibbles(&block[4..20]), 4));
    }
    out
}

/// The 32 values of a Q4_1/Q5_0 block's 16 nibble bytes: byte `j` holds value `j` in its low
/// nibble and value `j + 16` in its high one.
fn nibbles(bytes: &[u8]) -> [u8; 32] {
    let mut values = [0u8; 32];
    for (j, byte) in bytes.iter().enumerate() {
        values[j] = byte & 0x0F;
        values[j + 16] = byte >> 4;
    }
    values
}

/// Convert one row of Q5_0 blocks (`row.len()` a multiple of 22 bytes).
pub fn q5_0_row(row: &[u8]) -> MlxRow {
    let mut out = MlxRow::default();
    for block in row.chunks_exact(22) {
        let d = f16_at(block, 0);
        out.scales.push(d);
        out.biases.push(-16.0 * d);
        let high = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let mut values = nibbles(&block[6..22]);
        for (j, v) in values.iter_mut().enumerate() {
            *v |= (((high >> j) & 1) as u8) << 4;
        }
        out.words.extend(pack(&values, 5));
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
        let values: Vec<u8> = block[2..34]
            .iter()
            .map(|&q| (q as i8 as i16 + 128) as u8)
            .collect();
        out.words.extend(pack(&values, 8));
    }
    out
}

/// Bytes of one Q4_K super-block.
pub const Q4_K_BLOCK: usize = 144;

/// Convert one row of Q4_K super-blocks (`row.len()` a multiple of [`Q4_K_BLOCK`]).
pub fn q4_k_row(row: &[u8]) -> MlxRow {
    let mut out = MlxRow::default();
    for block in row.chunks_exact(Q4_K_BLOCK) {
        let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
        let packed = &block[4..16];
        let qs = &block[16..144];
        // Each 32 bytes of nibbles hold two groups: low nibbles, then high ones.
        for (pair, bytes) in qs.chunks_exact(32).enumerate() {
            for (half, shift) in [(0, 0), (1, 4)] {
                let (sc, m) = q4_k_scale_min(2 * pair + half, packed);
                out.scales.push(d * f32::from(sc));
                out.biases.push(-(dmin * f32::from(m)));
                let values: Vec<u8> = bytes.iter().map(|b| (b >> shift) & 0x0F).collect();
                out.words.extend(pack(&values, 4));
            }
        }
    }
    out
}

/// The 6-bit scale and min of group `j` (0..8) of a Q4_K super-block's 12 packed bytes.
fn q4_k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Pack `values` (each below `2^bits`; a whole number of words' worth) as MLX's bit stream.
fn pack(values: &[u8], bits: u32) -> Vec<u32> {
    let mut words = vec![0u32; values.len() * bits as usize / 32];
    for (i, &v) in values.iter().enumerate() {
        let at = i * bits as usize;
        let (word, shift) = (at / 32, at % 32);
        words[word] |= u32::from(v) << shift;
        if shift + bits as usize > 32 {
            words[word + 1] |= u32::from(v) >> (32 - shift);
        }
    }
    words
}

/// The values of MLX's bit stream `words`, `bits` each.
fn unpack(words: &[u32], bits: u32) -> impl Iterator<Item = u32> + '_ {
    let mask = (1u64 << bits) - 1;
    (0..words.len() * 32 / bits as usize).map(move |i| {
        let at = i * bits as usize;
        let (word, shift) = (at / 32, at % 32);
        let next = words.get(word + 1).map_or(0, |&w| u64::from(w) << 32);
        (((u64::from(words[word]) | next) >> shift) & mask) as u32
    })
}

/// Quantize one row of floats into MLX affine groups: per group, `bias` is the minimum and
/// `scale` spreads the range over `2^bits - 1` steps (round to nearest).
pub fn quantize_row(values: &[f32], bits: u32, group: usize) -> MlxRow {
    let levels = ((1u32 << bits) - 1) as f32;
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
                ((v - lo) / scale).round().clamp(0.0, levels) as u8
            }
        }));
    }
    out.words = pack(&q, bits);
    out
}

/// Dequantize an MLX row: `bits` per value, groups of `values / scales` values.
pub fn dequantize(row: &MlxRow, bits: u32) -> Vec<f32> {
    let total = row.words.len() * 32 / bits as usize;
    let group_size = total / row.scales.len().max(1);
    unpack(&row.words, bits)
        .enumerate()
        .map(|(i, q)| {
            let group = i / group_size;
            row.scales[group] * q as f32 + row.biases[group]
        })
        .collect()
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
        for (bits, group) in [
            (3, 32),
            (4, 32),
            (4, 64),
            (5, 32),
            (6, 64),
            (8, 32),
            (8, 64),
        ] {
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
    fn q5_0_block_dequantizes_like_ggml() {
        let mut block = f16(0.5).to_vec();
        let q: Vec<u32> = (0..32).map(|j| (j * 11 + 3) % 32).collect();
        let high = q
            .iter()
            .enumerate()
            .fold(0u32, |h, (j, v)| h | ((v >> 4) << j));
        block.extend(high.to_le_bytes());
        block.extend((0..16).map(|j| (q[j] & 15) as u8 | (((q[j + 16] & 15) as u8) << 4)));
        let values = dequantize(&q5_0_row(&block), 5);
        for (v, q) in values.iter().zip(&q) {
            assert_eq!(*v, 0.5 * (*q as f32 - 16.0));
        }
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
