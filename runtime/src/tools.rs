//! Tool calling, the same for every engine: how a model's template wants calls written
//! ([`ToolFormat`]), the prompt for templates that know no tools, the grammar that forces a
//! call when one is required, and the streaming parser that turns call markup in the generated
//! text into [`StreamEvent::ToolCall`]s, so that no markup ever reaches the content.

use std::collections::HashMap;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::request::{ChatMessage, Constraint, Role, Tool, ToolCall, ToolChoice};
use crate::response::{FinishReason, StreamEvent, TokenStream};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// How a model writes its tool calls (chosen from its chat template).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFormat {
    /// `<tool_call>{"name": ..., "arguments": ...}</tool_call>` blocks (Hermes, Qwen, and the
    /// prompt given to templates that know no tools).
    #[default]
    Tagged,
    /// The whole answer is a JSON object `{"name": ..., "parameters": ...}` (Llama 3.x, whose
    /// `<|python_tag|>` marker is a control token with no text).
    BareJson,
    /// The whole answer is a JSON array of `{"name", "arguments"}` (Mistral, after its
    /// `[TOOL_CALLS]` control token).
    JsonArray,
}

impl ToolFormat {
    /// The format a chat template's source asks for.
    pub fn of_template(source: &str) -> Self {
        if source.contains(OPEN) {
            ToolFormat::Tagged
        } else if source.contains("[TOOL_CALLS]") {
            ToolFormat::JsonArray
        } else if source.contains("<|python_tag|>") || source.contains("ipython") {
            ToolFormat::BareJson
        } else {
            ToolFormat::Tagged
        }
    }
}

/// Whether a chat template renders the `tools` it is given.
pub fn template_takes_tools(source: &str) -> bool {
    source.contains("tools")
}

/// Tools in the Hugging Face shape templates expect.
pub fn tools_for_template(tools: &[Tool]) -> Vec<Value> {
    tools
        .iter()
        .map(|t| json!({"type": "function", "function": t}))
        .collect()
}

/// The messages rewritten for a template that knows no tools: the tools and the call format
/// described in the system message, earlier calls and results written out as text.
pub fn without_template_tools(messages: &[ChatMessage], tools: &[Tool]) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = messages
        .iter()
        .map(|m| match m.role {
            Role::Assistant if !m.tool_calls.is_empty() => {
                let mut content = m.content.clone();
                for call in &m.tool_calls {
                    content.push_str(&format!(
                        "\n{OPEN}\n{{\"name\": {}, \"arguments\": {}}}\n{CLOSE}",
                        json!(call.name),
                        call.arguments
                    ));
                }
                ChatMessage::new(Role::Assistant, content.trim_start().to_string())
            }
            Role::Tool => ChatMessage::new(
                Role::User,
                format!("<tool_response>\n{}\n</tool_response>", m.content),
            ),
            _ => ChatMessage::new(m.role, m.content.clone()),
        })
        .collect();
    if tools.is_empty() {
        return out;
    }
    let listed: Vec<String> = tools
        .iter()
        .map(|t| serde_json::to_string(t).unwrap_or_default())
        .collect();
    let prompt = format!(
        "# Tools\n\nYou may call one or more functions to help with the request. The \
         functions, one JSON object each:\n{}\n\nTo call a function, answer with one block \
         per call, nothing else:\n{OPEN}\n{{\"name\": <function name>, \"arguments\": \
         <arguments object>}}\n{CLOSE}",
        listed.join("\n")
    );
    match out.first_mut() {
        Some(first) if first.role == Role::System => {
            first.content = format!("{}\n\n{prompt}", first.content);
        }
        _ => out.insert(0, ChatMessage::new(Role::System, prompt)),
    }
    out
}

