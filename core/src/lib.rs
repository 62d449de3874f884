//! Minerva's core: what engines and plugins depend on. The engine interface
//! ([`InferenceBackend`], the [`generation::Evaluator`] and tokenizer traits), the generation
//! core every engine shares (sequences, token picking, constraints, drafting, scheduling), the
//! runtime's model object over an engine's parts ([`EngineModel`]), requests and responses,
//! sampling options, stop strings, chat templates, reasoning and tool-call formats, model format
//! detection and memory estimates. Configuration, model sources, routing, the pool and runner
//! processes live in `minerva-runtime`, above it.

pub mod backend;
pub mod capabilities;
pub mod error;
pub mod fatal;
pub mod format;
pub mod generation;
pub mod memory;
pub mod model;
pub mod plugin;
pub mod reasoning;
pub mod request;
pub mod response;
pub mod sampling;
pub mod template;
#[doc(hidden)]
pub mod testing;
pub mod text_stream;
pub mod threads;
pub mod tools;

pub use backend::{
    Embeddings, EngineMemory, EngineOptions, InferenceBackend, LoadOptions, LoadSpec, LoadedModel,
    ModelDescriptor, ModelPart,
};
pub use capabilities::{Capabilities, Feature};
pub use error::{Error, Result};
pub use format::{detect, inspect, Detected, ModelFormat, ModelHeader, ModelInfo};
pub use memory::{ByteSize, KvCacheType, MemoryEstimate, DEFAULT_CONTEXT_CAP};
pub use model::{EngineModel, EngineParts};
pub use request::{
    ChatMessage, Constraint, Drafting, GenerationRequest, Input, Role, Tool, ToolCall, ToolChoice,
    MAX_CHOICES, MAX_TOP_LOGPROBS,
};
pub use response::{
    Choice, Completion, FinishReason, StreamEvent, TokenLogprob, TokenProb, TokenStream, Usage,
};
pub use sampling::{ResolvedSampling, SamplingParams};
pub use template::ChatTemplate;
pub use text_stream::TextAssembler;
