//! The front door for the CLI and the server: model references -> configured entries -> detected
//! format -> routed engine -> loaded model, and requests with the model's defaults applied.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::{InferenceBackend, LoadOptions, LoadSpec, LoadedModel};
use crate::config::{Config, DraftSource, ModelConfig};
use crate::error::{Error, Result};
use crate::format::{detect, ModelInfo};
use crate::memory::MemoryEstimate;
use crate::model::EngineModel;
use crate::pull::{pull, LoggedProgress, PullProgress};
use crate::request::{Drafting, GenerationRequest, ToolChoice};

/// Most draft tokens per step when the model's `draft_max` does not say.
const DEFAULT_DRAFT_TOKENS: u32 = 16;
use crate::resolve::{parse_repo_reference, resolve_model_path};
use crate::response::{Completion, TokenStream};
use crate::router::Router;
use crate::runner::{Isolation, RunnerLauncher, RunnerModel};
use crate::tools;

/// A model as the config (or a bare path) describes it, with its reference resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelEntry {
    /// The settings it was built from (a bare path gets an entry with defaults).
    pub config: ModelConfig,
    /// The local file or directory.
    pub path: PathBuf,
    /// How to load it: the model's settings over the global ones.
    pub load: LoadOptions,
}

/// What is known of a model before loading it.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// What detection found.
    #[serde(flatten)]
    pub info: ModelInfo,
    /// The engine the router picks.
    pub engine: String,
    /// Whether that engine is in this process (built in or a loaded plugin).
    pub engine_available: bool,
    /// Where that engine computes (`cpu (zen4)`, `cuda (NVIDIA H100 80GB HBM3)`, ...), when
    /// it is in this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// What loading it is expected to take (with that engine, at its configured context).
    pub memory_estimate: MemoryEstimate,
    /// What that engine makes of the model (its own keys), when present.
    #[serde(flatten)]
    pub facts: serde_json::Map<String, serde_json::Value>,
}

/// One configured model in the catalog.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    /// Its id in requests.
    pub id: String,
    /// Its path or reference as configured.
    pub path: String,
    /// What is known of it, or why nothing is.
    pub inspection: std::result::Result<Inspection, String>,
}

/// Configured models and the engines that can serve them.
#[derive(Clone)]
pub struct Runtime {
    config: Config,
    router: Router,
    runners: Option<RunnerLauncher>,
    default_isolation: Isolation,
    in_process_only: bool,
    pull_missing: bool,
}

impl Runtime {
    /// A runtime over `config` with the engines in `router`; models load in this process
    /// unless configured otherwise (and a runner launcher is given).
    pub fn new(config: Config, router: Router) -> Self {
        Runtime {
            config,
            router,
            runners: None,
            default_isolation: Isolation::None,
            in_process_only: false,
            pull_missing: false,
        }
    }

    /// The same engines and runner settings over another configuration.
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Start runner processes with `launcher` for models whose isolation is `process`.
    pub fn with_runners(mut self, launcher: RunnerLauncher) -> Self {
        self.runners = Some(launcher);
        self
    }

    /// The isolation of models whose config sets none (the front-end's default).
    pub fn with_default_isolation(mut self, isolation: Isolation) -> Self {
        self.default_isolation = isolation;
        self
    }

    /// Load every model in this process whatever the config says (a runner itself, or a
    /// benchmark that measures the engine in its own process).
    pub fn in_process_only(mut self) -> Self {
        self.in_process_only = true;
        self
    }

    /// Fetch every model that is a Hugging Face repo missing from the cache before loading it
    /// (`--pull`), not only those configured with `pull = true`.
    pub fn with_pull_missing(mut self, pull: bool) -> Self {
        self.pull_missing = pull;
        self
    }

