//! Weights read back for comparison: a GGUF tensor as ggml itself dequantizes it, and a tensor
//! of an MLX directory, dequantized when MLX-quantized.

use std::path::Path;

use minerva_convert::blocks::{dequantize, MlxRow};
use minerva_runtime::format::gguf::{GgufFile, GgufTensor};
use safetensors::SafeTensors;

/// A read-only memory map of `path`.
pub fn map(path: &Path) -> memmap2::Mmap {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: test files are not modified while mapped.
    unsafe { memmap2::Mmap::map(&file) }.unwrap()
}

/// A GGUF tensor's values, row after row, as ggml itself dequantizes them.
pub fn ggml_values(gguf: &GgufFile, map: &[u8], t: &GgufTensor) -> Vec<f32> {
    let cols = t.dims[0] as usize;
    let rows: usize = t.dims[1..].iter().product::<u64>() as usize;
    let start = (gguf.data_offset + t.offset) as usize;
    let data = &map[start..start + t.size as usize];
    if t.ggml_type.name == "F32" {
        return floats(data);
    }
    let row_bytes = data.len() / rows;
    // SAFETY: ggml's type traits are static; `to_float` reads `cols` values from one row.
    let to_float = unsafe { (*llama_cpp_sys_2::ggml_get_type_traits(t.ggml_type.id)).to_float }
        .expect("ggml can dequantize this type");
    let mut out = vec![0f32; rows * cols];
    for (r, row) in out.chunks_exact_mut(cols).enumerate() {
        // SAFETY: the row holds `cols` values of this type; `row` has room for them.
        unsafe {
            to_float(
                data[r * row_bytes..].as_ptr().cast(),
                row.as_mut_ptr(),
                cols as i64,
            )
        };
    }
    out
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// An MLX tensor's values: float32, or MLX-quantized in groups of 32 (as the converter writes)
/// and dequantized.
pub fn mlx_values(st: &SafeTensors, name: &str) -> Vec<f32> {
    let w = st.tensor(name).unwrap();
    let prefix = name.strip_suffix(".weight").unwrap();
    let Ok(scales) = st.tensor(&format!("{prefix}.scales")) else {
        assert_eq!(w.dtype(), safetensors::Dtype::F32, "{name}");
        return floats(w.data());
    };
    let (rows, packed) = (w.shape()[0], w.shape()[1]);
    let (scales, biases) = (
        floats(scales.data()),
        floats(st.tensor(&format!("{prefix}.biases")).unwrap().data()),
    );
    let groups = scales.len() / rows;
    let bits = (packed * 32 / (groups * 32)) as u32;
    let words: Vec<u32> = w
        .data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (0..rows)
        .flat_map(|r| {
            let row = MlxRow {
                words: words[r * packed..(r + 1) * packed].to_vec(),
                scales: scales[r * groups..(r + 1) * groups].to_vec(),
                biases: biases[r * groups..(r + 1) * groups].to_vec(),
            };
            dequantize(&row, bits)
        })
        .collect()
}
