//! Minerva's runtime, above `minerva-core`: configuration, model sources (resolve, pull),
//! engine routing and plugins, the model pool with its lifecycle, and runner processes. The
//! core's modules and names are re-exported, so that the CLI and the server have one crate to
//! speak to; engines and plugins depend on `minerva-core` alone.

pub mod config;
pub mod plugin;
pub mod pool;
pub mod pull;
pub mod resolve;
pub mod router;
pub mod runner;
pub mod runtime;

pub use minerva_core::{
    backend, capabilities, error, export_engine, fatal, format, generation, memory, model,
    reasoning, request, response, sampling, template, text_stream, threads, tools,
};
pub use minerva_core::{
    detect, inspect, ByteSize, Capabilities, ChatMessage, ChatTemplate, Choice, Completion,
    Constraint, Detected, Drafting, Embeddings, EngineMemory, EngineModel, EngineOptions,
    EngineParts, Error, Feature, FinishReason, GenerationRequest, InferenceBackend, Input,
    KvCacheType, LoadOptions, LoadSpec, LoadedModel, MemoryEstimate, ModelDescriptor, ModelFormat,
    ModelHeader, ModelInfo, ModelPart, ResolvedSampling, Result, Role, SamplingParams, StreamEvent,
    TextAssembler, TokenLogprob, TokenProb, TokenStream, Tool, ToolCall, ToolChoice, Usage,
    DEFAULT_CONTEXT_CAP, MAX_CHOICES, MAX_TOP_LOGPROBS,
};

pub use config::{Config, ModelConfig, ServerConfig};
pub use pool::{ModelPool, ModelStatus};
pub use pull::{pull, LoggedProgress, PullProgress, PullState, Pulled};
pub use router::{EngineChoice, EngineDeclaration, Router};
pub use runner::{Isolation, RunnerLauncher};
pub use runtime::{CatalogEntry, Inspection, ModelEntry, ModelHandle, Runtime};
