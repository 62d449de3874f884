//! Configuration: `minerva.toml`, then `MINERVA_*` environment variables, then command-line flags,
//! each layer over the one before. Unknown keys and bad values are errors naming the key.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::backend::EngineOptions;
use crate::error::{Error, Result};
use crate::router::EngineChoice;
use crate::runner::Isolation;
use crate::sampling::SamplingParams;

/// The file name looked for when no `--config` is given.
pub const CONFIG_FILE_NAME: &str = "minerva.toml";

/// Environment variables with this prefix set config keys (`MINERVA_THREADS=4`).
pub const ENV_PREFIX: &str = "MINERVA_";

/// `MINERVA_*` variables that are not config keys (read by the command line).
const NON_CONFIG_ENV: &[&str] = &["CONFIG", "LOG", "API_KEY", "PLUGIN_DIRS"];

/// Where a model's drafts for speculative decoding come from: `"prompt-lookup"` (or `"ngram"`),
/// else a draft model's id or path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum DraftSource {
    /// The prompt and the answer so far (n-gram lookup).
    PromptLookup,
    /// A model with the same vocabulary (a configured id, a path or a Hugging Face id), loaded
    /// beside the model by whichever engine its format calls for.
    Model(String),
}

impl From<String> for DraftSource {
    fn from(value: String) -> Self {
        match value.as_str() {
            "prompt-lookup" | "ngram" => DraftSource::PromptLookup,
            _ => DraftSource::Model(value),
        }
    }
}

