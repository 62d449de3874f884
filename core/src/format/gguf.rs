//! GGUF reader: header, metadata and tensor directory, validated against the file's size, without
//! reading tensor data. Every length read from the file is checked against the bytes that remain,
//! so a truncated or corrupt file gives an error naming it instead of a huge allocation or a
//! crash inside llama.cpp.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::ggml_types::GgmlType;
use crate::error::{Error, Result};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// Whether array values are kept or only counted (inspection skips the large tokenizer arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrays {
    /// Keep every array element.
    Keep,
    /// Skip array contents; record type and length only.
    Skip,
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Unsigned integer of any width.
    Uint(u64),
    /// Signed integer of any width.
    Int(i64),
    /// Floating point of any width.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array with its elements.
    Array(Vec<GgufValue>),
    /// Array whose contents were skipped ([`Arrays::Skip`]).
    SkippedArray {
        /// Number of elements.
        len: u64,
    },
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::Uint(v) => Some(v),
            GgufValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a float (integers convert).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::Float(v) => Some(v),
            GgufValue::Uint(v) => Some(v as f64),
            GgufValue::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an array that was kept.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// One tensor's directory entry.
#[derive(Debug, Clone)]
pub struct GgufTensor {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost first (ggml order).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

impl GgufTensor {
    /// Number of values.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A GGUF file's header, metadata and tensor directory.
#[derive(Debug, Clone)]
pub struct GgufFile {
    /// The file that was read.
    pub path: PathBuf,
    /// GGUF format version (2 or 3).
    pub version: u32,
    /// Metadata key/value pairs.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor directory, in file order.
    pub tensors: Vec<GgufTensor>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Size of the file in bytes.
    pub file_size: u64,
}

impl GgufFile {
    /// Read and validate the header, metadata and tensor directory of `path`.
    pub fn read(path: &Path, arrays: Arrays) -> Result<GgufFile> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut r = Reader {
            inner: BufReader::with_capacity(1 << 16, file),
            pos: 0,
            size: file_size,
            path,
        };
        let magic: [u8; 4] = r.bytes()?;
        if &magic != GGUF_MAGIC {
            return Err(Error::invalid_model(path, "not a GGUF file (bad magic)"));
        }
        let version = r.u32()?;
        match version {
            2 | 3 => {}
            1 => return Err(r.invalid("GGUF version 1 is obsolete; re-convert the model")),
            v if v.swap_bytes() <= 3 => {
                return Err(r.invalid("big-endian GGUF files are not supported"))
            }
            v => return Err(r.invalid(format!("unsupported GGUF version {v}"))),
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        // Each entry takes at least 8 (name length) + 4 bytes: reject counts the file cannot hold.
        r.ensure_room(kv_count.saturating_mul(12), "metadata count")?;
        r.ensure_room(tensor_count.saturating_mul(24), "tensor count")?;

        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string()?;
            let value_type = r.u32()?;
            let value = r.value(value_type, arrays)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(r.invalid(format!("duplicate metadata key `{key}`")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(r.invalid("general.alignment is not a power of two")),
            },
        };

        let mut tensors = Vec::with_capacity(tensor_count as usize);
        let mut names = std::collections::HashSet::new();
        for _ in 0..tensor_count {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims == 0 || n_dims > 4 {
                return Err(r.invalid(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64()?);
            }
            let type_id = r.u32()?;
            let offset = r.u64()?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                r.invalid(format!("tensor `{name}` has unknown ggml type {type_id}"))
            })?;
            let elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n > 0)
                .ok_or_else(|| r.invalid(format!("tensor `{name}` has invalid shape {dims:?}")))?;
            let size = ggml_type
                .bytes_for(elements)
                .filter(|_| dims[0].is_multiple_of(ggml_type.block_size))
                .ok_or_else(|| {
                    r.invalid(format!(
                        "tensor `{name}` shape {dims:?} does not fit {} blocks",
                        ggml_type.name
                    ))
                })?;
            if !offset.is_multiple_of(alignment) {
                return Err(r.invalid(format!("tensor `{name}` is misaligned")));
            }
            if !names.insert(name.clone()) {
                return Err(r.invalid(format!("duplicate tensor `{name}`")));
            }
            tensors.push(GgufTensor {
                name,
                dims,
                ggml_type,
                offset,
                size,
            });
        }
        let data_offset = r.pos.div_ceil(alignment) * alignment;
        for t in &tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|o| o.checked_add(t.size));
            if end.is_none_or(|end| end > file_size) {
                return Err(r.invalid(format!(
                    "file is truncated: tensor `{}` ends past the end of the file ({} bytes)",
                    t.name, file_size
                )));
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            data_offset,
            file_size,
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// A string metadata value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(GgufValue::as_str)
    }

    /// An integer metadata value.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(GgufValue::as_u64)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// An architecture-scoped integer such as `{arch}.context_length`.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.get_u64(&format!("{arch}.{suffix}"))
    }

    /// Total number of weights over all tensors.
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(GgufTensor::elements).sum()
    }

    /// Bytes of tensor data.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size).sum()
    }
}

