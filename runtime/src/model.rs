//! The model object: what the runtime makes of a model an engine loaded in this process.
//! Engines provide [`EngineParts`] (a [`Generator`] over their evaluator, their [`Tokenizer`],
//! the chat template); [`EngineModel`] implements [`LoadedModel`] once for every engine: the
//! prompt's tokens (one rule for special tokens), prediction tokens, embeddings' inputs and
//! drafting with another model.

use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::{Embeddings, EngineMemory, LoadedModel, ModelDescriptor, ModelPart};
use crate::error::{Error, Result};
use crate::generation::{Generator, Tokenizer};
use crate::reasoning;
use crate::request::{GenerationRequest, Input, Tool};
use crate::response::TokenStream;
use crate::template::ChatTemplate;

/// An engine's report on a model it keeps (memory, health), asked when the runtime needs it.
type Report<T> = Box<dyn Fn() -> Option<T> + Send + Sync>;

/// What an engine makes of one model: the runtime builds the model object around it.
pub struct EngineParts {
    /// The model's generation thread, over the engine's evaluator.
    pub generator: Generator,
    /// Text to token ids.
    pub tokenizer: Arc<dyn Tokenizer>,
    /// The model's chat template, if it has one.
    pub template: Option<ChatTemplate>,
    /// Where its layers run, in the order a token passes through them (empty: not said).
    pub placement: Vec<ModelPart>,
    /// The engine's own count of the memory the model uses.
    pub memory: Option<Report<EngineMemory>>,
    /// Why the model can no longer serve (e.g. a link to another process broke).
    pub failure: Option<Report<String>>,
}

impl EngineParts {
    /// The parts every engine has; placement, memory and failure reports are added with the
    /// methods below.
    pub fn new(
        generator: Generator,
        tokenizer: Box<dyn Tokenizer>,
        template: Option<ChatTemplate>,
    ) -> Self {
        EngineParts {
            generator,
            tokenizer: Arc::from(tokenizer),
            template,
            placement: Vec::new(),
            memory: None,
            failure: None,
        }
    }

    /// Where the model's layers run.
    pub fn placed(mut self, placement: Vec<ModelPart>) -> Self {
        self.placement = placement;
        self
    }

    /// How the engine counts the model's memory.
    pub fn memory(
        mut self,
        report: impl Fn() -> Option<EngineMemory> + Send + Sync + 'static,
    ) -> Self {
        self.memory = Some(Box::new(report));
        self
    }

    /// How the engine tells that the model can no longer serve.
    pub fn failure(mut self, report: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        self.failure = Some(Box::new(report));
        self
    }
}

/// A model loaded by an engine in this process, served by the generation core.
pub struct EngineModel {
    descriptor: ModelDescriptor,
    parts: EngineParts,
}

impl EngineModel {
    /// The model `id` that engine `engine` loaded as `parts`.
    pub fn new(id: &str, engine: &str, parts: EngineParts) -> Self {
        let template = parts.template.as_ref();
        let reasoning_format = template
            .map(|t| t.reasoning_format().clone())
            .unwrap_or_default();
        // Markup the model writes as control tokens must reach the reasoning splitter as text.
        let markup = reasoning_format.markers().into_iter().filter_map(|marker| {
            match parts.tokenizer.encode(marker, false).ok()?.as_slice() {
                [id] => Some((*id, marker.as_bytes().to_vec())),
                _ => None,
            }
        });
        parts.generator.keep_markup(markup);
        EngineModel {
            descriptor: ModelDescriptor {
                id: id.to_string(),
                engine: engine.to_string(),
                context_size: u32::try_from(parts.generator.limits().kv_cells).unwrap_or(u32::MAX),
                vocab_size: u32::try_from(parts.generator.vocab_size()).unwrap_or(u32::MAX),
                has_chat_template: template.is_some(),
                tool_format: template.map(ChatTemplate::tool_format).unwrap_or_default(),
                reasoning_format,
                placement: parts.placement.clone(),
            },
            parts,
        }
    }

