//! The model object: what the runtime makes of a model an engine loaded in this process.
//! Engines provide [`EngineParts`] (a [`Generator`] over their evaluator, their [`Tokenizer`],
//! the chat template); [`EngineModel`] implements [`LoadedModel`] once for every engine: the
//! prompt's tokens (one rule for special tokens), prediction tokens, embeddings' inputs and
//! drafting with another model.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

use crate::backend::{Embeddings, EngineMemory, LoadedModel, ModelDescriptor, ModelPart};
use crate::error::{Error, Result};
use crate::generation::{Generator, Tokenizer};
use crate::reasoning::{self, ReasoningFirst, ReasoningFormat};
use crate::request::{ChatMessage, Constraint, GenerationRequest, Input, Tool, ToolChoice};
use crate::response::{FinishReason, StreamEvent, TokenStream, Usage};
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

    /// Its chat template replaced by the one in the file `path` (a model's `chat_template`).
    pub fn chat_template_file(mut self, path: &std::path::Path) -> Result<Self> {
        self.template = Some(match &self.template {
            Some(template) => template.replaced_by_file(path)?,
            None => ChatTemplate::from_file(path, self.tokenizer.bos_text().unwrap_or(""), "")?,
        });
        Ok(self)
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
    generator: Arc<Generator>,
    tokenizer: Arc<dyn Tokenizer>,
    template: Option<ChatTemplate>,
    memory: Option<Report<EngineMemory>>,
    failure: Option<Report<String>>,
}

impl EngineModel {
    /// The model `id` that engine `engine` loaded as `parts`.
    pub fn new(id: &str, engine: &str, parts: EngineParts) -> Self {
        let EngineParts {
            generator,
            tokenizer,
            template,
            placement,
            memory,
            failure,
        } = parts;
        let reasoning_format = template
            .as_ref()
            .map(|t| t.reasoning_format().clone())
            .unwrap_or_default();
        // Markup the model writes as control tokens must reach the reasoning splitter and the
        // tool-call parser as text.
        let tool_format = template
            .as_ref()
            .map(ChatTemplate::tool_format)
            .unwrap_or_default();
        let markers = reasoning_format
            .markers()
            .into_iter()
            .chain(tool_format.markers());
        let markup =
            markers.filter_map(
                |marker| match tokenizer.encode(marker, false).ok()?.as_slice() {
                    [id] => Some((*id, marker.as_bytes().to_vec())),
                    _ => None,
                },
            );
        generator.keep_markup(markup);
        EngineModel {
            descriptor: ModelDescriptor {
                id: id.to_string(),
                engine: engine.to_string(),
                context_size: u32::try_from(generator.limits().kv_cells).unwrap_or(u32::MAX),
                vocab_size: u32::try_from(generator.vocab_size()).unwrap_or(u32::MAX),
                has_chat_template: template.is_some(),
                tool_format,
                reasoning_format,
                placement,
            },
            generator: Arc::new(generator),
            tokenizer,
            template,
            memory,
            failure,
        }
    }

    /// Bytes its prompt store holds now (KV states of conversations that lost their slot).
    pub fn prompt_store_bytes(&self) -> u64 {
        self.generator.prompt_store_bytes() as u64
    }

