//! The engine interface every backend implements, linked in or (later) loaded as a plugin.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::format::{Detected, ModelFormat};
use crate::model::EngineParts;
use crate::reasoning::ReasoningFormat;
use crate::request::{GenerationRequest, Input, ToolCall};
use crate::response::{Choice, Completion, StreamEvent, TokenLogprob, TokenStream, Usage};
use crate::tools::ToolFormat;

/// What an engine needs to load one model.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The model's id (from config, or its path).
    pub id: String,
    /// The resolved local file or directory.
    pub path: PathBuf,
    /// What format detection found, with the header it parsed (not to be read again).
    pub detected: Detected,
    /// How to load it.
    pub options: LoadOptions,
}

/// How to load one model: the settings every engine reads, and the engine's own table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LoadOptions {
    /// Context window in tokens; `None`: the model's training context, capped by the engine.
    pub context_size: Option<u32>,
    /// CPU threads; `None`: the machine's physical cores.
    pub threads: Option<usize>,
    /// Requests generated concurrently (batched); `None`: the engine's default.
    pub parallel: Option<usize>,
    /// How the KV cache stores K and V; `None`: 16-bit floats.
    #[serde(default)]
    pub kv_cache_type: Option<crate::memory::KvCacheType>,
    /// Most bytes of host memory for KV states of conversations that lost their slot; `None`:
    /// a tenth of physical memory.
    #[serde(default)]
    pub prompt_cache_size: Option<crate::memory::ByteSize>,
    /// The model's `engine_options`, for its engine to validate and read.
    pub engine: EngineOptions,
}

impl LoadOptions {
    /// The prompt store's budget in bytes (for [`crate::generation::Limits`]).
    pub fn prompt_store_bytes(&self) -> usize {
        let bytes = self
            .prompt_cache_size
            .map_or_else(crate::memory::default_prompt_store_bytes, |size| size.0);
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }
}

/// An engine's own settings for one model (`engine_options` in its config entry).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct EngineOptions(pub BTreeMap<String, serde_json::Value>);

impl EngineOptions {
    /// The settings as `engine`'s own type `T` (which denies unknown fields, so that a key the
    /// engine does not know is an error naming it).
    pub fn parse<T: DeserializeOwned>(&self, engine: &str) -> Result<T> {
        let table = serde_json::Value::Object(self.0.clone().into_iter().collect());
        serde_json::from_value(table)
            .map_err(|e| Error::Config(format!("engine_options for engine `{engine}`: {e}")))
    }
}

/// Facts about a loaded model.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ModelDescriptor {
    /// The model's id.
    pub id: String,
    /// The engine serving it.
    pub engine: String,
    /// Context window in tokens.
    pub context_size: u32,
    /// Vocabulary size.
    pub vocab_size: u32,
    /// Whether chat input can be rendered (the model has a chat template).
    pub has_chat_template: bool,
    /// How the model writes tool calls (from its chat template).
    #[serde(default)]
    pub tool_format: ToolFormat,
    /// How the model marks its reasoning (from its chat template).
    #[serde(default)]
    pub reasoning_format: ReasoningFormat,
    /// Where its layers run, in the order a token passes through them (empty: not said).
    #[serde(default)]
    pub placement: Vec<ModelPart>,
}

/// One part of a loaded model and the device that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ModelPart {
    /// The device, e.g. `CPU` or `RPC0[127.0.0.1:50052]`.
    pub device: String,
    /// Its first repeating layer (0-based).
    pub first_layer: u32,
    /// How many repeating layers it holds.
    pub layers: u32,
    /// Whether it also holds the output layer (the final norm and the vocabulary projection).
    pub output: bool,
}

/// An inference engine (llama.cpp, MLX, ...). Object-safe; engines run their blocking native
/// work on their own threads, so every method is safe to call from async code.
#[async_trait]
pub trait InferenceBackend: Send + Sync {
    /// Short engine name used in config and messages, e.g. `llama`.
    fn name(&self) -> &str;
    /// Engine version, e.g. the native library's build.
    fn version(&self) -> String;
    /// The model formats it loads.
    fn formats(&self) -> &[ModelFormat];
    /// The request features it honours.
    fn capabilities(&self) -> Capabilities;
    /// Where it computes: `cpu`, `metal`, `cuda`, ...
    fn device(&self) -> String {
        "cpu".into()
    }
    /// Bytes a loaded model takes in this engine beside its weights and KV cache (compute
    /// buffers, the engine's libraries), for memory estimates.
    fn memory_overhead(&self) -> u64 {
        64 << 20
    }
    /// What this engine makes of a detected model, as keys of its own shown by `minerva inspect`
    /// (e.g. whether the weights are in a layout it treats specially).
    fn model_facts(&self, detected: &Detected) -> serde_json::Map<String, serde_json::Value> {
        let _ = detected;
        serde_json::Map::new()
    }

