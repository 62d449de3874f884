//! Dequantization of the GGUF block types that do not map exactly onto MLX's affine groups
//! (Q6_K, Q2_K, Q3_K, IQ4_NL, ...), by ggml's own code: the values llama.cpp computes with.

use minerva_core::format::gguf::GgufTensor;

/// ggml's float values of one row of `tensor` (`cols` values from `row`), or `None` when ggml
/// has no dequantizer for its type.
pub fn dequantize_row(tensor: &GgufTensor, row: &[u8], cols: usize) -> Option<Vec<f32>> {
    // SAFETY: ggml's type traits are a static table, valid for every type id ggml knows; the
    // id was checked against that table when the file was read.
    let to_float =
        unsafe { (*llama_cpp_sys_2::ggml_get_type_traits(tensor.ggml_type.id)).to_float }?;
    let mut out = vec![0f32; cols];
    // SAFETY: `row` holds one row of this type (`cols` values), `out` has room for them.
    unsafe { to_float(row.as_ptr().cast(), out.as_mut_ptr(), cols as i64) };
    Some(out)
}