    /// Bytes its prompt store holds now (KV states of conversations that lost their slot).
    pub fn prompt_store_bytes(&self) -> u64 {
        self.parts.generator.prompt_store_bytes() as u64
    }

    /// Draft with `draft` (which this model then keeps) for requests that ask for a draft model;
    /// refused when its vocabulary differs from this model's.
    pub fn attach_draft(&self, draft: EngineModel) -> Result<()> {
        let handle = draft.parts.generator.draft_model()?;
        self.parts
            .generator
            .attach_draft(handle.owned_by(Arc::new(draft)))
    }

    /// The prompt's token ids. The one rule for special tokens: a chat is its template's text
    /// and nothing more (the template writes the BOS where the model wants one, as Hugging Face's
    /// `apply_chat_template` and mlx-lm do); a plain text gets the model's own special tokens
    /// unless it already starts with its BOS. A chat's rendered text comes along.
    fn prompt(
        &self,
        input: &Input,
        tools: &[Tool],
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Vec<u32>, Option<String>)> {
        let mut rendered = None;
        let tokens = match input {
            Input::Tokens(ids) => {
                let vocab = self.parts.generator.vocab_size();
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(Error::InvalidRequest(format!(
                        "token id {bad} is outside the vocabulary of {vocab} tokens"
                    )));
                }
                ids.clone()
            }
            Input::Text(text) => self.text(text)?,
            Input::Chat(messages) => {
                let template = self.parts.template.as_ref().ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "{} has no chat template; send a plain prompt instead",
                        self.descriptor.id
                    ))
                })?;
                let text = template.render_with(messages, tools, true, kwargs)?;
                let tokens = self.parts.tokenizer.encode(&text, false)?;
                rendered = Some(text);
                tokens
            }
        };
        if tokens.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        tracing::debug!(model = %self.descriptor.id, ?tokens, "prompt tokens");
        Ok((tokens, rendered))
    }

    /// A plain text's tokens, with the model's special tokens unless it starts with its BOS.
    fn text(&self, text: &str) -> Result<Vec<u32>> {
        let tokenizer = &self.parts.tokenizer;
        let add_special = tokenizer
            .bos_text()
            .is_none_or(|bos| !text.starts_with(bos));
        tokenizer.encode(text, add_special)
    }
}

#[async_trait]
impl LoadedModel for EngineModel {
    fn descriptor(&self) -> &ModelDescriptor {
        &self.descriptor
    }

    fn tokenize(&self, input: &Input) -> Result<Vec<u32>> {
        self.prompt(input, &[], &serde_json::Map::new())
            .map(|(tokens, _)| tokens)
    }

    async fn stream(&self, mut request: GenerationRequest) -> Result<TokenStream> {
        let (prompt, rendered) = self.prompt(
            &request.input,
            &request.tools,
            &request.chat_template_kwargs,
        )?;
        if let Some(prediction) = request.prediction.as_deref().filter(|p| !p.is_empty()) {
            // A continuation of the answer: no special tokens of its own.
            request.prediction_tokens = self.parts.tokenizer.encode(prediction, false)?;
        }
        let stream = self.parts.generator.submit(prompt, &request).await?;
        let format = &self.descriptor.reasoning_format;
        Ok(match rendered {
            // A chat's answer: its reasoning kept apart.
            Some(chat) if format.is_some() => {
                let tokenizer = Arc::clone(&self.parts.tokenizer);
                let count = Arc::new(move |text: &str| {
                    tokenizer
                        .encode(text, false)
                        .map_or(0, |ids| ids.len() as u32)
                });
                reasoning::split_reasoning(stream, format, &chat, count)
            }
            _ => stream,
        })
    }

    fn engine_memory(&self) -> Option<EngineMemory> {
        self.parts.memory.as_ref().and_then(|report| report())
    }

    fn failure(&self) -> Option<String> {
        self.parts.failure.as_ref().and_then(|report| report())
    }

    async fn embed(&self, inputs: Vec<String>) -> Result<Embeddings> {
        let tokens = inputs
            .iter()
            .map(|text| self.text(text))
            .collect::<Result<Vec<_>>>()?;
        self.parts.generator.embed(tokens).await
    }
}
