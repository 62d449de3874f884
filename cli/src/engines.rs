//! The engines linked into this binary: the one place that knows which cargo features are on.

use std::sync::Arc;

use minerva_runtime::{InferenceBackend, Router};

/// A router over every engine built in.
pub fn router() -> Router {
    let engines: Vec<Arc<dyn InferenceBackend>> = vec![
        #[cfg(feature = "llama")]
        Arc::new(minerva_backend_llama::LlamaEngine::new()),
        #[cfg(feature = "mlx")]
        Arc::new(minerva_backend_mlx::MlxEngine::new()),
    ];
    Router::new(engines)
}