    /// Load a model: its evaluator on a [`Generator`](crate::generation::Generator), its
    /// tokenizer and template, from which the runtime makes the model object
    /// ([`EngineModel`](crate::model::EngineModel)).
    async fn load_model(&self, spec: &LoadSpec) -> Result<EngineParts>;
}

/// A loaded model: [`EngineModel`](crate::model::EngineModel) in this process, or a runner's.
#[async_trait]
pub trait LoadedModel: Send + Sync {
    /// Facts about the model.
    fn descriptor(&self) -> &ModelDescriptor;

    /// The prompt token ids of `input` as this model sees them (chat rendered with its template,
    /// special tokens added as for a request); `Input::Tokens` is checked against the vocabulary.
    fn tokenize(&self, input: &Input) -> Result<Vec<u32>>;

    /// The text `tokens` stand for, as an answer spells it (see
    /// [`Generator::detokenize`](crate::generation::Generator::detokenize)).
    fn detokenize(&self, tokens: &[u32]) -> Result<String>;

    /// The prompt text a chat request renders to: the model's template over its messages, tools
    /// and template arguments, the generation prompt added. Refused for a request that is not a
    /// chat, or a model without a template.
    fn render(&self, request: &GenerationRequest) -> Result<String>;

    /// Start generating. Errors in the request (context overflow, template failure) are returned
    /// here, before any token; dropping the stream cancels the generation.
    async fn stream(&self, request: GenerationRequest) -> Result<TokenStream>;

    /// Generate the whole completion.
    async fn generate(&self, request: GenerationRequest) -> Result<Completion> {
        collect(self.stream(request).await?).await
    }

    /// The engine's own count of the memory it uses for this model, if it keeps one.
    fn engine_memory(&self) -> Option<EngineMemory> {
        None
    }

    /// Why the model can no longer serve (e.g. its runner process died); `None` while healthy.
    /// The pool loads a failed model again on its next request.
    fn failure(&self) -> Option<String> {
        None
    }

    /// The process the model runs in, when it has one of its own (a runner).
    fn process_id(&self) -> Option<u32> {
        None
    }

    /// One L2-normalised embedding per input. Engines without embeddings keep this default,
    /// which refuses the request by name.
    async fn embed(&self, inputs: Vec<String>) -> Result<Embeddings> {
        let _ = inputs;
        Err(Error::Unsupported {
            engine: self.descriptor().engine.clone(),
            option: "embeddings".into(),
        })
    }
}

/// Memory as an engine counts it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct EngineMemory {
    /// Bytes.
    pub bytes: u64,
    /// What the figure covers, e.g. "MLX allocator peak" or "weights".
    pub what: String,
}

/// Embeddings of several inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens over all inputs.
    pub prompt_tokens: u32,
}

/// Drain a stream into a [`Completion`], its choices in index order.
pub async fn collect(mut stream: TokenStream) -> Result<Completion> {
    let mut open: Vec<Option<(String, Option<Vec<TokenLogprob>>)>> = Vec::new();
    let mut calls: Vec<Vec<ToolCall>> = Vec::new();
    let mut reasoning: Vec<String> = Vec::new();
    let mut done: Vec<Option<Choice>> = Vec::new();
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Delta {
                choice,
                text,
                logprobs,
            } => {
                let i = choice as usize;
                if open.len() <= i {
                    open.resize(i + 1, None);
                }
                let (all_text, all_logprobs) = open[i].get_or_insert_with(Default::default);
                all_text.push_str(&text);
                if !logprobs.is_empty() {
                    all_logprobs.get_or_insert_with(Vec::new).extend(logprobs);
                }
            }
            StreamEvent::Reasoning { choice, text } => {
                let i = choice as usize;
                if reasoning.len() <= i {
                    reasoning.resize(i + 1, String::new());
                }
                reasoning[i].push_str(&text);
            }
            StreamEvent::ToolCall { choice, call } => {
                let i = choice as usize;
                if calls.len() <= i {
                    calls.resize(i + 1, Vec::new());
                }
                calls[i].push(call);
            }
            StreamEvent::Done {
                choice,
                finish_reason,
                usage,
                stop_sequence,
            } => {
                let i = choice as usize;
                if done.len() <= i {
                    done.resize(i + 1, None);
                }
                let (text, logprobs) = open.get_mut(i).and_then(Option::take).unwrap_or_default();
                done[i] = Some(Choice {
                    text,
                    reasoning: reasoning.get_mut(i).map(std::mem::take).unwrap_or_default(),
                    finish_reason,
                    logprobs,
                    usage,
                    stop_sequence,
                    tool_calls: calls.get_mut(i).map(std::mem::take).unwrap_or_default(),
                });
            }
        }
    }
    let choices: Vec<Choice> = done
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| Error::engine("stream", "generation ended without a final event"))?;
    if choices.is_empty() {
        return Err(Error::engine(
            "stream",
            "generation ended without a final event",
        ));
    }
    Ok(Completion {
        usage: Usage::of_choices(choices.iter().map(|c| &c.usage)),
        choices,
    })
}
