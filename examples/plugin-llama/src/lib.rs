//! The llama.cpp engine as a plugin: `cargo build --release -p minerva-plugin-llama` writes
//! `target/release/libminerva_plugin_llama.so`; put it in a plugin folder (docs/PLUGINS.md).

minerva_core::export_engine!(minerva_backend_llama::LlamaEngine::new());