/// The constraint that makes the model call a tool (`required`) or the named one, in the
/// tagged format, with arguments valid against the tool's schema.
pub fn call_constraint(tools: &[Tool], choice: &ToolChoice, parallel: bool) -> Option<Constraint> {
    let wanted: Vec<&Tool> = match choice {
        ToolChoice::Required => tools.iter().collect(),
        ToolChoice::Function(name) => tools.iter().filter(|t| &t.name == name).collect(),
        ToolChoice::None | ToolChoice::Auto => return None,
    };
    let calls: Vec<Value> = wanted
        .iter()
        .map(|t| {
            json!({
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let schema = json!({
        "anyOf": calls,
        "x-guidance": {"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "},
    });
    let repeat = if parallel { " (\"\\n\" call)*" } else { "" };
    Some(Constraint::Lark(format!(
        "start: call{repeat}\ncall: \"{OPEN}\\n\" %json {schema} \"\\n{CLOSE}\""
    )))
}

/// Parse the text of each choice of `stream` for tool calls in `format`: content deltas keep
/// only the text outside calls, each complete call becomes a [`StreamEvent::ToolCall`], and a
/// choice that made calls ends with [`FinishReason::ToolCalls`].
pub fn parse_tool_calls(stream: TokenStream, format: ToolFormat) -> TokenStream {
    let parsers: HashMap<u32, CallParser> = HashMap::new();
    let events = stream
        .scan(parsers, move |parsers, event| {
            let out = match event {
                Ok(StreamEvent::Delta {
                    choice,
                    text,
                    logprobs,
                }) => {
                    let parser = parsers
                        .entry(choice)
                        .or_insert_with(|| CallParser::new(format));
                    let (content, calls) = parser.push(&text);
                    let mut out = Vec::new();
                    if !content.is_empty() || !logprobs.is_empty() {
                        out.push(Ok(StreamEvent::Delta {
                            choice,
                            text: content,
                            logprobs,
                        }));
                    }
                    out.extend(
                        calls
                            .into_iter()
                            .map(|call| Ok(StreamEvent::ToolCall { choice, call })),
                    );
                    out
                }
                Ok(StreamEvent::Done {
                    choice,
                    finish_reason,
                    usage,
                    stop_sequence,
                }) => {
                    let mut parser = parsers
                        .remove(&choice)
                        .unwrap_or_else(|| CallParser::new(format));
                    let (content, calls) = parser.finish();
                    let mut out = Vec::new();
                    if !content.is_empty() {
                        out.push(Ok(StreamEvent::Delta {
                            choice,
                            text: content,
                            logprobs: Vec::new(),
                        }));
                    }
                    out.extend(
                        calls
                            .into_iter()
                            .map(|call| Ok(StreamEvent::ToolCall { choice, call })),
                    );
                    let finish_reason = if parser.calls > 0 && finish_reason == FinishReason::Stop {
                        FinishReason::ToolCalls
                    } else {
                        finish_reason
                    };
                    out.push(Ok(StreamEvent::Done {
                        choice,
                        finish_reason,
                        usage,
                        stop_sequence,
                    }));
                    out
                }
                other => vec![other],
            };
            futures::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten();
    Box::pin(events)
}

/// Where a choice's parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing but whitespace seen yet.
    Start,
    /// Text, possibly with tagged calls.
    Text,
    /// Inside `<tool_call>`.
    InCall,
    /// The answer is bare JSON (held until the end).
    Json,
}

/// One choice's tool-call parser.
#[derive(Debug)]
struct CallParser {
    format: ToolFormat,
    mode: Mode,
    /// Text not yet released.
    held: String,
    /// Calls found so far.
    calls: usize,
}

impl CallParser {
    fn new(format: ToolFormat) -> Self {
        CallParser {
            format,
            mode: Mode::Start,
            held: String::new(),
            calls: 0,
        }
    }

    /// Take more text; returns the content that is safe to show and the calls completed.
    fn push(&mut self, text: &str) -> (String, Vec<ToolCall>) {
        self.held.push_str(text);
        if self.mode == Mode::Start {
            match self.held.trim_start().chars().next() {
                None => return (String::new(), Vec::new()),
                Some('{') if self.format == ToolFormat::BareJson => self.mode = Mode::Json,
                Some('[') if self.format == ToolFormat::JsonArray => self.mode = Mode::Json,
                Some(_) => self.mode = Mode::Text,
            }
        }
        let mut content = String::new();
        let mut calls = Vec::new();
        loop {
            match self.mode {
                Mode::Json | Mode::Start => break,
                Mode::Text => match self.held.find(OPEN) {
                    Some(at) => {
                        content.push_str(&self.held[..at]);
                        self.held.drain(..at + OPEN.len());
                        self.mode = Mode::InCall;
                    }
                    None => {
                        let keep = partial_suffix(&self.held, OPEN);
                        let cut = self.held.len() - keep;
                        content.push_str(&self.held[..cut]);
                        self.held.drain(..cut);
                        break;
                    }
                },
                Mode::InCall => match self.held.find(CLOSE) {
                    Some(at) => {
                        let body: String = self.held.drain(..at + CLOSE.len()).collect();
                        match self.call(&body[..at]) {
                            Some(call) => calls.push(call),
                            None => content.push_str(&format!("{OPEN}{body}")),
                        }
                        self.mode = Mode::Text;
                    }
                    None => break,
                },
            }
        }
        (self.tidy(content), calls)
    }

    /// The end of the text: an unclosed call or held JSON is parsed if it can be; a call cut
    /// short (the token limit) is dropped, never shown as text.
    fn finish(&mut self) -> (String, Vec<ToolCall>) {
        let held = std::mem::take(&mut self.held);
        let (content, calls) = match self.mode {
            Mode::InCall => match self.call(&held) {
                Some(call) => (String::new(), vec![call]),
                None => {
                    tracing::debug!(call = %held, "an unfinished tool call was dropped");
                    (String::new(), Vec::new())
                }
            },
            Mode::Json => match self.json_calls(&held) {
                Some(calls) => (String::new(), calls),
                None => (held, Vec::new()),
            },
            Mode::Start | Mode::Text => (held, Vec::new()),
        };
        self.mode = Mode::Text;
        // Whitespace around calls is not content.
        let content = if self.calls > 0 && content.trim().is_empty() {
            String::new()
        } else {
            content
        };
        (content, calls)
    }

    /// Whitespace between calls (or before the first) is held, not shown.
    fn tidy(&mut self, content: String) -> String {
        if content.trim().is_empty() && (self.calls > 0 || self.mode == Mode::InCall) {
            return String::new();
        }
        content
    }

    /// A call from one JSON object `{"name", "arguments" | "parameters"}`.
    fn call(&mut self, text: &str) -> Option<ToolCall> {
        let value: Value = serde_json::from_str(text.trim()).ok()?;
        self.call_from(&value)
    }

    fn call_from(&mut self, value: &Value) -> Option<ToolCall> {
        let name = value.get("name")?.as_str()?.to_string();
        let arguments = match value.get("arguments").or_else(|| value.get("parameters")) {
            Some(Value::String(text)) => text.clone(),
            Some(args) => args.to_string(),
            None => "{}".into(),
        };
        self.calls += 1;
        Some(ToolCall {
            id: format!("call_{:024x}", rand::random::<u128>() >> 32),
            name,
            arguments,
        })
    }

    /// Calls from an answer that is all JSON: one object, several separated by `;` or
    /// newlines, or an array.
    fn json_calls(&mut self, text: &str) -> Option<Vec<ToolCall>> {
        let values: Vec<Value> = match serde_json::from_str::<Value>(text.trim()) {
            Ok(Value::Array(items)) => items,
            Ok(single) => vec![single],
            Err(_) => serde_json::Deserializer::from_str(&text.replace(';', "\n"))
                .into_iter::<Value>()
                .collect::<Result<_, _>>()
                .ok()?,
        };
        let calls: Option<Vec<ToolCall>> = values.iter().map(|v| self.call_from(v)).collect();
        calls.filter(|c| !c.is_empty())
    }
}

/// Length of the longest suffix of `text` that begins `marker`.
fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: ToolFormat, pieces: &[&str]) -> (String, Vec<ToolCall>) {
        let mut parser = CallParser::new(format);
        let mut content = String::new();
        let mut calls = Vec::new();
        for piece in pieces {
            let (c, mut k) = parser.push(piece);
            content.push_str(&c);
            calls.append(&mut k);
        }
        let (c, mut k) = parser.finish();
        content.push_str(&c);
        calls.append(&mut k);
        (content, calls)
    }

    #[test]
    fn tagged_calls_never_leak_markup_whatever_the_split() {
        let text = "Let me check.<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\": \"time\", \"arguments\": {}}</tool_call>";
        for step in 1..8 {
            let pieces: Vec<String> = text
                .chars()
                .collect::<Vec<_>>()
                .chunks(step)
                .map(|c| c.iter().collect())
                .collect();
            let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let (content, calls) = run(ToolFormat::Tagged, &pieces);
            assert_eq!(content, "Let me check.", "step {step}");
            assert_eq!(calls.len(), 2);
            assert_eq!(calls[0].name, "weather");
            assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
            assert_eq!(calls[1].name, "time");
        }
    }

    #[test]
    fn unclosed_calls_bare_json_arrays_and_plain_text() {
        let (content, calls) = run(
            ToolFormat::Tagged,
            &["<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}"],
        );
        assert_eq!((content.as_str(), calls.len()), ("", 1));
        let (content, calls) = run(
            ToolFormat::BareJson,
            &["{\"name\": \"f\", ", "\"parameters\": {\"a\": 1}}"],
        );
        assert_eq!(
            (content.as_str(), calls[0].arguments.as_str()),
            ("", r#"{"a":1}"#)
        );
        let (_, calls) = run(
            ToolFormat::JsonArray,
            &["[{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"g\", \"arguments\": {}}]"],
        );
        assert_eq!(calls.len(), 2);
        let (content, calls) = run(ToolFormat::BareJson, &["{not json"]);
        assert_eq!((content.as_str(), calls.len()), ("{not json", 0));
        let (content, calls) = run(ToolFormat::Tagged, &["a < b <tool", "_cal"]);
        assert_eq!((content.as_str(), calls.len()), ("a < b <tool_cal", 0));
    }

    #[test]
    fn templates_choose_the_format() {
        assert_eq!(
            ToolFormat::of_template("{{ '<tool_call>' }}"),
            ToolFormat::Tagged
        );
        assert_eq!(
            ToolFormat::of_template("[TOOL_CALLS]"),
            ToolFormat::JsonArray
        );
        assert_eq!(
            ToolFormat::of_template("<|python_tag|>"),
            ToolFormat::BareJson
        );
    }
}
