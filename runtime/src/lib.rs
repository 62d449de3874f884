//! Minerva's core: the engine interface, the generation core every engine shares (sequences,
//! token picking, scheduling), requests and responses, sampling options, stop strings,
//! chat templates, model format detection, routing, configuration and model resolution. Engines
//! live in their own crates; the CLI and the server are thin layers over [`Runtime`].

pub mod backend;
pub mod capabilities;
pub mod config;
pub mod error;
pub mod fatal;
pub mod format;
pub mod generation;
pub mod memory;
pub mod model;
pub mod plugin;
pub mod pool;
pub mod pull;
pub mod reasoning;
pub mod request;
pub mod resolve;
pub mod response;
pub mod router;
pub mod runner;
pub mod runtime;
pub mod sampling;
pub mod template;
pub mod text_stream;
pub mod threads;
pub mod tools;

pub use backend::{
    Embeddings, EngineMemory, EngineOptions, InferenceBackend, LoadOptions, LoadSpec, LoadedModel,
    ModelDescriptor, ModelPart,
};
pub use capabilities::{Capabilities, Feature};
pub use config::{Config, ModelConfig, ServerConfig};
pub use error::{Error, Result};
pub use format::{detect, inspect, Detected, ModelFormat, ModelHeader, ModelInfo};
pub use memory::{ByteSize, KvCacheType, MemoryEstimate, DEFAULT_CONTEXT_CAP};
pub use model::{EngineModel, EngineParts};
pub use pool::{ModelPool, ModelStatus};
pub use pull::{pull, LoggedProgress, PullProgress, PullState, Pulled};
pub use request::{
    ChatMessage, Constraint, Drafting, GenerationRequest, Input, Role, Tool, ToolCall, ToolChoice,
    MAX_CHOICES, MAX_TOP_LOGPROBS,
};
pub use response::{
    Choice, Completion, FinishReason, StreamEvent, TokenLogprob, TokenProb, TokenStream, Usage,
};
pub use router::{EngineChoice, EngineDeclaration, Router};
pub use runner::{Isolation, RunnerLauncher};
pub use runtime::{CatalogEntry, Inspection, ModelEntry, ModelHandle, Runtime};
pub use sampling::{ResolvedSampling, SamplingParams};
pub use template::ChatTemplate;
pub use text_stream::TextAssembler;
