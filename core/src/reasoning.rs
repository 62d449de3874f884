//! Reasoning kept apart from the answer, the same for every engine: how a model's template marks
//! its thinking ([`ReasoningFormat`]), chosen from the template's source, never from the model's
//! name, and the streaming splitter that turns a chat answer's text into reasoning events,
//! content and (for Harmony) tool calls, so that no markup ever reaches the content, whatever
//! way the text is split into tokens.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::request::ToolCall;
use crate::response::{
    filter_choices, ChoiceFilter, FinishReason, StreamEvent, TokenLogprob, TokenStream, Usage,
};

/// Harmony's markers (gpt-oss): a message is `<|start|>{role}<|channel|>{channel}
/// [ to={recipient}][<|constrain|>{type}]<|message|>{body}<|end|>`; `<|call|>` ends a tool call
/// and `<|return|>` the answer.
const START: &str = "<|start|>";
const MESSAGE: &str = "<|message|>";
const CHANNEL: &str = "<|channel|>";
const CONSTRAIN: &str = "<|constrain|>";
const ENDS: [&str; 3] = ["<|end|>", "<|call|>", "<|return|>"];

/// Longest message header Harmony writes; text that runs longer without `<|message|>` is not
/// Harmony and is shown as content.
const MAX_HEADER: usize = 256;

/// How a model's template marks reasoning.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ReasoningFormat {
    /// The template knows no reasoning: the whole answer is content.
    #[default]
    None,
    /// A block between two tags at the start of the answer (`<think>`...`</think>`: Qwen3,
    /// DeepSeek R1/V3.1, GLM, SmolLM3, Granite, Kimi, MiniMax, Nemotron; `[THINK]`...`[/THINK]`:
    /// Magistral and Ministral; `<seed:think>`: Seed-OSS).
    Tags {
        /// The opening tag.
        open: String,
        /// The closing tag.
        close: String,
    },
    /// gpt-oss's Harmony channels: `analysis` is reasoning, `final` the answer, `commentary`
    /// with a `functions.*` recipient a tool call.
    Harmony,
}

/// Tag pairs found in chat templates, most specific first.
const TAG_PAIRS: [(&str, &str); 4] = [
    ("<seed:think>", "</seed:think>"),
    ("<|START_THINKING|>", "<|END_THINKING|>"),
    ("[THINK]", "[/THINK]"),
    ("<think>", "</think>"),
];

impl ReasoningFormat {
    /// The format a chat template's source writes reasoning in.
    pub fn of_template(source: &str) -> Self {
        if source.contains(CHANNEL) && source.contains(MESSAGE) {
            return ReasoningFormat::Harmony;
        }
        TAG_PAIRS
            .iter()
            .find(|(open, close)| source.contains(open) && source.contains(close))
            .map_or(ReasoningFormat::None, |(open, close)| {
                ReasoningFormat::Tags {
                    open: (*open).into(),
                    close: (*close).into(),
                }
            })
    }

    /// Whether the model writes reasoning at all.
    pub fn is_some(&self) -> bool {
        *self != ReasoningFormat::None
    }

    /// The markup the splitter reads, which a model may write as control tokens (text the
    /// answer must then carry).
    pub fn markers(&self) -> Vec<&str> {
        match self {
            ReasoningFormat::None => Vec::new(),
            ReasoningFormat::Tags { open, close } => vec![open, close],
            ReasoningFormat::Harmony => [START, CHANNEL, MESSAGE, CONSTRAIN]
                .into_iter()
                .chain(ENDS)
                .collect(),
        }
    }
}

/// Where a rendered chat leaves the model's reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The prompt opened the block: the answer starts inside it.
    Opened,
    /// The prompt ends with an empty block (thinking switched off by the template).
    Closed,
    /// The model may start reasoning, or not.
    Free,
}

/// How an answer that reasons first is made in two parts (a thinking budget, a constraint on
/// the answer only): the reasoning up to `stop` (or the budget), then the answer after
/// `answer_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasoningFirst {
    /// Text the reasoning is made to begin with (empty: the prompt opened it).
    pub forced_start: String,
    /// Where the reasoning ends, written by the model (its closing markup).
    pub stop: String,
    /// Text that closes the reasoning and opens the answer, when the model did not get there
    /// itself (the budget) or did (the stop string is not part of the text).
    pub answer_prefix: String,
}

