//! Checks of a GGUF's metadata that llama.cpp does not survive: it aborts the whole process
//! (`GGML_ASSERT`) on some values instead of failing the load, so they are refused here first
//! with an error naming the file and the key.

use std::collections::BTreeSet;

use minerva_core::format::gguf::GgufFile;
use minerva_core::{Error, Result};

/// Largest training context taken at face value (16M tokens); beyond it the key is corrupt.
const MAX_CONTEXT: u64 = 1 << 24;

/// Refuse metadata that would make llama.cpp abort while loading `gguf` or creating a context.
pub fn check(gguf: &GgufFile) -> Result<()> {
    let bad = |message: String| Err(Error::invalid_model(&gguf.path, message));
    let Some(arch) = gguf.architecture() else {
        return bad("`general.architecture` is missing".into());
    };
    let key = |suffix: &str| format!("{arch}.{suffix}");
    match gguf.arch_u64("context_length") {
        Some(0) => return bad(format!("`{}` is 0", key("context_length"))),
        Some(n) if n > MAX_CONTEXT => {
            return bad(format!(
                "`{}` is {n}, more than {MAX_CONTEXT}: the metadata is corrupt",
                key("context_length")
            ))
        }
        _ => {}
    }
    for suffix in ["embedding_length", "attention.head_count"] {
        if gguf.arch_u64(suffix) == Some(0) {
            return bad(format!("`{}` is 0", key(suffix)));
        }
    }
    let blocks: BTreeSet<u64> = gguf
        .tensors
        .iter()
        .filter_map(|t| t.name.strip_prefix("blk.")?.split('.').next()?.parse().ok())
        .collect();
    if let Some(declared) = gguf.arch_u64("block_count") {
        // Blocks 0..declared must all be there (extra ones, e.g. draft layers, are the
        // architecture's business).
        let found = blocks.len() as u64;
        let contiguous = blocks.iter().copied().eq(0..found);
        if declared == 0 || (found > 0 && (declared > found || !contiguous)) {
            return bad(format!(
                "`{}` says {declared} blocks but the tensors hold blocks {}",
                key("block_count"),
                describe(&blocks)
            ));
        }
    }
    Ok(())
}

/// `0-29` for a contiguous set, else the list.
fn describe(blocks: &BTreeSet<u64>) -> String {
    match (blocks.first(), blocks.last()) {
        (Some(first), Some(last)) if (last - first + 1) as usize == blocks.len() => {
            format!("{first}-{last}")
        }
        _ => blocks
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}