struct Reader<'a> {
    inner: BufReader<File>,
    pos: u64,
    size: u64,
    path: &'a Path,
}

impl Reader<'_> {
    fn invalid(&self, message: impl Into<String>) -> Error {
        Error::invalid_model(self.path, message)
    }

    fn ensure_room(&self, bytes: u64, what: &str) -> Result<()> {
        if bytes > self.size.saturating_sub(self.pos) {
            return Err(self.invalid(format!(
                "file is truncated or corrupt: {what} at byte {} needs {bytes} bytes, {} remain",
                self.pos,
                self.size.saturating_sub(self.pos)
            )));
        }
        Ok(())
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.ensure_room(N as u64, "header field")?;
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| Error::io(self.path, e))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        self.ensure_room(n, "value")?;
        let offset = i64::try_from(n).map_err(|_| self.invalid("length out of range"))?;
        self.inner
            .seek_relative(offset)
            .map_err(|e| Error::io(self.path, e))?;
        self.pos += n;
        Ok(())
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        self.ensure_room(len, "string")?;
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| Error::io(self.path, e))?;
        self.pos += len;
        String::from_utf8(buf).map_err(|_| self.invalid("metadata string is not UTF-8"))
    }

    fn scalar(&mut self, value_type: u32) -> Result<GgufValue> {
        Ok(match value_type {
            0 => GgufValue::Uint(u8::from_le_bytes(self.bytes()?) as u64),
            1 => GgufValue::Int(i8::from_le_bytes(self.bytes()?) as i64),
            2 => GgufValue::Uint(u16::from_le_bytes(self.bytes()?) as u64),
            3 => GgufValue::Int(i16::from_le_bytes(self.bytes()?) as i64),
            4 => GgufValue::Uint(self.u32()? as u64),
            5 => GgufValue::Int(i32::from_le_bytes(self.bytes()?) as i64),
            6 => GgufValue::Float(f32::from_le_bytes(self.bytes()?) as f64),
            7 => match self.bytes::<1>()?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.invalid(format!("invalid boolean byte {b}"))),
            },
            8 => GgufValue::String(self.string()?),
            10 => GgufValue::Uint(self.u64()?),
            11 => GgufValue::Int(i64::from_le_bytes(self.bytes()?)),
            12 => GgufValue::Float(f64::from_le_bytes(self.bytes()?)),
            t => return Err(self.invalid(format!("unknown metadata value type {t}"))),
        })
    }

    fn value(&mut self, value_type: u32, arrays: Arrays) -> Result<GgufValue> {
        if value_type != 9 {
            return self.scalar(value_type);
        }
        let elem_type = self.u32()?;
        let len = self.u64()?;
        let fixed = fixed_size(elem_type);
        // Strings take at least their 8-byte length; nested arrays at least 12 bytes.
        self.ensure_room(len.saturating_mul(fixed.unwrap_or(8)), "array")?;
        match (arrays, fixed) {
            (Arrays::Skip, Some(width)) => {
                self.skip(len * width)?;
                Ok(GgufValue::SkippedArray { len })
            }
            (Arrays::Skip, None) if elem_type == 8 => {
                for _ in 0..len {
                    let n = self.u64()?;
                    self.skip(n)?;
                }
                Ok(GgufValue::SkippedArray { len })
            }
            _ => {
                let mut items = Vec::with_capacity(len.min(1 << 20) as usize);
                for _ in 0..len {
                    items.push(self.value(elem_type, arrays)?);
                }
                Ok(GgufValue::Array(items))
            }
        }
    }
}

/// Width in bytes of a fixed-size metadata type, `None` for strings and arrays.
fn fixed_size(value_type: u32) -> Option<u64> {
    match value_type {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::write_tiny_gguf;

    #[test]
    fn reads_metadata_and_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        write_tiny_gguf(&p);
        let g = GgufFile::read(&p, Arrays::Skip).unwrap();
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.arch_u64("context_length"), Some(2048));
        assert_eq!(
            g.get("tokenizer.ggml.tokens"),
            Some(&GgufValue::SkippedArray { len: 2 })
        );
        assert_eq!(g.parameter_count(), 8);
        let kept = GgufFile::read(&p, Arrays::Keep).unwrap();
        let tokens = kept
            .get("tokenizer.ggml.tokens")
            .unwrap()
            .as_array()
            .unwrap();
        assert_eq!(tokens[1].as_str(), Some("bc"));
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        write_tiny_gguf(&p);
        let full = std::fs::read(&p).unwrap();
        let cut = dir.path().join("cut.gguf");
        for len in 0..full.len() {
            std::fs::write(&cut, &full[..len]).unwrap();
            let err = GgufFile::read(&cut, Arrays::Skip).unwrap_err().to_string();
            assert!(err.contains("cut.gguf"), "{len}: {err}");
        }
    }

    #[test]
    fn huge_lengths_are_rejected_without_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        let mut b = GGUF_MAGIC.to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        b.extend_from_slice(&[0u8; 64]);
        std::fs::write(&p, b).unwrap();
        let err = GgufFile::read(&p, Arrays::Keep).unwrap_err().to_string();
        assert!(err.contains("truncated or corrupt"), "{err}");
    }
}