/// A string as a Lark literal.
fn lark_literal(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

impl ReasoningFirst {
    /// The grammar that makes the reasoning begin with [`Self::forced_start`] (none when it is
    /// empty): any text may follow, up to the stop string or the budget.
    pub fn start_grammar(&self) -> Option<String> {
        (!self.forced_start.is_empty()).then(|| {
            format!(
                "start: {} REST\nREST: /(.|\\n)*/",
                lark_literal(&self.forced_start)
            )
        })
    }
}

impl ReasoningFormat {
    /// Where the chat rendered as `prompt` leaves the reasoning.
    pub fn opening(&self, prompt: &str) -> Opening {
        match self {
            ReasoningFormat::None => Opening::Closed,
            ReasoningFormat::Harmony => Opening::Free,
            ReasoningFormat::Tags { open, close } => {
                if prompt.trim_end().ends_with(close.as_str()) {
                    return Opening::Closed;
                }
                match (prompt.rfind(open.as_str()), prompt.rfind(close.as_str())) {
                    (Some(o), c) if c.is_none_or(|c| c < o) => Opening::Opened,
                    _ => Opening::Free,
                }
            }
        }
    }

    /// How to reason first and then answer, for a chat rendered as `prompt`: `None` where the
    /// model will not reason (no format, thinking switched off). `certain`: the reasoning is
    /// made to happen where the model may skip it (a budget was asked for); otherwise only
    /// where the prompt opened it or the format always reasons first (Harmony). `constrained`:
    /// the answer must be the final one (Harmony's tool calls are not possible after it).
    pub fn reasoning_first(
        &self,
        prompt: &str,
        certain: bool,
        constrained: bool,
    ) -> Option<ReasoningFirst> {
        let opening = self.opening(prompt);
        match self {
            ReasoningFormat::None => None,
            ReasoningFormat::Tags { open, close } => {
                let forced_start = match opening {
                    Opening::Closed => return None,
                    Opening::Free if !certain => return None,
                    Opening::Free => open.clone(),
                    Opening::Opened => String::new(),
                };
                Some(ReasoningFirst {
                    forced_start,
                    stop: close.clone(),
                    answer_prefix: format!("{close}\n\n"),
                })
            }
            ReasoningFormat::Harmony => Some(ReasoningFirst {
                forced_start: format!("{CHANNEL}analysis{MESSAGE}"),
                stop: ENDS[0].into(),
                answer_prefix: match constrained {
                    true => format!("{}{START}assistant{CHANNEL}final{MESSAGE}", ENDS[0]),
                    false => format!("{}{START}assistant", ENDS[0]),
                },
            }),
        }
    }

    /// The splitter for one answer to `prompt` (the rendered chat): a prompt whose last turn
    /// opens the block (templates that start the model thinking) starts inside it.
    pub fn splitter(&self, prompt: &str) -> Splitter {
        let state = match (self, self.opening(prompt)) {
            (ReasoningFormat::None, _) => State::Content,
            (ReasoningFormat::Harmony, _) => State::Header,
            (_, Opening::Opened) => State::Reasoning,
            (_, _) => State::Start,
        };
        Splitter {
            format: self.clone(),
            state,
            held: String::new(),
            recipient: None,
            calls: 0,
        }
    }
}

/// Counts the tokens of a text (the model's tokenizer), for usage's reasoning tokens.
pub type TokenCounter = Arc<dyn Fn(&str) -> u32 + Send + Sync>;

/// Split each choice of `stream` (an answer to the chat rendered as `prompt`) into reasoning
/// events, content deltas and tool calls; a choice's usage counts its reasoning tokens, and a
/// choice that made calls ends with [`FinishReason::ToolCalls`]. Log-probabilities stay with
/// the content (reasoning tokens have none, as in OpenAI's API).
pub fn split_reasoning(
    stream: TokenStream,
    format: &ReasoningFormat,
    prompt: &str,
    count: TokenCounter,
) -> TokenStream {
    let splitter = format.splitter(prompt);
    filter_choices(stream, move || ChoiceSplit {
        splitter: splitter.clone(),
        reasoning: String::new(),
        logprobs: Vec::new(),
        count: Arc::clone(&count),
    })
}

/// One choice's split so far.
struct ChoiceSplit {
    splitter: Splitter,
    /// All of its reasoning (counted at the end).
    reasoning: String,
    /// Log-probabilities not yet sent with content.
    logprobs: Vec<TokenLogprob>,
    count: TokenCounter,
}

impl ChoiceFilter for ChoiceSplit {
    fn delta(
        &mut self,
        choice: u32,
        text: String,
        logprobs: Vec<TokenLogprob>,
    ) -> Vec<StreamEvent> {
        self.logprobs.extend(logprobs);
        let pieces = self.splitter.push(&text);
        self.events(choice, pieces)
    }

    fn finish(
        &mut self,
        choice: u32,
        reason: &mut FinishReason,
        usage: &mut Usage,
    ) -> Vec<StreamEvent> {
        let pieces = self.splitter.finish();
        let events = self.events(choice, pieces);
        if !self.reasoning.is_empty() {
            usage.reasoning_tokens = (self.count)(&self.reasoning).min(usage.completion_tokens);
        }
        if *reason == FinishReason::Stop && self.splitter.calls() > 0 {
            *reason = FinishReason::ToolCalls;
        }
        events
    }
}

impl ChoiceSplit {
    /// The events of `pieces`: content carries the log-probabilities gathered so far; a
    /// delta that was all reasoning drops its own.
    fn events(&mut self, choice: u32, pieces: Vec<Piece>) -> Vec<StreamEvent> {
        let has_content = pieces.iter().any(|p| matches!(p, Piece::Content(_)));
        if !has_content && pieces.iter().any(|p| matches!(p, Piece::Reasoning(_))) {
            self.logprobs.clear();
        }
        pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Reasoning(text) => {
                    self.reasoning.push_str(&text);
                    StreamEvent::Reasoning { choice, text }
                }
                Piece::Content(text) => StreamEvent::Delta {
                    choice,
                    text,
                    logprobs: std::mem::take(&mut self.logprobs),
                },
                Piece::Call(call) => StreamEvent::ToolCall { choice, call },
            })
            .collect()
    }
}

