//! Picks the engine for a model: by detected format, or as the model's config says.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::InferenceBackend;
use crate::error::{Error, Result};
use crate::format::{ModelFormat, ModelInfo};

/// The engine a model's config asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// Choose by format: GGUF -> llama, safetensors -> mlx.
    #[default]
    Auto,
    /// llama.cpp.
    Llama,
    /// MLX.
    Mlx,
}

/// The engine that serves a format when the config says `auto`.
pub fn default_engine(format: ModelFormat) -> &'static str {
    match format {
        ModelFormat::Gguf => "llama",
        ModelFormat::Safetensors => "mlx",
    }
}

/// How to get an engine that this build lacks.
fn engine_hint(engine: &str) -> String {
    match engine {
        "llama" => "build minerva with the `llama` feature: cargo build --release -p minerva-cli --features llama".into(),
        "mlx" => "this build has no MLX engine; convert the model to GGUF for llama.cpp, or use a minerva built with MLX".into(),
        other => format!("no engine named `{other}` is known"),
    }
}

/// The engines available to this process and the rule that picks one per model.
#[derive(Clone, Default)]
pub struct Router {
    engines: Vec<Arc<dyn InferenceBackend>>,
}

impl Router {
    /// A router over `engines`.
    pub fn new(engines: Vec<Arc<dyn InferenceBackend>>) -> Self {
        Router { engines }
    }

    /// The engines, in registration order.
    pub fn engines(&self) -> &[Arc<dyn InferenceBackend>] {
        &self.engines
    }

    /// The name of the engine that would serve `info` under `choice` (whether built in or not).
    pub fn engine_name(info: &ModelInfo, choice: BackendChoice) -> &'static str {
        match choice {
            BackendChoice::Auto => default_engine(info.format),
            BackendChoice::Llama => "llama",
            BackendChoice::Mlx => "mlx",
        }
    }

    /// The engine for `info` under `choice`, or why there is none.
    pub fn choose(
        &self,
        info: &ModelInfo,
        choice: BackendChoice,
    ) -> Result<Arc<dyn InferenceBackend>> {
        let name = Self::engine_name(info, choice);
        let model = info.path.display().to_string();
        let engine = self
            .engines
            .iter()
            .find(|e| e.name() == name)
            .ok_or_else(|| Error::EngineUnavailable {
                engine: name.to_string(),
                model: model.clone(),
                hint: engine_hint(name),
            })?;
        if !engine.formats().contains(&info.format) {
            return Err(Error::Config(format!(
                "engine `{name}` cannot load {} models ({model}); use backend = \"auto\" or one that reads {}",
                info.format, info.format
            )));
        }
        Ok(Arc::clone(engine))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{LoadSpec, LoadedModel};
    use crate::capabilities::Capabilities;
    use async_trait::async_trait;

    struct Named(&'static str, Vec<ModelFormat>);

    #[async_trait]
    impl InferenceBackend for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn version(&self) -> String {
            "test".into()
        }
        fn formats(&self) -> &[ModelFormat] {
            &self.1
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::all()
        }
        async fn load_model(&self, _: &LoadSpec) -> Result<Arc<dyn LoadedModel>> {
            Err(Error::engine(self.0, "not in this test"))
        }
    }

    fn info(format: ModelFormat) -> ModelInfo {
        ModelInfo {
            path: "/m".into(),
            format,
            architecture: None,
            quantization: None,
            mlx_quantized: false,
            parameter_count: 0,
            weight_bytes: 0,
            bits_per_weight: 0.0,
            context_length: None,
            layers: None,
            has_chat_template: false,
            tensor_count: 0,
        }
    }

    #[test]
    fn auto_routes_by_format_and_missing_engine_says_how_to_get_it() {
        let router = Router::new(vec![Arc::new(Named("llama", vec![ModelFormat::Gguf]))]);
        let gguf = info(ModelFormat::Gguf);
        assert_eq!(
            router.choose(&gguf, BackendChoice::Auto).unwrap().name(),
            "llama"
        );
        let st = info(ModelFormat::Safetensors);
        let err = router
            .choose(&st, BackendChoice::Auto)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("engine `mlx`") && err.contains("not built into"),
            "{err}"
        );
        let err = router
            .choose(&st, BackendChoice::Llama)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot load safetensors"), "{err}");
    }

    #[test]
    fn override_picks_a_multi_format_engine() {
        let router = Router::new(vec![
            Arc::new(Named("llama", vec![ModelFormat::Gguf])),
            Arc::new(Named(
                "mlx",
                vec![ModelFormat::Safetensors, ModelFormat::Gguf],
            )),
        ]);
        let gguf = info(ModelFormat::Gguf);
        assert_eq!(
            router.choose(&gguf, BackendChoice::Mlx).unwrap().name(),
            "mlx"
        );
        assert_eq!(
            router.choose(&gguf, BackendChoice::Auto).unwrap().name(),
            "llama"
        );
    }
}
