//! MLX failures as runtime errors.

use minerva_core::Error;

use crate::ENGINE_NAME;

/// Convert an mlx-rs error (any `Display`) into an engine error.
pub trait MlxResultExt<T> {
    /// The value, or an engine error carrying MLX's message.
    fn mlx(self) -> minerva_core::Result<T>;
}

impl<T, E: std::fmt::Display> MlxResultExt<T> for std::result::Result<T, E> {
    fn mlx(self) -> minerva_core::Result<T> {
        self.map_err(|e| Error::engine(ENGINE_NAME, e.to_string()))
    }
}