/// A piece of an answer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text of the model's reasoning.
    Reasoning(String),
    /// Text of the answer.
    Content(String),
    /// A complete tool call (Harmony writes them on its own channel).
    Call(ToolCall),
}

/// Where a splitter is in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace yet: an opening tag may follow.
    Start,
    /// Inside the reasoning block.
    Reasoning,
    /// Just after the reasoning block: whitespace before the answer is dropped.
    Closed,
    /// After reasoning (or without any): everything is content.
    Content,
    /// Harmony: reading a message's header (up to `<|message|>`).
    Header,
    /// Harmony: in a message's body, of this kind.
    Body(Body),
}

/// What a Harmony message's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Reasoning,
    Content,
    /// A tool call's arguments: held until the message ends.
    Call,
}

/// One answer's splitter: feed it the text as it comes, then finish it.
#[derive(Debug, Clone)]
pub struct Splitter {
    format: ReasoningFormat,
    state: State,
    /// Text that may still turn out to be markup.
    held: String,
    /// The function a Harmony tool call is addressed to.
    recipient: Option<String>,
    /// Tool calls made so far.
    calls: usize,
}

impl Splitter {
    /// Tool calls this answer made.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Take more text; returns the pieces now certain.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.held.push_str(text);
        let mut out = Pieces::default();
        loop {
            let progressed = match self.format.clone() {
                ReasoningFormat::None => {
                    out.content(std::mem::take(&mut self.held));
                    false
                }
                ReasoningFormat::Tags { open, close } => self.step_tags(&open, &close, &mut out),
                ReasoningFormat::Harmony => self.step_harmony(&mut out),
            };
            if !progressed {
                break;
            }
        }
        out.0
    }

    /// The end of the answer: what is held is released for what it is (an unclosed reasoning
    /// block is reasoning; a Harmony tool call cut short is dropped, never shown).
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Pieces::default();
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Reasoning | State::Body(Body::Reasoning) => out.reasoning(held),
            State::Start | State::Closed | State::Content | State::Body(Body::Content) => {
                out.content(held)
            }
            State::Header => out.content(strip_markup(&held)),
            State::Body(Body::Call) => {
                if let Some(call) = self.call(&held) {
                    out.0.push(Piece::Call(call));
                }
            }
        }
        self.state = State::Content;
        out.0
    }

    /// One step over `held` for tag-delimited reasoning; whether it moved.
    fn step_tags(&mut self, open: &str, close: &str, out: &mut Pieces) -> bool {
        match self.state {
            State::Start => {
                let trimmed = self.held.trim_start();
                if trimmed.is_empty() {
                    return false;
                }
                if let Some(rest) = trimmed.strip_prefix(open) {
                    self.held = rest.to_string();
                    self.state = State::Reasoning;
                } else if open.starts_with(trimmed) {
                    return false;
                } else {
                    self.state = State::Content;
                }
                true
            }
            State::Reasoning => match self.held.find(close) {
                Some(at) => {
                    out.reasoning(self.held[..at].to_string());
                    self.held.drain(..at + close.len());
                    self.state = State::Closed;
                    true
                }
                None => {
                    let cut = self.held.len() - partial_suffix(&self.held, &[close]);
                    out.reasoning(self.held.drain(..cut).collect());
                    false
                }
            },
            State::Closed => {
                let trimmed = self.held.trim_start();
                if trimmed.is_empty() {
                    self.held.clear();
                    return false;
                }
                self.held = trimmed.to_string();
                self.state = State::Content;
                true
            }
            _ => {
                out.content(std::mem::take(&mut self.held));
                false
            }
        }
    }

    /// One step over `held` for Harmony messages; whether it moved.
    fn step_harmony(&mut self, out: &mut Pieces) -> bool {
        match self.state {
            State::Header => match self.held.find(MESSAGE) {
                Some(at) => {
                    let header: String = self.held.drain(..at + MESSAGE.len()).collect();
                    self.state = State::Body(self.read_header(&header[..at]));
                    true
                }
                None if self.held.len() > MAX_HEADER => {
                    // Not Harmony after all: show it.
                    self.state = State::Body(Body::Content);
                    true
                }
                None => false,
            },
            State::Body(body) => {
                let end = ENDS
                    .iter()
                    .filter_map(|m| self.held.find(m).map(|at| (at, m.len())))
                    .min();
                match end {
                    Some((at, len)) => {
                        let text: String = self.held.drain(..at + len).take(at).collect();
                        match body {
                            Body::Reasoning => out.reasoning(text),
                            Body::Content => out.content(text),
                            Body::Call => {
                                if let Some(call) = self.call(&text) {
                                    out.0.push(Piece::Call(call));
                                }
                            }
                        }
                        self.state = State::Header;
                        true
                    }
                    None if body == Body::Call => false,
                    None => {
                        let cut = self.held.len() - partial_suffix(&self.held, &ENDS);
                        let text: String = self.held.drain(..cut).collect();
                        match body {
                            Body::Reasoning => out.reasoning(text),
                            _ => out.content(text),
                        }
                        false
                    }
                }
            }
            _ => {
                out.content(std::mem::take(&mut self.held));
                false
            }
        }
    }

    /// What a Harmony header (`[<|start|>]assistant<|channel|>commentary to=functions.f
    /// <|constrain|>json`) makes of its message.
    fn read_header(&mut self, header: &str) -> Body {
        let header = header.trim_start_matches(START);
        // The recipient may come before the channel (`assistant to=functions.f<|channel|>...`)
        // or after it; it ends at whitespace or the next marker.
        let recipient = header.split("to=").nth(1).map(|rest| {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '<')
                .unwrap_or(rest.len());
            rest[..end].to_string()
        });
        let channel = header
            .split(CHANNEL)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '<').next());
        match (recipient, channel) {
            (Some(to), _) => {
                self.recipient = Some(to.strip_prefix("functions.").unwrap_or(&to).into());
                Body::Call
            }
            (None, Some("analysis")) => Body::Reasoning,
            _ => Body::Content,
        }
    }

    /// A tool call to the current recipient with `arguments` (JSON as written).
    fn call(&mut self, arguments: &str) -> Option<ToolCall> {
        let name = self.recipient.take()?;
        let arguments = arguments.trim();
        serde_json::from_str::<serde_json::Value>(arguments).ok()?;
        self.calls += 1;
        Some(ToolCall {
            id: format!("call_{:024x}", rand::random::<u128>() >> 32),
            name,
            arguments: arguments.to_string(),
        })
    }
}

