//! The MLX engine as a plugin: `cargo build --release -p minerva-plugin-mlx` writes
//! `target/release/libminerva_plugin_mlx.so`; put it in a plugin folder (docs/PLUGINS.md).

minerva_core::export_engine!(minerva_backend_mlx::MlxEngine::new());
