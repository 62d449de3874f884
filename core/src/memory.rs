//! Memory a model needs, estimated before it is loaded (for `memory_budget`): its weights, its KV
//! cache for the context it gets, and what its engine needs beside them; byte sizes in config.

use serde::{Deserialize, Serialize};

use crate::format::{Detected, ModelHeader};

/// Largest context an engine allocates when neither the config nor the request asks for one
/// (the model's trained context is used below it).
pub const DEFAULT_CONTEXT_CAP: u32 = 16_384;

/// How K and V are stored in the KV cache (`kv_cache_type`): 16-bit floats, or quantized in
/// blocks (llama.cpp's `q8_0`/`q4_0`; MLX's affine 8- and 4-bit groups of the same size per
/// element).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvCacheType {
    /// 16-bit floats (2 bytes an element).
    #[default]
    F16,
    /// 8-bit blocks of 32 with a 16-bit scale (34 bytes per 32 elements).
    Q8_0,
    /// 4-bit blocks of 32 with a 16-bit scale (18 bytes per 32 elements).
    Q4_0,
}

impl KvCacheType {
    /// Bits per element: the value and its share of the block's scale.
    pub fn bits(self) -> u32 {
        match self {
            KvCacheType::F16 => 16,
            KvCacheType::Q8_0 => 8,
            KvCacheType::Q4_0 => 4,
        }
    }

    /// Bytes that `elements` take (`elements` a multiple of the block size).
    pub fn bytes(self, elements: u64) -> u64 {
        match self {
            KvCacheType::F16 => elements * 2,
            KvCacheType::Q8_0 => elements * 34 / 32,
            KvCacheType::Q4_0 => elements * 18 / 32,
        }
    }

    /// The name config uses.
    pub fn name(self) -> &'static str {
        match self {
            KvCacheType::F16 => "f16",
            KvCacheType::Q8_0 => "q8_0",
            KvCacheType::Q4_0 => "q4_0",
        }
    }
}

/// Share of the machine's memory each model's prompt store may hold when `prompt_cache_size`
/// is not set.
const PROMPT_STORE_SHARE: u64 = 10;

/// The default prompt store budget: a tenth of physical memory (256 MiB where it cannot be read).
pub fn default_prompt_store_bytes() -> u64 {
    physical_memory().map_or(256 << 20, |bytes| bytes / PROMPT_STORE_SHARE)
}

/// Physical memory in bytes (POSIX `sysconf`: Linux and macOS alike).
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system configuration values.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let pages = u64::try_from(pages).ok()?;
    let page_size = u64::try_from(page_size).ok()?;
    Some(pages * page_size)
}

/// What loading a model is expected to take, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    /// Weight data.
    pub weights: u64,
    /// K and V for every layer at every position of the context.
    pub kv_cache: u64,
    /// The engine's own need beside them (compute buffers, libraries).
    pub engine: u64,
    /// A draft model loaded beside it (its weights and KV cache, and its engine's need when
    /// that is another engine).
    #[serde(default)]
    pub draft: u64,
    /// The context the KV figure is for.
    pub context_size: u32,
}

impl MemoryEstimate {
    /// All of it.
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.engine + self.draft
    }

    /// Estimate for `detected` with `context_size` (else its trained context capped at
    /// [`DEFAULT_CONTEXT_CAP`]), its KV cache stored as `kv_type`, and the engine's
    /// `engine_bytes`.
    pub fn of(
        detected: &Detected,
        context_size: Option<u32>,
        kv_type: KvCacheType,
        engine_bytes: u64,
    ) -> Self {
        let context_size = context_size.unwrap_or_else(|| {
            detected
                .info
                .context_length
                .map_or(DEFAULT_CONTEXT_CAP, |c| {
                    c.min(u64::from(DEFAULT_CONTEXT_CAP)) as u32
                })
        });
        MemoryEstimate {
            weights: detected.info.weight_bytes,
            kv_cache: kv_type
                .bytes(kv_elements_per_token(&detected.header) * u64::from(context_size)),
            engine: engine_bytes,
            draft: 0,
            context_size,
        }
    }
}

/// K and V elements one position takes over all layers: layers x KV heads x (key + value
/// width).
fn kv_elements_per_token(header: &ModelHeader) -> u64 {
    let (layers, kv_heads, key, value) = match header {
        ModelHeader::Gguf(g) => {
            let heads = g.arch_u64("attention.head_count").unwrap_or(0);
            let width = g.arch_u64("embedding_length").unwrap_or(0);
            let per_head = width.checked_div(heads).unwrap_or(0);
            (
                g.arch_u64("block_count").unwrap_or(0),
                g.arch_u64("attention.head_count_kv").unwrap_or(heads),
                g.arch_u64("attention.key_length").unwrap_or(per_head),
                g.arch_u64("attention.value_length").unwrap_or(per_head),
            )
        }
        ModelHeader::Safetensors(dir) => {
            let heads = dir.config_u64("num_attention_heads").unwrap_or(0);
            let width = dir.config_u64("hidden_size").unwrap_or(0);
            let per_head = dir
                .config_u64("head_dim")
                .unwrap_or(width.checked_div(heads).unwrap_or(0));
            (
                dir.config_u64("num_hidden_layers").unwrap_or(0),
                dir.config_u64("num_key_value_heads").unwrap_or(heads),
                per_head,
                per_head,
            )
        }
    };
    layers * kv_heads * (key + value)
}

/// A byte count in config: a number of bytes or a string with a unit (`"8GiB"`, `"512 MB"`,
/// `"2G"`; K/M/G/T alone and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "ByteSizeText", into = "u64")]
pub struct ByteSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum ByteSizeText {
    Bytes(u64),
    Text(String),
}

impl From<ByteSize> for u64 {
    fn from(size: ByteSize) -> u64 {
        size.0
    }
}

impl TryFrom<ByteSizeText> for ByteSize {
    type Error = String;

    fn try_from(value: ByteSizeText) -> Result<Self, String> {
        match value {
            ByteSizeText::Bytes(n) => Ok(ByteSize(n)),
            ByteSizeText::Text(text) => parse_bytes(&text).map(ByteSize),
        }
    }
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like \"8GiB\" or \"512MB\""))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => return Err(format!("unknown size unit `{other}` in `{text}`")),
    };
    Ok((number * scale) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("8GiB"), Ok(8 << 30));
        assert_eq!(parse_bytes("512 MB"), Ok(512_000_000));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
