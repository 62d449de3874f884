//! Picks the engine for a model: by detected format (per-format choices from config, then the
//! defaults the front-end declares), or by the name the model's config gives. Engines are built
//! in or come from plugins; a plugin engine with a built-in engine's name replaces it. No engine
//! is named here: the front-end declares the ones it knows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::InferenceBackend;
use crate::error::{Error, Result};
use crate::format::{ModelFormat, ModelInfo};

/// The engine a model's config asks for: `"auto"` (by format) or an engine's name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum EngineChoice {
    /// Choose by format: the config's `[formats]` entry, else the engine declared for it.
    #[default]
    Auto,
    /// The engine with this name.
    Engine(String),
}

impl EngineChoice {
    /// The engine named `name` (`"auto"` means [`EngineChoice::Auto`]).
    pub fn named(name: &str) -> Self {
        EngineChoice::from(name.to_string())
    }
}

impl From<String> for EngineChoice {
    fn from(name: String) -> Self {
        if name == "auto" {
            EngineChoice::Auto
        } else {
            EngineChoice::Engine(name)
        }
    }
}

impl From<EngineChoice> for String {
    fn from(choice: EngineChoice) -> String {
        match choice {
            EngineChoice::Auto => "auto".into(),
            EngineChoice::Engine(name) => name,
        }
    }
}

/// What the front-end declares about an engine it knows, whether or not this process has it:
/// the formats it serves when a model's engine is `auto`, and how to get it when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineDeclaration {
    /// The engine's name.
    pub name: String,
    /// Formats it serves by default.
    pub default_for: Vec<ModelFormat>,
    /// What to do when this process lacks it.
    pub missing_hint: String,
}

/// Where an engine comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineSource {
    /// Linked into this binary.
    BuiltIn,
    /// Loaded from this plugin file.
    Plugin(PathBuf),
}

/// An engine available to this process.
#[derive(Clone)]
pub struct RegisteredEngine {
    /// The engine.
    pub engine: Arc<dyn InferenceBackend>,
    /// Where it comes from.
    pub source: EngineSource,
    /// The engine it replaced (a plugin over a built-in of the same name), if any.
    pub replaced: Option<EngineSource>,
}

/// The engines available to this process and the rules that pick one per model.
#[derive(Clone, Default)]
pub struct Router {
    engines: Vec<RegisteredEngine>,
    declarations: Vec<EngineDeclaration>,
    format_engines: BTreeMap<ModelFormat, String>,
}

impl Router {
    /// A router over built-in `engines`.
    pub fn new(engines: Vec<Arc<dyn InferenceBackend>>) -> Self {
        Router {
            engines: engines
                .into_iter()
                .map(|engine| RegisteredEngine {
                    engine,
                    source: EngineSource::BuiltIn,
                    replaced: None,
                })
                .collect(),
            declarations: Vec::new(),
            format_engines: BTreeMap::new(),
        }
    }

    /// Know about an engine (default formats, how to get it), present in this process or not.
    pub fn declare(&mut self, declaration: EngineDeclaration) {
        self.declarations.push(declaration);
    }

    /// Add a plugin engine; one with the same name as a built-in replaces it. A second plugin
    /// with a name already taken by a plugin is refused (the first one found wins).
    pub fn add_plugin(&mut self, engine: Arc<dyn InferenceBackend>, path: PathBuf) -> Result<()> {
        let name = engine.name().to_string();
        let entry = RegisteredEngine {
            engine,
            source: EngineSource::Plugin(path),
            replaced: None,
        };
        match self.engines.iter_mut().find(|e| e.engine.name() == name) {
            Some(existing) => match &existing.source {
                EngineSource::Plugin(first) => Err(Error::Config(format!(
                    "engine `{name}` is already provided by plugin {}",
                    first.display()
                ))),
                EngineSource::BuiltIn => {
                    *existing = RegisteredEngine {
                        replaced: Some(EngineSource::BuiltIn),
                        ..entry
                    };
                    Ok(())
                }
            },
            None => {
                self.engines.push(entry);
                Ok(())
            }
        }
    }

    /// Serve `format` with the engine named `engine` when a model's backend is `auto`.
    pub fn set_format_engine(&mut self, format: ModelFormat, engine: &str) {
        self.format_engines.insert(format, engine.to_string());
    }

    /// The engines, in registration order.
    pub fn engines(&self) -> impl Iterator<Item = &Arc<dyn InferenceBackend>> {
        self.engines.iter().map(|e| &e.engine)
    }

    /// The engines with where they come from.
    pub fn registered(&self) -> &[RegisteredEngine] {
        &self.engines
    }