/// Pieces being gathered, adjacent ones of a kind joined and empty ones dropped.
#[derive(Default)]
struct Pieces(Vec<Piece>);

impl Pieces {
    fn reasoning(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some(Piece::Reasoning(last)) => last.push_str(&text),
            _ => self.0.push(Piece::Reasoning(text)),
        }
    }

    fn content(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some(Piece::Content(last)) => last.push_str(&text),
            _ => self.0.push(Piece::Content(text)),
        }
    }
}

/// Harmony's markers taken out of text that turned out not to be a message.
fn strip_markup(text: &str) -> String {
    [START, CHANNEL, MESSAGE, CONSTRAIN]
        .iter()
        .fold(text.to_string(), |t, m| t.replace(m, ""))
}

/// Length of the longest suffix of `text` that begins one of `markers`.
fn partial_suffix(text: &str, markers: &[&str]) -> usize {
    markers
        .iter()
        .filter_map(|marker| {
            (1..marker.len().min(text.len() + 1)).rev().find(|&n| {
                text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
            })
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn think() -> ReasoningFormat {
        ReasoningFormat::Tags {
            open: "<think>".into(),
            close: "</think>".into(),
        }
    }

    /// The pieces of `text` fed `step` bytes at a time (on character boundaries), joined.
    fn split(format: &ReasoningFormat, prompt: &str, text: &str, step: usize) -> Vec<Piece> {
        let mut splitter = format.splitter(prompt);
        let mut pieces = Pieces::default();
        let mut rest = text;
        while !rest.is_empty() {
            let mut at = step.min(rest.len());
            while !rest.is_char_boundary(at) {
                at += 1;
            }
            for piece in splitter.push(&rest[..at]) {
                match piece {
                    Piece::Reasoning(t) => pieces.reasoning(t),
                    Piece::Content(t) => pieces.content(t),
                    call => pieces.0.push(call),
                }
            }
            rest = &rest[at..];
        }
        for piece in splitter.finish() {
            match piece {
                Piece::Reasoning(t) => pieces.reasoning(t),
                Piece::Content(t) => pieces.content(t),
                call => pieces.0.push(call),
            }
        }
        pieces.0
    }

    fn texts(pieces: &[Piece]) -> Vec<(char, String)> {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Reasoning(t) => ('r', t.clone()),
                Piece::Content(t) => ('c', t.clone()),
                Piece::Call(c) => ('t', format!("{}({})", c.name, c.arguments)),
            })
            .collect()
    }

    #[test]
    fn tags_never_leak_whatever_the_split() {
        let answer = "<think>\nThe user wants 2+2.\n</think>\n\nIt is 4.";
        for step in 1..=answer.len() {
            assert_eq!(
                texts(&split(&think(), "<|im_start|>assistant\n", answer, step)),
                [
                    ('r', "\nThe user wants 2+2.\n".to_string()),
                    ('c', "It is 4.".to_string())
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn a_block_opened_by_the_prompt_and_one_left_open() {
        let opened = "<|Assistant|><think>\n";
        assert_eq!(
            texts(&split(&think(), opened, "Hmm, 4.</think>Four.", 3)),
            [('r', "Hmm, 4.".into()), ('c', "Four.".into())]
        );
        // Thinking turned off by the template (an empty block in the prompt): all content.
        let closed = "<|im_start|>assistant\n<think>\n\n</think>\n\n";
        assert_eq!(
            texts(&split(&think(), closed, "Four.", 2)),
            [('c', "Four.".into())]
        );
        // Cut off while thinking: all of it is reasoning.
        assert_eq!(
            texts(&split(&think(), "", "<think>still going", 4)),
            [('r', "still going".into())]
        );
        // A tag later in the answer is content.
        assert_eq!(
            texts(&split(&think(), "", "Use <think> tags.", 1)),
            [('c', "Use <think> tags.".into())]
        );
    }

    #[test]
    fn harmony_channels_and_calls_whatever_the_split() {
        let harmony = ReasoningFormat::Harmony;
        let answer = "<|channel|>analysis<|message|>Need weather.<|end|>\
            <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json\
            <|message|>{\"city\": \"Paris\"}<|call|>";
        for step in 1..=answer.len() {
            assert_eq!(
                texts(&split(&harmony, "<|start|>assistant", answer, step)),
                [
                    ('r', "Need weather.".to_string()),
                    ('t', "get_weather({\"city\": \"Paris\"})".to_string())
                ],
                "step {step}"
            );
        }
        let answer = "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant\
            <|channel|>final<|message|>It is 4.";
        for step in 1..=answer.len() {
            assert_eq!(
                texts(&split(&harmony, "", answer, step)),
                [('r', "Easy.".into()), ('c', "It is 4.".into())],
                "step {step}"
            );
        }
        // Text that is not Harmony at all is shown.
        assert_eq!(
            texts(&split(&harmony, "", "Plain answer.", 5)),
            [('c', "Plain answer.".into())]
        );
    }

    #[test]
    fn templates_choose_the_format() {
        assert_eq!(
            ReasoningFormat::of_template("{{ messages }}"),
            ReasoningFormat::None
        );
        assert_eq!(
            ReasoningFormat::of_template("{{ '<think>' + r + '</think>' }}"),
            think()
        );
        assert_eq!(
            ReasoningFormat::of_template("<|start|>assistant<|channel|>final<|message|>"),
            ReasoningFormat::Harmony
        );
        assert!(matches!(
            ReasoningFormat::of_template("[THINK]{{ r }}[/THINK]"),
            ReasoningFormat::Tags { open, .. } if open == "[THINK]"
        ));
    }
}
