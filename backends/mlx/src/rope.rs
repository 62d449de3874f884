//! Rotary position embedding settings from `config.json`, including Llama 3 frequency scaling.

use std::path::Path;

use minerva_core::{Error, Result};
use mlx_rs::{fast, Array};
use serde_json::Value;

use crate::config::ModelConfig;
use crate::error::MlxResultExt;

/// RoPE as `mlx_rs::fast::rope` applies it (non-traditional, i.e. rotate-half layout).
#[derive(Clone)]
pub struct Rope {
    dims: i32,
    base: Option<f32>,
    scale: f32,
    freqs: Option<Array>,
}

impl Rope {
    /// Unscaled RoPE over `dims` with base `base` (e.g. Gemma 3's sliding-window layers).
    pub fn plain(dims: i32, base: f32) -> Rope {
        Rope {
            dims,
            base: Some(base),
            scale: 1.0,
            freqs: None,
        }
    }

    /// RoPE for `config`; `config_path` names the file in errors.
    pub fn new(config: &ModelConfig, config_path: &Path) -> Result<Rope> {
        let dims = config.head_dim();
        let plain = Rope::plain(dims, config.rope_theta);
        let Some(scaling) = config.rope_scaling.as_ref().filter(|v| !v.is_null()) else {
            return Ok(plain);
        };
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let number = |key: &str| scaling.get(key).and_then(Value::as_f64).map(|v| v as f32);
        match kind {
            "default" => Ok(plain),
            "linear" => Ok(Rope {
                scale: 1.0 / number("factor").unwrap_or(1.0),
                ..plain
            }),
            "llama3" => {
                let missing = |key: &str| {
                    Error::invalid_model(config_path, format!("rope_scaling llama3 lacks `{key}`"))
                };
                let factor = number("factor").ok_or_else(|| missing("factor"))?;
                let low = number("low_freq_factor").ok_or_else(|| missing("low_freq_factor"))?;
                let high = number("high_freq_factor").ok_or_else(|| missing("high_freq_factor"))?;
                let original = number("original_max_position_embeddings")
                    .ok_or_else(|| missing("original_max_position_embeddings"))?;
                let freqs = llama3_freqs(dims, config.rope_theta, factor, low, high, original);
                Ok(Rope {
                    base: None,
                    freqs: Some(Array::from_slice(&freqs, &[freqs.len() as i32])),
                    ..plain
                })
            }
            other => Err(Error::invalid_model(
                config_path,
                format!("rope_scaling type `{other}` is not supported (supported: linear, llama3)"),
            )),
        }
    }

    /// Rotate `x` (`[batch, heads, positions, head_dim]`) whose first position is `offset`.
    pub fn apply(&self, x: &Array, offset: i32) -> Result<Array> {
        fast::rope(
            x,
            self.dims,
            false,
            self.base,
            self.scale,
            offset,
            self.freqs.as_ref(),
        )
        .mlx()
    }
}

/// Llama 3 "wavelength" per rotary pair: long wavelengths stretched by `factor`, short ones
/// kept, the band between interpolated smoothly.
fn llama3_freqs(dims: i32, base: f32, factor: f32, low: f32, high: f32, original: f32) -> Vec<f32> {
    let low_wavelen = original / low;
    let high_wavelen = original / high;
    (0..dims / 2)
        .map(|i| {
            let freq = base.powf(2.0 * i as f32 / dims as f32);
            let wavelen = 2.0 * std::f32::consts::PI * freq;
            if wavelen > low_wavelen {
                freq * factor
            } else if wavelen < high_wavelen {
                freq
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                freq / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::llama3_freqs;

    #[test]
    fn llama3_scaling_keeps_short_and_stretches_long_wavelengths() {
        let f = llama3_freqs(128, 500_000.0, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        let plain_last = 500_000f32.powf(126.0 / 128.0);
        assert!((f[63] / plain_last - 8.0).abs() < 1e-3);
    }
}