    /// The name of the engine that would serve `info` under `choice` (available or not): for
    /// `auto`, the config's `[formats]` entry, else the declared default for the format, else the
    /// first engine present that reads it.
    pub fn engine_name(&self, info: &ModelInfo, choice: &EngineChoice) -> String {
        let format = info.format;
        match choice {
            EngineChoice::Auto => self
                .format_engines
                .get(&format)
                .cloned()
                .or_else(|| {
                    let declared = self.declarations.iter();
                    declared
                        .filter(|d| d.default_for.contains(&format))
                        .map(|d| d.name.clone())
                        .next()
                })
                .or_else(|| {
                    let present = self.engines().find(|e| e.formats().contains(&format));
                    present.map(|e| e.name().to_string())
                })
                .unwrap_or_else(|| format!("(none for {format})")),
            EngineChoice::Engine(name) => name.clone(),
        }
    }

    /// How to get engine `name`, which this process lacks.
    fn missing_hint(&self, name: &str) -> String {
        self.declarations
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.missing_hint.clone())
            .unwrap_or_else(|| {
                format!(
                    "no built-in or plugin engine is named `{name}`; `minerva engines` lists them"
                )
            })
    }

    /// The engine for `info` under `choice`, or why there is none.
    pub fn choose(
        &self,
        info: &ModelInfo,
        choice: &EngineChoice,
    ) -> Result<Arc<dyn InferenceBackend>> {
        let name = self.engine_name(info, choice);
        let model = info.path.display().to_string();
        let engine =
            self.engines()
                .find(|e| e.name() == name)
                .ok_or_else(|| Error::EngineUnavailable {
                    engine: name.clone(),
                    model: model.clone(),
                    hint: self.missing_hint(&name),
                })?;
        if !engine.formats().contains(&info.format) {
            return Err(Error::Config(format!(
                "engine `{name}` cannot load {} models ({model}); use engine = \"auto\" or one that reads {}",
                info.format, info.format
            )));
        }
        Ok(Arc::clone(engine))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LoadSpec;
    use crate::capabilities::Capabilities;
    use crate::model::EngineParts;
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
        async fn load_model(&self, _: &LoadSpec) -> Result<EngineParts> {
            Err(Error::engine(self.0, "not in this test"))
        }
    }

    fn info(format: ModelFormat) -> ModelInfo {
        ModelInfo {
            path: "/m".into(),
            format,
            architecture: None,
            quantization: None,
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
        let mut router = Router::new(vec![Arc::new(Named("llama", vec![ModelFormat::Gguf]))]);
        router.declare(EngineDeclaration {
            name: "mlx".into(),
            default_for: vec![ModelFormat::Safetensors],
            missing_hint: "add an mlx plugin to plugin_dirs".into(),
        });
        let gguf = info(ModelFormat::Gguf);
        assert_eq!(
            router.choose(&gguf, &EngineChoice::Auto).unwrap().name(),
            "llama"
        );
        let st = info(ModelFormat::Safetensors);
        let err = router
            .choose(&st, &EngineChoice::Auto)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("engine `mlx`") && err.contains("plugin"),
            "{err}"
        );
        let err = router
            .choose(&st, &EngineChoice::named("llama"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot load safetensors"), "{err}");
    }

    #[test]
    fn plugins_replace_built_ins_and_formats_pick_defaults() {
        let mut router = Router::new(vec![Arc::new(Named("llama", vec![ModelFormat::Gguf]))]);
        router
            .add_plugin(
                Arc::new(Named("llama", vec![ModelFormat::Gguf])),
                "a.so".into(),
            )
            .unwrap();
        assert_eq!(router.registered().len(), 1);
        assert_eq!(router.registered()[0].replaced, Some(EngineSource::BuiltIn));
        assert!(router
            .add_plugin(
                Arc::new(Named("llama", vec![ModelFormat::Gguf])),
                "b.so".into()
            )
            .is_err());
        router
            .add_plugin(
                Arc::new(Named("other", vec![ModelFormat::Gguf])),
                "c.so".into(),
            )
            .unwrap();
        let gguf = info(ModelFormat::Gguf);
        assert_eq!(
            router.choose(&gguf, &EngineChoice::Auto).unwrap().name(),
            "llama"
        );
        router.set_format_engine(ModelFormat::Gguf, "other");
        assert_eq!(
            router.choose(&gguf, &EngineChoice::Auto).unwrap().name(),
            "other"
        );
        assert_eq!(
            router
                .choose(&gguf, &EngineChoice::named("llama"))
                .unwrap()
                .name(),
            "llama"
        );
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
            router
                .choose(&gguf, &EngineChoice::named("mlx"))
                .unwrap()
                .name(),
            "mlx"
        );
        assert_eq!(
            router.choose(&gguf, &EngineChoice::Auto).unwrap().name(),
            "llama"
        );
    }
}