    /// Draft with `draft` (which this model then keeps) for requests that ask for a draft model;
    /// refused when its vocabulary differs from this model's.
    pub fn attach_draft(&self, draft: EngineModel) -> Result<()> {
        let handle = draft.generator.draft_model()?;
        self.generator
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
                let vocab = self.generator.vocab_size();
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(Error::InvalidRequest(format!(
                        "token id {bad} is outside the vocabulary of {vocab} tokens"
                    )));
                }
                ids.clone()
            }
            Input::Text(text) => self.text(text)?,
            Input::Chat(messages) => {
                let text = self.render_chat(messages, tools, kwargs)?;
                let tokens = self.tokenizer.encode(&text, false)?;
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

    /// A chat's text through the model's template, the generation prompt added.
    fn render_chat(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let template = self.template.as_ref().ok_or_else(|| {
            Error::InvalidRequest(format!(
                "{} has no chat template; send a plain prompt instead",
                self.descriptor.id
            ))
        })?;
        template.render_with(messages, tools, true, kwargs)
    }

    /// Generate in two parts: the reasoning (made to begin as `plan` says, ended by the model's
    /// closing markup or by the request's budget), then, after the markup that opens the
    /// answer, the answer under the request's constraint and its remaining tokens. One stream,
    /// one usage, as if it were one generation.
    async fn reason_first(
        &self,
        prompt: Vec<u32>,
        plan: ReasoningFirst,
        request: GenerationRequest,
    ) -> Result<TokenStream> {
        let mut first = request.clone();
        first.constraint = plan.start_grammar().map(Constraint::Lark);
        first.stop = vec![plan.stop.clone()];
        // The budget counts the model's own reasoning, not the markup it is made to begin with.
        let forced = self.tokenizer.encode(&plan.forced_start, false)?.len() as u32;
        let budget = request.reasoning_budget.map(|b| b.saturating_add(forced));
        first.max_tokens = match (budget, request.max_tokens) {
            (Some(budget), Some(most)) => Some(budget.min(most)),
            (budget, most) => budget.or(most),
        };
        first.prediction_tokens.clear();
        let reasoning = self.generator.submit(prompt.clone(), &first).await?;
        let answer = Answer {
            generator: Arc::clone(&self.generator),
            tokenizer: Arc::clone(&self.tokenizer),
            prompt,
            prefix: plan.answer_prefix,
            request,
        };
        let start = Phase::Reasoning {
            stream: reasoning,
            text: String::new(),
            answer: Box::new(answer),
        };
        let events = futures::stream::unfold(start, |phase| async move {
            match phase {
                Phase::Reasoning {
                    mut stream,
                    mut text,
                    answer,
                } => match stream.next().await? {
                    Ok(StreamEvent::Done {
                        finish_reason,
                        usage,
                        stop_sequence,
                        choice,
                    }) => {
                        let closed = stop_sequence.is_some();
                        let at_most = answer.request.max_tokens;
                        let out_of_tokens = at_most.is_some_and(|m| usage.completion_tokens >= m);
                        if (!closed && finish_reason == FinishReason::Stop) || out_of_tokens {
                            // It ended within its reasoning (end of generation or max_tokens).
                            let done = StreamEvent::Done {
                                choice,
                                finish_reason,
                                usage,
                                stop_sequence: None,
                            };
                            return Some((vec![Ok(done)], Phase::Ended));
                        }
                        let prefix = StreamEvent::Delta {
                            choice,
                            text: answer.prefix_after(&text).to_string(),
                            logprobs: Vec::new(),
                        };
                        match answer.start(&text, &usage).await {
                            Ok(stream) => Some((
                                vec![Ok(prefix)],
                                Phase::Answer {
                                    stream,
                                    earlier: usage,
                                },
                            )),
                            Err(e) => Some((vec![Err(e)], Phase::Ended)),
                        }
                    }
                    Ok(event) => {
                        if let StreamEvent::Delta { text: delta, .. } = &event {
                            text.push_str(delta);
                        }
                        Some((
                            vec![Ok(event)],
                            Phase::Reasoning {
                                stream,
                                text,
                                answer,
                            },
                        ))
                    }
                    Err(e) => Some((vec![Err(e)], Phase::Ended)),
                },
                Phase::Answer {
                    mut stream,
                    earlier,
                } => match stream.next().await? {
                    Ok(StreamEvent::Done {
                        choice,
                        finish_reason,
                        usage,
                        stop_sequence,
                    }) => {
                        let done = StreamEvent::Done {
                            choice,
                            finish_reason,
                            usage: earlier.followed_by(&usage),
                            stop_sequence,
                        };
                        Some((vec![Ok(done)], Phase::Ended))
                    }
                    other => Some((vec![other], Phase::Answer { stream, earlier })),
                },
                Phase::Ended => None,
            }
        });
        Ok(Box::pin(events.flat_map(futures::stream::iter)))
    }

    /// A plain text's tokens, with the model's special tokens unless it starts with its BOS.
    fn text(&self, text: &str) -> Result<Vec<u32>> {
        let tokenizer = &self.tokenizer;
        let add_special = tokenizer
            .bos_text()
            .is_none_or(|bos| !text.starts_with(bos));
        tokenizer.encode(text, add_special)
    }
}