    /// When pulling is wanted for `reference` (its `pull = true`, or [`Runtime::with_pull_missing`])
    /// and it is a Hugging Face repo not in the cache: fetch it, reporting to `progress`.
    pub async fn pull_if_missing(
        &self,
        reference: &str,
        progress: Arc<dyn PullProgress>,
    ) -> Result<()> {
        let config = self
            .config
            .model(reference)
            .cloned()
            .unwrap_or_else(|| ModelConfig::for_reference(reference));
        if !(config.pull || self.pull_missing) {
            return Ok(());
        }
        let found = resolve_model_path(
            &config.path,
            config.file.as_deref(),
            config.revision.as_deref(),
        );
        match found {
            Err(Error::ModelNotFound(_)) if parse_repo_reference(&config.path).is_some() => {
                tracing::info!(model = %config.id, repo = %config.path, "not in the cache: pulling");
                pull(&config.path, config.revision.as_deref(), progress).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Where `entry`'s engine runs: its own setting, else the config's, else the default.
    pub fn isolation(&self, entry: &ModelEntry) -> Isolation {
        if self.in_process_only {
            return Isolation::None;
        }
        entry
            .config
            .isolation
            .or(self.config.isolation)
            .unwrap_or(self.default_isolation)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The engines.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The entry for `reference`: a configured model id, else a local path or cached Hugging Face
    /// repo with default settings (its id by [`ModelConfig::for_reference`]).
    pub fn entry(&self, reference: &str) -> Result<ModelEntry> {
        let mut config = self
            .config
            .model(reference)
            .cloned()
            .unwrap_or_else(|| ModelConfig::for_reference(reference));
        config.max_tokens_limit = config.max_tokens_limit.or(self.config.max_tokens_limit);
        config.request_timeout = config.request_timeout.or(self.config.request_timeout);
        config.max_embedding_inputs = config
            .max_embedding_inputs
            .or(self.config.max_embedding_inputs);
        let path = resolve_model_path(
            &config.path,
            config.file.as_deref(),
            config.revision.as_deref(),
        )?;
        Ok(ModelEntry {
            load: LoadOptions {
                context_size: config.context_size.or(self.config.context_size),
                threads: config.threads.or(self.config.threads),
                parallel: config.parallel.or(self.config.parallel),
                kv_cache_type: config.kv_cache_type.or(self.config.kv_cache_type),
                prompt_cache_size: config.prompt_cache_size.or(self.config.prompt_cache_size),
                engine: config.engine_options_with_shorthands(),
            },
            config,
            path,
        })
    }

    /// Detect `entry`'s format, name the engine that would serve it, and ask that engine (when
    /// present) what it makes of the model.
    pub fn inspect(&self, entry: &ModelEntry) -> Result<Inspection> {
        let detected = detect(&entry.path)?;
        let engine = self
            .router
            .engine_name(&detected.info, &entry.config.engine);
        let present = self.router.engines().find(|e| e.name() == engine);
        let engine_bytes = present.map_or(64 << 20, |e| e.memory_overhead());
        let mut memory_estimate = MemoryEstimate::of(
            &detected,
            entry.load.context_size,
            entry.load.kv_cache_type.unwrap_or_default(),
            engine_bytes,
        );
        if let Some(DraftSource::Model(reference)) = &entry.config.draft {
            // A draft that cannot be found counts nothing here; loading names the problem.
            if let Ok(draft) = self.draft_entry(entry, reference, memory_estimate.context_size) {
                if let Ok(found) = self.inspect(&draft) {
                    let other_engine = found.engine != engine;
                    let need = found.memory_estimate;
                    memory_estimate.draft =
                        need.weights + need.kv_cache + if other_engine { need.engine } else { 0 };
                }
            }
        }
        Ok(Inspection {
            memory_estimate,
            facts: present
                .map(|e| e.model_facts(&detected))
                .unwrap_or_default(),
            engine_available: present.is_some(),
            device: present.map(|e| e.device()),
            info: detected.info,
            engine,
        })
    }

    /// Every configured model, then every other model in the Hugging Face cache (by its repo
    /// reference), with what detection and routing say of it: the one list behind `minerva
    /// models`, `GET /v1/models` and Ollama's `/api/tags`.
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        let configured = self
            .config
            .models
            .iter()
            .map(|m| (m.id.clone(), m.path.clone()));
        let cached = crate::resolve::cached_models()
            .into_iter()
            .filter(|c| {
                let named = |m: &ModelConfig| m.id == c.reference || m.path == c.reference;
                !self.config.models.iter().any(named)
            })
            .map(|c| (c.reference.clone(), c.reference));
        configured
            .chain(cached)
            .map(|(id, path)| CatalogEntry {
                inspection: self
                    .entry(&id)
                    .and_then(|e| self.inspect(&e))
                    .map_err(|e| e.to_string()),
                id,
                path,
            })
            .collect()
    }

    /// Pull when wanted (progress in the log), resolve, detect, route and load `reference`.
    pub async fn load(&self, reference: &str) -> Result<ModelHandle> {
        self.pull_if_missing(reference, Arc::new(LoggedProgress::default()))
            .await?;
        self.load_entry(self.entry(reference)?).await
    }

    /// Detect, route and load an entry (e.g. one adjusted by command-line flags).
    pub async fn load_entry(&self, entry: ModelEntry) -> Result<ModelHandle> {
        let detected = detect(&entry.path)?;
        let info = detected.info.clone();
        let engine = self.router.choose(&info, &entry.config.engine)?;
        let spec = LoadSpec {
            id: entry.config.id.clone(),
            path: entry.path.clone(),
            detected,
            options: entry.load.clone(),
        };
        let isolation = self.isolation(&entry);
        tracing::info!(model = %spec.id, engine = engine.name(), path = %spec.path.display(), ?isolation, "loading model");
        let (model, local): (Arc<dyn LoadedModel>, _) = match (isolation, &self.runners) {
            (Isolation::None, _) => {
                let mut parts = engine.load_model(&spec).await?;
                if let Some(path) = &entry.config.chat_template {
                    parts = parts.chat_template_file(path)?;
                }
                let model = Arc::new(EngineModel::new(&spec.id, engine.name(), parts));
                if let Some(DraftSource::Model(reference)) = &entry.config.draft {
                    self.attach_draft(&model, &entry, reference)
                        .await
                        .map_err(|e| {
                            crate::Error::Config(format!(
                                "model `{}`: draft model `{reference}`: {e}",
                                spec.id
                            ))
                        })?;
                }
                (model.clone(), Some(model))
            }
            (Isolation::Process, Some(launcher)) => (
                Arc::new(RunnerModel::start(launcher, &self.config, &entry).await?),
                None,
            ),
            (Isolation::Process, None) => {
                return Err(crate::Error::Config(format!(
                    "model `{}` has isolation = \"process\", but this program cannot start \
                     runner processes; use isolation = \"none\"",
                    spec.id
                )))
            }
        };
        Ok(ModelHandle {
            entry,
            info,
            engine,
            model,
            local,
        })
    }

    /// The entry of draft model `reference` for `entry`'s model: its context and parallelism,
    /// no draft of its own, and no prompt store (its prompts are the model's, which has one;
    /// a small draft recomputes a restored conversation cheaply).
    fn draft_entry(&self, entry: &ModelEntry, reference: &str, context: u32) -> Result<ModelEntry> {
        let mut draft = self.entry(reference)?;
        draft.config.draft = None;
        draft.load.prompt_cache_size = Some(crate::memory::ByteSize(0));
        draft.load.context_size = Some(context);
        draft.load.parallel = entry.load.parallel;
        Ok(draft)
    }

    /// Load `reference` in this process to draft for `model` (loaded from `entry`), with the
    /// model's context and parallelism, and attach it.
    async fn attach_draft(
        &self,
        model: &EngineModel,
        entry: &ModelEntry,
        reference: &str,
    ) -> Result<()> {
        let draft = self.draft_entry(entry, reference, model.descriptor().context_size)?;
        let detected = detect(&draft.path)?;
        let engine = self.router.choose(&detected.info, &draft.config.engine)?;
        let spec = LoadSpec {
            id: format!("{} (draft for {})", draft.config.id, entry.config.id),
            path: draft.path.clone(),
            detected,
            options: draft.load,
        };
        tracing::info!(model = %entry.config.id, draft = %reference, engine = engine.name(), "loading draft model");
        let parts = engine.load_model(&spec).await?;
        model.attach_draft(EngineModel::new(&spec.id, engine.name(), parts))
    }
}

/// Most inputs in one embeddings request unless `max_embedding_inputs` says otherwise.
pub const DEFAULT_EMBEDDING_INPUTS: usize = 256;

/// A loaded model with its configured defaults.
#[derive(Clone)]
pub struct ModelHandle {
    entry: ModelEntry,
    info: ModelInfo,
    engine: Arc<dyn InferenceBackend>,
    model: Arc<dyn LoadedModel>,
    /// The same model when it runs in this process.
    local: Option<Arc<EngineModel>>,
}

impl ModelHandle {
    /// The model's entry.
    pub fn entry(&self) -> &ModelEntry {
        &self.entry
    }

    /// What detection found.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The engine serving it.
    pub fn engine(&self) -> &Arc<dyn InferenceBackend> {
        &self.engine
    }

    /// The loaded model.
    pub fn model(&self) -> &Arc<dyn LoadedModel> {
        &self.model
    }

    /// The model object, when the model runs in this process (not in a runner).
    pub fn local_model(&self) -> Option<&EngineModel> {
        self.local.as_deref()
    }

    /// Apply the model's defaults to `request`, then validate it and check the engine supports it.
    /// A required tool call becomes a constraint on decoding; `tool_choice: none` drops the tools.
    pub fn prepare(&self, mut request: GenerationRequest) -> Result<GenerationRequest> {
        request.sampling = request.sampling.or(self.entry.config.sampling);
        request.max_tokens = request.max_tokens.or(self.entry.config.max_tokens);
        if let Some(limit) = self.entry.config.max_tokens_limit {
            request.max_tokens = Some(request.max_tokens.map_or(limit, |n| n.min(limit)));
        }
        // A prediction drafts from the prompt and answer too: where the answer leaves the
        // prediction, it often copies the prompt.
        // A draft model comes after the prediction, before any lookup.
        let draft_model = matches!(self.entry.config.draft, Some(DraftSource::Model(_)));
        let prompt_lookup = self.entry.config.draft == Some(DraftSource::PromptLookup)
            || (request.prediction.is_some() && !draft_model);
        if request.drafting.is_none() && (prompt_lookup || draft_model) {
            request.drafting = Some(Drafting {
                prompt_lookup,
                max_tokens: self.entry.config.draft_max.unwrap_or(DEFAULT_DRAFT_TOKENS),
                draft_model,
            });
        }
        request.validate()?;
        if request.tool_choice == ToolChoice::None {
            request.tools.clear();
        }
        if let Some(calls) = tools::call_constraint(
            &request.tools,
            &request.tool_choice,
            request.parallel_tool_calls,
        ) {
            if request.constraint.is_some() {
                return Err(crate::Error::param(
                    "tool_choice",
                    "a required tool call and response_format cannot be combined",
                ));
            }
            request.constraint = Some(calls);
        }
        self.engine
            .capabilities()
            .check(self.engine.name(), &request)?;
        Ok(request)
    }

    /// Stream a generation; with tools offered, calls in the text become tool-call events.
    pub async fn stream(&self, request: GenerationRequest) -> Result<TokenStream> {
        let request = self.prepare(request)?;
        let with_tools = !request.tools.is_empty();
        let started = tokio::time::Instant::now();
        let stream = match self.entry.config.request_timeout {
            Some(seconds) => {
                let limit = std::time::Duration::from_secs(seconds);
                let timed_out = || crate::Error::TimedOut {
                    model: self.entry.config.id.clone(),
                    seconds,
                };
                let stream = tokio::time::timeout(limit, self.model.stream(request))
                    .await
                    .map_err(|_| timed_out())??;
                with_deadline(stream, started + limit, timed_out())
            }
            None => self.model.stream(request).await?,
        };
        Ok(match with_tools {
            true => tools::parse_tool_calls(stream, self.model.descriptor().tool_format),
            false => stream,
        })
    }

    /// Embed `inputs` (one vector each).
    pub async fn embed(&self, inputs: Vec<String>) -> Result<crate::backend::Embeddings> {
        if inputs.is_empty() || inputs.iter().any(String::is_empty) {
            return Err(crate::Error::InvalidRequest(
                "embedding inputs must be non-empty strings".into(),
            ));
        }
        let most = self
            .entry
            .config
            .max_embedding_inputs
            .unwrap_or(DEFAULT_EMBEDDING_INPUTS);
        if inputs.len() > most {
            return Err(crate::Error::param(
                "input",
                format!(
                    "{} inputs are over the limit of {most} per request (max_embedding_inputs)",
                    inputs.len()
                ),
            ));
        }
        self.model.embed(inputs).await
    }

    /// Generate a whole completion.
    pub async fn generate(&self, request: GenerationRequest) -> Result<Completion> {
        crate::backend::collect(self.stream(request).await?).await
    }
}

/// `stream` until `deadline`, then `error` in place of the rest; dropping the stream there stops
/// its generation.
fn with_deadline(
    stream: TokenStream,
    deadline: tokio::time::Instant,
    error: crate::Error,
) -> TokenStream {
    use futures::StreamExt;
    let timer = Box::pin(tokio::time::sleep_until(deadline));
    Box::pin(futures::stream::unfold(
        Some((stream, timer, error)),
        |state| async move {
            let (mut stream, mut timer, error) = state?;
            tokio::select! {
                item = stream.next() => item.map(|item| (item, Some((stream, timer, error)))),
                _ = &mut timer => Some((Err(error), None)),
            }
        },
    ))
}