impl From<DraftSource> for String {
    fn from(source: DraftSource) -> Self {
        match source {
            DraftSource::PromptLookup => "prompt-lookup".into(),
            DraftSource::Model(reference) => reference,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default CPU threads for every model (default: physical cores).
    pub threads: Option<usize>,
    /// Default context size for every model (default: the model's, capped by the engine).
    pub context_size: Option<u32>,
    /// Default number of requests each model generates concurrently (batched).
    pub parallel: Option<usize>,
    /// Default KV-cache storage for every model: `f16`, `q8_0` or `q4_0`.
    pub kv_cache_type: Option<crate::memory::KvCacheType>,
    /// Default prompt store size of every model: host memory for the KV states of
    /// conversations that lost their slot (bytes or `"2GiB"`; default a tenth of RAM; 0: off).
    pub prompt_cache_size: Option<crate::memory::ByteSize>,
    /// Where models' engines run: `process` (a runner process per model, restarted when it
    /// dies) or `none` (inside this process); default: `process` for `minerva serve`, `none`
    /// for the other commands.
    pub isolation: Option<Isolation>,
    /// Seconds an idle model stays loaded (`0`: unloaded after each request; `-1` or unset:
    /// never unloaded for being idle).
    pub keep_alive: Option<i64>,
    /// Most models loaded at once; loading another evicts the least recently used idle one.
    pub max_loaded_models: Option<usize>,
    /// Most memory the loaded models may take together, by their estimates (weights + KV cache
    /// for their context + engine); loading another evicts least recently used idle ones first.
    /// Bytes or a size such as `"8GiB"`.
    pub memory_budget: Option<crate::memory::ByteSize>,
    /// Ceiling on every request's `max_tokens` (requests asking for more, or for none, get this
    /// many at most and end with `length`); default: none beyond the context window.
    pub max_tokens_limit: Option<u32>,
    /// Seconds a request may run (its prompt and generation) before it is stopped with
    /// a `request_timeout` error (504); default: no limit.
    pub request_timeout: Option<u64>,
    /// Most inputs in one embeddings request (default 256).
    pub max_embedding_inputs: Option<usize>,
    /// Configured models.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Folders searched for engine plugins (`MINERVA_PLUGIN_DIRS`, a path list, adds more).
    #[serde(default)]
    pub plugin_dirs: Vec<std::path::PathBuf>,
    /// The engine serving each format when a model's engine is `auto`, e.g. `gguf = "llama"`.
    #[serde(default)]
    pub formats: std::collections::BTreeMap<crate::format::ModelFormat, String>,
    /// HTTP server settings (`minerva serve`).
    #[serde(default)]
    pub server: ServerConfig,
}

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind; loopback unless you mean to expose it.
    pub host: String,
    /// Port to listen on.
    pub port: u16,
    /// Accepted bearer tokens; empty means no authentication.
    pub api_keys: Vec<String>,
    /// Origins allowed by CORS (`"*"` for any); empty disables CORS headers.
    pub cors_origins: Vec<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Requests per model running or waiting before new ones get 429.
    pub queue_size: usize,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    pub shutdown_grace_s: u64,
    /// Whether clients may download models into the cache and delete them (`/v1/models/pull`,
    /// `DELETE /v1/models/{id}`, Ollama's `/api/pull` and `/api/delete`). Unset: allowed on a
    /// loopback address only, since anyone who reaches the server could otherwise fill its disk.
    pub allow_downloads: Option<bool>,
}

impl ServerConfig {
    /// [`ServerConfig::allow_downloads`], its default applied.
    pub fn downloads_allowed(&self) -> bool {
        self.allow_downloads.unwrap_or_else(|| {
            let host = self.host.trim_start_matches('[').trim_end_matches(']');
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            api_keys: Vec::new(),
            cors_origins: Vec::new(),
            max_body_bytes: 4 << 20,
            queue_size: 16,
            shutdown_grace_s: 10,
            allow_downloads: None,
        }
    }
}

/// One `[[models]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name requests use.
    pub id: String,
    /// A local file or directory, or a Hugging Face repo id (`org/name`) found in the local cache.
    pub path: String,
    /// For a Hugging Face repo with several GGUF files: which one.
    pub file: Option<String>,
    /// For a Hugging Face repo: the revision (branch, tag or commit); default `main`.
    pub revision: Option<String>,
    /// Which engine serves it: `auto` (by format) or an engine's name (`backend` is accepted
    /// as the key too).
    #[serde(default, alias = "backend")]
    pub engine: EngineChoice,
    /// Context window in tokens.
    pub context_size: Option<u32>,
    /// CPU threads.
    pub threads: Option<usize>,
    /// Requests generated concurrently (batched) in one shared context.
    pub parallel: Option<usize>,
    /// KV-cache storage: `f16` (default), `q8_0` (about half the memory) or `q4_0`.
    pub kv_cache_type: Option<crate::memory::KvCacheType>,
    /// Its prompt store's size (overrides the global `prompt_cache_size`).
    pub prompt_cache_size: Option<crate::memory::ByteSize>,
    /// ggml RPC workers (`"host:port"`, started with `minerva worker --rpc`) that take part of
    /// its layers with the local device: a shorthand for the llama engine's
    /// `engine_options.rpc` (another engine refuses it by name).
    #[serde(default)]
    pub rpc: Vec<String>,
    /// A Jinja chat template file used instead of the model's own (e.g. one of a model family
    /// whose format the model was tuned on).
    pub chat_template: Option<PathBuf>,
    /// Where its engine runs (overrides the global `isolation`).
    pub isolation: Option<Isolation>,
    /// Seconds it stays loaded when idle (overrides the global `keep_alive`).
    pub keep_alive: Option<i64>,
    /// Never unloaded for being idle or evicted for another model.
    #[serde(default)]
    pub pinned: bool,
    /// Fetch it from the Hugging Face hub when it is not in the cache yet (`path` a repo id).
    #[serde(default)]
    pub pull: bool,
    /// Speculative decoding (the output is unchanged): `"prompt-lookup"` drafts tokens from
    /// where the last ones occurred earlier in the prompt and answer; any other value names a
    /// draft model (id, path or Hugging Face id) with the same vocabulary.
    pub draft: Option<DraftSource>,
    /// Most draft tokens verified in one step (default 16; the length adapts below it).
    pub draft_max: Option<u32>,
    /// Default `max_tokens` for requests that set none.
    pub max_tokens: Option<u32>,
    /// Ceiling on its requests' `max_tokens` (overrides the global `max_tokens_limit`).
    pub max_tokens_limit: Option<u32>,
    /// Seconds its requests may run (overrides the global `request_timeout`).
    pub request_timeout: Option<u64>,
    /// Most inputs in one of its embeddings requests (overrides the global
    /// `max_embedding_inputs`).
    pub max_embedding_inputs: Option<usize>,
    /// Default sampling for requests to this model.
    #[serde(default)]
    pub sampling: SamplingParams,
    /// Settings of the engine that serves it (each engine documents and checks its own keys).
    #[serde(default)]
    pub engine_options: EngineOptions,
}

impl ModelConfig {
    /// Its `engine_options`, with the shorthands written beside them folded in (`rpc`; a key set
    /// in both places keeps the `engine_options` value).
    pub fn engine_options_with_shorthands(&self) -> EngineOptions {
        let mut options = self.engine_options.clone();
        if !self.rpc.is_empty() {
            options
                .0
                .entry("rpc".into())
                .or_insert_with(|| serde_json::json!(self.rpc));
        }
        options
    }