/// How a chat answer is made in two parts, if it is: a reasoning budget, or a constraint on the
/// answer of a model that reasons first, asks for it (one choice only).
fn reasoning_plan(
    format: &ReasoningFormat,
    chat: &str,
    request: &GenerationRequest,
) -> Result<Option<ReasoningFirst>> {
    let budget = request.reasoning_budget.is_some();
    // JSON formats and required tool calls constrain the answer; a grammar or regex the client
    // wrote describes the whole output, reasoning included.
    let constrained = match &request.constraint {
        Some(Constraint::JsonObject | Constraint::JsonSchema(_)) => true,
        Some(Constraint::Lark(_) | Constraint::Regex(_)) => {
            !request.tools.is_empty()
                && matches!(
                    request.tool_choice,
                    ToolChoice::Required | ToolChoice::Function(_)
                )
        }
        None => false,
    };
    let whole_output_grammar = request.constraint.is_some() && !constrained;
    if whole_output_grammar || (!budget && !constrained) {
        return Ok(None);
    }
    let Some(plan) = format.reasoning_first(chat, budget, constrained) else {
        return Ok(None);
    };
    match request.n {
        1 => Ok(Some(plan)),
        _ if budget => Err(Error::param(
            "n",
            "a reasoning budget is kept for one choice at a time; send n = 1",
        )),
        // Several choices: the constraint holds from the first token, as without reasoning.
        _ => Ok(None),
    }
}

/// Where a two-part answer is.
enum Phase {
    Reasoning {
        stream: TokenStream,
        /// The reasoning's text so far (markup included).
        text: String,
        answer: Box<Answer>,
    },
    Answer {
        stream: TokenStream,
        /// The reasoning part's usage.
        earlier: Usage,
    },
    Ended,
}

/// What the answer part of a two-part answer needs.
struct Answer {
    generator: Arc<Generator>,
    tokenizer: Arc<dyn Tokenizer>,
    prompt: Vec<u32>,
    /// The markup between the reasoning and the answer.
    prefix: String,
    request: GenerationRequest,
}

impl Answer {
    /// The rest of the prefix after `reasoning`, which may have begun it (the budget can end
    /// the reasoning inside its closing markup).
    fn prefix_after(&self, reasoning: &str) -> &str {
        let begun = (1..=self.prefix.len().min(reasoning.len()))
            .rev()
            .find(|&n| self.prefix.is_char_boundary(n) && reasoning.ends_with(&self.prefix[..n]))
            .unwrap_or(0);
        &self.prefix[begun..]
    }

    /// Start the answer after `reasoning` (whose part used `used`): the prompt, the reasoning
    /// and the prefix are its prompt (the cached prefix is reused), the request's remaining
    /// tokens its limit.
    async fn start(&self, reasoning: &str, used: &Usage) -> Result<TokenStream> {
        let mut prompt = self.prompt.clone();
        let written = format!("{reasoning}{}", self.prefix_after(reasoning));
        prompt.extend(self.tokenizer.encode(&written, false)?);
        let mut request = self.request.clone();
        request.max_tokens = request
            .max_tokens
            .map(|most| most.saturating_sub(used.completion_tokens).max(1));
        self.generator.submit(prompt, &request).await
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

    fn detokenize(&self, tokens: &[u32]) -> Result<String> {
        self.generator.detokenize(tokens)
    }

    fn render(&self, request: &GenerationRequest) -> Result<String> {
        let Input::Chat(messages) = &request.input else {
            return Err(Error::InvalidRequest(
                "only a chat (messages) has a template to apply".into(),
            ));
        };
        self.render_chat(messages, &request.tools, &request.chat_template_kwargs)
    }

    async fn stream(&self, mut request: GenerationRequest) -> Result<TokenStream> {
        let (prompt, rendered) = self.prompt(
            &request.input,
            &request.tools,
            &request.chat_template_kwargs,
        )?;
        if let Some(prediction) = request.prediction.as_deref().filter(|p| !p.is_empty()) {
            // A continuation of the answer: no special tokens of its own.
            request.prediction_tokens = self.tokenizer.encode(prediction, false)?;
        }
        let format = &self.descriptor.reasoning_format;
        let plan = match rendered.as_deref() {
            Some(chat) => reasoning_plan(format, chat, &request)?,
            None => None,
        };
        let stream = match plan {
            Some(plan) => self.reason_first(prompt, plan, request).await?,
            None => self.generator.submit(prompt, &request).await?,
        };
        Ok(match rendered {
            // A chat's answer: its reasoning kept apart.
            Some(chat) if format.is_some() => {
                let tokenizer = Arc::clone(&self.tokenizer);
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
        self.memory.as_ref().and_then(|report| report())
    }

    fn failure(&self) -> Option<String> {
        self.failure.as_ref().and_then(|report| report())
    }

    async fn embed(&self, inputs: Vec<String>) -> Result<Embeddings> {
        let tokens = inputs
            .iter()
            .map(|text| self.text(text))
            .collect::<Result<Vec<_>>>()?;
        self.generator.embed(tokens).await
    }
}