    /// An entry for a model given by path or Hugging Face id rather than configured, named by
    /// the one id rule: the file name without `.gguf` (`models/x.Q4_1.gguf` -> `x.Q4_1`), else
    /// the last path component (a directory or repo name).
    pub fn for_reference(reference: &str) -> Self {
        let path = Path::new(reference);
        let name = if path.extension().is_some_and(|e| e == "gguf") {
            path.file_stem()
        } else {
            path.file_name()
        };
        let id = name
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .unwrap_or(reference);
        ModelConfig::new(id, reference)
    }

    /// An entry for `path` named `id`, with every setting at its default.
    pub fn new(id: impl Into<String>, path: impl Into<String>) -> Self {
        ModelConfig {
            id: id.into(),
            path: path.into(),
            file: None,
            revision: None,
            engine: EngineChoice::Auto,
            context_size: None,
            threads: None,
            parallel: None,
            kv_cache_type: None,
            prompt_cache_size: None,
            rpc: Vec::new(),
            chat_template: None,
            isolation: None,
            keep_alive: None,
            pinned: false,
            pull: false,
            draft: None,
            draft_max: None,
            max_tokens: None,
            max_tokens_limit: None,
            request_timeout: None,
            max_embedding_inputs: None,
            sampling: SamplingParams::default(),
            engine_options: EngineOptions::default(),
        }
    }
}

impl Config {
    /// Load the config: `explicit` file (must exist) or the first of [`Config::search_path`] that
    /// exists, then the environment, then `overrides` (command-line flags; unset ones skipped).
    /// `engine_env` names the `MINERVA_*` variables engines read themselves (without the
    /// prefix), which are not config keys.
    pub fn load(
        explicit: Option<&Path>,
        overrides: &impl Serialize,
        engine_env: &[&str],
    ) -> Result<Config> {
        let mut figment = Figment::new();
        match explicit {
            Some(path) if !path.is_file() => {
                return Err(Error::Config(format!(
                    "config file {} does not exist",
                    path.display()
                )))
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => {
                if let Some(path) = Self::search_path().into_iter().find(|p| p.is_file()) {
                    figment = figment.merge(Toml::file_exact(path));
                }
            }
        }
        figment = figment
            .merge(
                Env::prefixed(ENV_PREFIX)
                    .ignore(&[NON_CONFIG_ENV, engine_env].concat())
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides));
        let config: Config = figment.extract().map_err(|e| {
            Error::Config(
                e.into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parse a config from TOML text alone (no environment), e.g. for tests and examples.
    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Where a config file is looked for: `./minerva.toml`, then
    /// `$XDG_CONFIG_HOME/minerva/minerva.toml` (or `~/.config/minerva/minerva.toml`).
    pub fn search_path() -> Vec<PathBuf> {
        let mut paths = vec![PathBuf::from(CONFIG_FILE_NAME)];
        let config_home = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        if let Some(home) = config_home {
            paths.push(home.join("minerva").join(CONFIG_FILE_NAME));
        }
        paths
    }

    /// The configured model with this id.
    pub fn model(&self, id: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.id == id)
    }

    /// Add models given by reference (`serve --model`): each that is not a configured id gets
    /// an entry named by [`ModelConfig::for_reference`].
    pub fn add_references(&mut self, references: &[String]) {
        for reference in references {
            if self.model(reference).is_none() {
                self.models.push(ModelConfig::for_reference(reference));
            }
        }
    }

    fn validate(&self) -> Result<()> {
        let positive = |key: String, value: Option<u64>| match value {
            Some(0) => Err(Error::Config(format!("`{key}` must be at least 1"))),
            _ => Ok(()),
        };
        positive("threads".into(), self.threads.map(|v| v as u64))?;
        positive("context_size".into(), self.context_size.map(u64::from))?;
        positive(
            "max_tokens_limit".into(),
            self.max_tokens_limit.map(u64::from),
        )?;
        positive("request_timeout".into(), self.request_timeout)?;
        positive(
            "max_embedding_inputs".into(),
            self.max_embedding_inputs.map(|v| v as u64),
        )?;
        positive("parallel".into(), self.parallel.map(|v| v as u64))?;
        positive(
            "max_loaded_models".into(),
            self.max_loaded_models.map(|v| v as u64),
        )?;
        positive(
            "server.queue_size".into(),
            Some(self.server.queue_size as u64),
        )?;
        positive(
            "server.max_body_bytes".into(),
            Some(self.server.max_body_bytes as u64),
        )?;
        if self.server.api_keys.iter().any(|k| k.trim().is_empty()) {
            return Err(Error::Config(
                "`server.api_keys` must not contain empty keys".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let key = |field: &str| format!("models[{i}].{field}");
            if m.id.trim().is_empty() {
                return Err(Error::Config(format!("`{}` must not be empty", key("id"))));
            }
            if m.path.trim().is_empty() {
                return Err(Error::Config(format!(
                    "`{}` must not be empty",
                    key("path")
                )));
            }
            if !seen.insert(m.id.as_str()) {
                return Err(Error::Config(format!(
                    "`{}`: model id `{}` is configured twice",
                    key("id"),
                    m.id
                )));
            }
            positive(key("threads"), m.threads.map(|v| v as u64))?;
            positive(key("context_size"), m.context_size.map(u64::from))?;
            positive(key("parallel"), m.parallel.map(|v| v as u64))?;
            positive(key("max_tokens"), m.max_tokens.map(u64::from))?;
            positive(key("max_tokens_limit"), m.max_tokens_limit.map(u64::from))?;
            positive(key("request_timeout"), m.request_timeout)?;
            positive(
                key("max_embedding_inputs"),
                m.max_embedding_inputs.map(|v| v as u64),
            )?;
            m.sampling
                .validate()
                .map_err(|e| Error::Config(format!("{}: {e}", key("sampling"))))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_model_entry_parses() {
        let c = Config::from_toml(
            r#"
            threads = 2
            [[models]]
            id = "smol"
            path = "models/smol.gguf"
            backend = "llama"
            context_size = 4096
            isolation = "none"
            [models.sampling]
            temperature = 0.2
            "#,
        )
        .unwrap();
        let m = c.model("smol").unwrap();
        assert_eq!(m.engine, EngineChoice::named("llama"));
        assert_eq!(m.sampling.temperature, Some(0.2));
        assert_eq!(c.threads, Some(2));
        assert_eq!(m.isolation, Some(Isolation::None));
        assert_eq!(c.isolation, None);
        let err = Config::from_toml("isolation = 'thread'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("isolation") || err.contains("thread"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = Config::from_toml("[[models]]\nid='a'\npath='b'\ncontext_sise=5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("context_sise"), "{err}");
        let err = Config::from_toml("[[models]]\nid='a'\npath='b'\nbackend=3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("backend"), "{err}");
        let err = Config::from_toml("[formats]\nonnx='x'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("onnx"), "{err}");
        let err = Config::from_toml("threads = 'many'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("threads"), "{err}");
        let err = Config::from_toml("[[models]]\nid='a'\npath='b'\n[[models]]\nid='a'\npath='c'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("models[1].id"), "{err}");
        let err = Config::from_toml("[[models]]\nid='a'\npath='b'\nsampling = { top_p = 3.0 }")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("models[0].sampling") && err.contains("top_p"),
            "{err}"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's signature
    fn env_and_flags_layer_over_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("minerva.toml", "threads = 2\ncontext_size = 512")?;
            jail.set_env("MINERVA_THREADS", "3");
            jail.set_env("MINERVA_CONFIG", "ignored.toml");
            let flags = serde_json::json!({ "context_size": 1024 });
            let c = Config::load(None, &flags, &[]).unwrap();
            assert_eq!(c.threads, Some(3));
            assert_eq!(c.context_size, Some(1024));
            jail.set_env("MINERVA_SERVER__PORT", "9000");
            assert_eq!(Config::load(None, &flags, &[]).unwrap().server.port, 9000);
            jail.set_env("MINERVA_THREDS", "3");
            let err = Config::load(None, &flags, &[]).unwrap_err().to_string();
            assert!(err.contains("threds"), "{err}");
            Ok(())
        });
    }
}
