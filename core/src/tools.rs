//! Tool calling, the same for every engine: how a model's template wants calls written
//! ([`ToolFormat`]), the prompt for templates that know no tools, the grammar that forces a
//! call when one is required, and the streaming parser that turns call markup in the generated
//! text into [`StreamEvent::ToolCall`]s, so that no markup ever reaches the content.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::request::{ChatMessage, Constraint, Role, Tool, ToolCall, ToolChoice};
use crate::response::{
    filter_choices, ChoiceFilter, FinishReason, StreamEvent, TokenLogprob, TokenStream, Usage,
};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// How a model writes its tool calls (chosen from its chat template): markup around each call
/// (or around all of them), or a whole answer that is the calls. Inside the markup the calls'
/// own syntax is recognised whatever the family: JSON (`{"name", "arguments"}` objects, one or
/// a list), `<function=f><parameter=k>v</parameter></function>` (Qwen3-Coder, Qwen3.5,
/// Nemotron 3, Seed-OSS), `f<arg_key>k</arg_key><arg_value>v</arg_value>` (GLM 4.x, Laguna),
/// `<invoke name="f"><parameter name="k">v</parameter></invoke>` (MiniMax M2, DeepSeek V3.2's
/// DSML), Kimi K2's call tokens, and Mistral's `f[ARGS]{...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFormat {
    /// `<tool_call>...</tool_call>` blocks (Hermes, Qwen, GLM, and the prompt given to
    /// templates that know no tools).
    #[default]
    Tagged,
    /// The whole answer is a JSON object `{"name": ..., "parameters": ...}` (Llama 3.x, whose
    /// `<|python_tag|>` marker is a control token with no text).
    BareJson,
    /// The answer is the calls after `[TOOL_CALLS]` (Mistral): a JSON list, or `f[ARGS]{...}`.
    JsonArray,
    /// `<tool_calls>...</tool_calls>` around a JSON list or lines (Apriel, MiniMax M1).
    ToolCalls,
    /// `<TOOLCALL>...</TOOLCALL>` around a JSON list (Nemotron Nano 2).
    Toolcall,
    /// `<|START_ACTION|>...<|END_ACTION|>` around a JSON list (Command R7B, Command A).
    CommandR,
    /// `<minimax:tool_call>...</minimax:tool_call>` around `<invoke>`s (MiniMax M2).
    MiniMax,
    /// `<seed:tool_call>...</seed:tool_call>` around `<function=...>` (Seed-OSS).
    Seed,
    /// Kimi K2's `<|tool_calls_section_begin|>...<|tool_calls_section_end|>`.
    Kimi,
    /// DeepSeek V3.2's `<｜DSML｜function_calls>` around DSML `invoke`s.
    DsmlFunctionCalls,
    /// DeepSeek V4's `<｜DSML｜tool_calls>` around DSML `invoke`s.
    DsmlToolCalls,
    /// `<function=f>{...}</function>` (Functionary v3.1).
    Functionary,
    /// DeepSeek R1/V3's `<｜tool▁calls▁begin｜>` with `function<｜tool▁sep｜>f` and fenced
    /// JSON arguments.
    DeepSeek,
    /// `<|tools_prefix|>[{"f": {...}}]<|tools_suffix|>` (Apertus).
    Apertus,
    /// Gemma 4's `<|tool_call>call:f{k:<|"|>v<|"|>}<tool_call|>`.
    Gemma4,
    /// `<|tool_call_start|>[f(k='v')]<|tool_call_end|>`: Python call syntax (LFM2).
    Pythonic,
}

/// The markup templates write around calls, most specific first, with the format it means.
const WRAPPERS: [(&str, ToolFormat); 12] = [
    ("<|tool_calls_section_begin|>", ToolFormat::Kimi),
    ("<｜tool▁calls▁begin｜>", ToolFormat::DeepSeek),
    ("<|tools_prefix|>", ToolFormat::Apertus),
    ("<|tool_call>", ToolFormat::Gemma4),
    ("<|tool_call_start|>", ToolFormat::Pythonic),
    ("<minimax:tool_call>", ToolFormat::MiniMax),
    ("<seed:tool_call>", ToolFormat::Seed),
    ("<|START_ACTION|>", ToolFormat::CommandR),
    ("<TOOLCALL>", ToolFormat::Toolcall),
    ("<tool_calls>", ToolFormat::ToolCalls),
    (OPEN, ToolFormat::Tagged),
    ("[TOOL_CALLS]", ToolFormat::JsonArray),
];

impl ToolFormat {
    /// The format a chat template's source asks for.
    pub fn of_template(source: &str) -> Self {
        // A template that renders no tools gets ours, and its model is asked for our format.
        if !template_takes_tools(source) {
            return ToolFormat::Tagged;
        }
        // DeepSeek V3.2 and V4 build their markup from a `｜DSML｜` variable.
        if source.contains("｜DSML｜") {
            return match source.contains("function_calls") {
                true => ToolFormat::DsmlFunctionCalls,
                false => ToolFormat::DsmlToolCalls,
            };
        }
        if let Some((_, format)) = WRAPPERS.iter().find(|(open, _)| source.contains(open)) {
            return *format;
        }
        if source.contains("<function=") {
            ToolFormat::Functionary
        } else if source.contains("<|python_tag|>") || source.contains("ipython") {
            ToolFormat::BareJson
        } else {
            ToolFormat::Tagged
        }
    }

    /// The markup around calls: opening and closing (empty: the rest of the answer).
    fn markup(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            ToolFormat::Tagged => (OPEN, CLOSE),
            ToolFormat::ToolCalls => ("<tool_calls>", "</tool_calls>"),
            ToolFormat::Toolcall => ("<TOOLCALL>", "</TOOLCALL>"),
            ToolFormat::CommandR => ("<|START_ACTION|>", "<|END_ACTION|>"),
            ToolFormat::MiniMax => ("<minimax:tool_call>", "</minimax:tool_call>"),
            ToolFormat::Seed => ("<seed:tool_call>", "</seed:tool_call>"),
            ToolFormat::Kimi => ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"),
            ToolFormat::DsmlFunctionCalls => {
                ("<｜DSML｜function_calls>", "</｜DSML｜function_calls>")
            }
            ToolFormat::DsmlToolCalls => ("<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>"),
            ToolFormat::Functionary => ("<function=", "</function>"),
            ToolFormat::DeepSeek => ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"),
            ToolFormat::Apertus => ("<|tools_prefix|>", "<|tools_suffix|>"),
            ToolFormat::Gemma4 => ("<|tool_call>", "<tool_call|>"),
            ToolFormat::Pythonic => ("<|tool_call_start|>", "<|tool_call_end|>"),
            ToolFormat::JsonArray => ("[TOOL_CALLS]", ""),
            ToolFormat::BareJson => return None,
        })
    }

    /// Markup the parser reads that a model may write as control tokens (text the answer
    /// must then carry).
    pub fn markers(self) -> Vec<&'static str> {
        let mut markers: Vec<&str> = self
            .markup()
            .into_iter()
            .flat_map(|(o, c)| [o, c])
            .collect();
        match self {
            ToolFormat::Kimi => markers.extend([
                "<|tool_call_begin|>",
                "<|tool_call_argument_begin|>",
                "<|tool_call_end|>",
            ]),
            ToolFormat::JsonArray => markers.extend(["[ARGS]", "[CALL_ID]"]),
            ToolFormat::DeepSeek => markers.extend([
                "<｜tool▁call▁begin｜>",
                "<｜tool▁sep｜>",
                "<｜tool▁call▁end｜>",
            ]),
            ToolFormat::Gemma4 => markers.push("<|\"|>"),
            _ => {}
        }
        markers.retain(|m| !m.is_empty());
        markers
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
    filter_choices(stream, move || CallParser::new(format))
}

impl ChoiceFilter for CallParser {
    fn delta(
        &mut self,
        choice: u32,
        text: String,
        logprobs: Vec<TokenLogprob>,
    ) -> Vec<StreamEvent> {
        let (content, calls) = self.push(&text);
        let mut out = Vec::new();
        if !content.is_empty() || !logprobs.is_empty() {
            out.push(StreamEvent::Delta {
                choice,
                text: content,
                logprobs,
            });
        }
        out.extend(
            calls
                .into_iter()
                .map(|call| StreamEvent::ToolCall { choice, call }),
        );
        out
    }

    fn finish(
        &mut self,
        choice: u32,
        reason: &mut FinishReason,
        _usage: &mut Usage,
    ) -> Vec<StreamEvent> {
        let (content, calls) = CallParser::finish(self);
        let mut out = Vec::new();
        if !content.is_empty() {
            out.push(StreamEvent::Delta {
                choice,
                text: content,
                logprobs: Vec::new(),
            });
        }
        out.extend(
            calls
                .into_iter()
                .map(|call| StreamEvent::ToolCall { choice, call }),
        );
        if self.calls > 0 && *reason == FinishReason::Stop {
            *reason = FinishReason::ToolCalls;
        }
        out
    }
}

/// Where a choice's parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing but whitespace seen yet.
    Start,
    /// Text, possibly with calls in their markup.
    Text,
    /// Inside a call's markup.
    InCall,
    /// The answer is the calls (held until the end).
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
            let trimmed = self.held.trim_start();
            match (self.format, trimmed.chars().next()) {
                (_, None) => return (String::new(), Vec::new()),
                (ToolFormat::BareJson, Some('{')) => self.mode = Mode::Json,
                (ToolFormat::JsonArray, Some('[')) => {
                    let lead = "[TOOL_CALLS]";
                    if lead.starts_with(trimmed) && trimmed.len() < lead.len() {
                        return (String::new(), Vec::new());
                    }
                    self.held = trimmed.strip_prefix(lead).unwrap_or(trimmed).to_string();
                    self.mode = Mode::Json;
                }
                _ => self.mode = Mode::Text,
            }
        }
        let mut content = String::new();
        let mut calls = Vec::new();
        let (open, close) = self.format.markup().unwrap_or(("", ""));
        loop {
            match self.mode {
                Mode::Json | Mode::Start => break,
                Mode::Text => match self.held.find(open).filter(|_| !open.is_empty()) {
                    Some(at) => {
                        content.push_str(&self.held[..at]);
                        self.held.drain(..at + open.len());
                        self.mode = Mode::InCall;
                    }
                    None => {
                        let keep = if open.is_empty() {
                            0
                        } else {
                            partial_suffix(&self.held, open)
                        };
                        let cut = self.held.len() - keep;
                        content.push_str(&self.held[..cut]);
                        self.held.drain(..cut);
                        break;
                    }
                },
                Mode::InCall => match self.held.find(close).filter(|_| !close.is_empty()) {
                    Some(at) => {
                        let body: String = self.held.drain(..at + close.len()).collect();
                        match self.calls_in(&body[..at]) {
                            Some(mut found) => calls.append(&mut found),
                            None => content.push_str(&format!("{open}{body}")),
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
            Mode::InCall => match self.calls_in(&held) {
                Some(calls) => (String::new(), calls),
                None => {
                    tracing::debug!(call = %held, "an unfinished tool call was dropped");
                    (String::new(), Vec::new())
                }
            },
            Mode::Json => match self.calls_in(&held) {
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

    /// The calls written in `body` (what the markup encloses), in whichever family's syntax;
    /// `None` if it holds none.
    fn calls_in(&mut self, body: &str) -> Option<Vec<ToolCall>> {
        let body = match self.format {
            // `<function=` opened it: the name, `>`, then the arguments.
            ToolFormat::Functionary => &format!("<function={body}</function>"),
            _ => body,
        };
        let found = match self.format {
            ToolFormat::Gemma4 => syntax::gemma4(body),
            ToolFormat::Pythonic => syntax::pythonic(body),
            _ => syntax::calls(body),
        }?;
        // Arguments as compact JSON, whatever the syntax; a call whose arguments are not JSON
        // is no call.
        let found = found
            .into_iter()
            .map(|(name, arguments)| {
                let arguments = serde_json::from_str::<Value>(&arguments).ok()?;
                Some((name, arguments.to_string()))
            })
            .collect::<Option<Vec<_>>>()?;
        self.calls += found.len();
        Some(
            found
                .into_iter()
                .map(|(name, arguments)| ToolCall {
                    id: format!("call_{:024x}", rand::random::<u128>() >> 32),
                    name,
                    arguments,
                })
                .collect(),
        )
    }
}

/// The families' syntaxes for calls: each gives (name, arguments as JSON text).
mod syntax {
    use serde_json::{Map, Value};

    type Call = (String, String);

    /// The calls in `body`, trying each syntax that its text suggests.
    pub fn calls(body: &str) -> Option<Vec<Call>> {
        let body = unfenced(body.trim());
        let found = if body.contains("<|tool_call_begin|>") {
            kimi(body)
        } else if body.contains("<｜tool▁sep｜>") {
            deepseek(body)
        } else if body.contains("<function=") {
            xml_functions(body)
        } else if body.contains("invoke name=") {
            invokes(body)
        } else if body.contains("<arg_key>") {
            arg_pairs(body)
        } else if body.contains("[ARGS]") {
            mistral(body)
        } else {
            json(body)
        };
        found.filter(|calls| !calls.is_empty())
    }

    /// A body in a Markdown code fence, without it.
    fn unfenced(body: &str) -> &str {
        body.strip_prefix("```json")
            .or_else(|| body.strip_prefix("```"))
            .and_then(|rest| rest.trim_end().strip_suffix("```"))
            .map_or(body, str::trim)
    }

    /// JSON: one object, a list, or objects one per line (or separated by `;`).
    fn json(body: &str) -> Option<Vec<Call>> {
        let values: Vec<Value> = match serde_json::from_str::<Value>(body) {
            Ok(Value::Array(items)) => items,
            Ok(single) => vec![single],
            Err(_) => serde_json::Deserializer::from_str(&body.replace(';', "\n"))
                .into_iter::<Value>()
                .collect::<Result<_, _>>()
                .ok()?,
        };
        values.iter().map(json_call).collect()
    }

    /// `{"name" | "tool_name" | "function": {...}, "arguments" | "parameters": ...}`; a single
    /// key naming the function (`{"f": {...}}`) too.
    fn json_call(value: &Value) -> Option<Call> {
        let object = value.as_object()?;
        let object = match object.get("function") {
            Some(Value::Object(inner)) => inner,
            _ => object,
        };
        let name = ["name", "tool_name"]
            .iter()
            .find_map(|k| object.get(*k).and_then(Value::as_str));
        let (name, arguments) = match name {
            Some(name) => (
                name.to_string(),
                ["arguments", "parameters"]
                    .iter()
                    .find_map(|k| object.get(*k)),
            ),
            None if object.len() == 1 => {
                let (name, arguments) = object.iter().next()?;
                (name.clone(), Some(arguments))
            }
            None => return None,
        };
        let arguments = match arguments {
            Some(Value::String(text)) => text.clone(),
            Some(args) => args.to_string(),
            None => "{}".into(),
        };
        Some((name, arguments))
    }

    /// The text between `open` and `close` after `from`, and where it ends.
    fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<(&'a str, usize)> {
        let start = text.find(open)? + open.len();
        let len = text[start..].find(close)?;
        Some((&text[start..start + len], start + len + close.len()))
    }

    /// A parameter's text as a JSON value: itself if it is JSON (numbers, objects, ...),
    /// else a string (one newline around it trimmed, as templates write them).
    fn value(text: &str, as_string: bool) -> Value {
        let text = text.strip_prefix('\n').unwrap_or(text);
        let text = text.strip_suffix('\n').unwrap_or(text);
        match as_string {
            true => Value::String(text.to_string()),
            false => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into())),
        }
    }

    /// `<function=f><parameter=k>v</parameter>...</function>`, any number of them.
    fn xml_functions(body: &str) -> Option<Vec<Call>> {
        let mut calls = Vec::new();
        let mut rest = body;
        while let Some((function, end)) = between(rest, "<function=", "</function>") {
            let (name, mut params) = function.split_once('>')?;
            let mut args = Map::new();
            while let Some((param, end)) = between(params, "<parameter=", "</parameter>") {
                let (key, text) = param.split_once('>')?;
                args.insert(key.trim().into(), value(text, false));
                params = &params[end..];
            }
            if args.is_empty() && !params.trim().is_empty() {
                // Functionary's `<function=f>{...}</function>`.
                calls.push((name.trim().into(), params.trim().to_string()));
            } else {
                calls.push((name.trim().into(), Value::Object(args).to_string()));
            }
            rest = &rest[end..];
        }
        Some(calls)
    }

    /// `<invoke name="f"><parameter name="k" [string="true"]>v</parameter></invoke>` (with any
    /// namespace before the element names, e.g. DeepSeek's `<｜DSML｜`).
    fn invokes(body: &str) -> Option<Vec<Call>> {
        let mut calls = Vec::new();
        for invoke in body.split("invoke name=\"").skip(1) {
            let (name, mut params) = invoke.split_once('"')?;
            let mut args = Map::new();
            while let Some(at) = params.find("parameter name=\"") {
                let after = &params[at + "parameter name=\"".len()..];
                let (key, after) = after.split_once('"')?;
                let (attributes, after) = after.split_once('>')?;
                let end = after.find("parameter>")?;
                // The value ends where its closing element (`</parameter>`, `</｜DSML｜...`) does.
                let text = &after[..end];
                let text = &text[..text.rfind("</")?];
                args.insert(
                    key.into(),
                    value(text, attributes.contains("string=\"true\"")),
                );
                params = &after[end..];
            }
            calls.push((name.to_string(), Value::Object(args).to_string()));
        }
        Some(calls)
    }

    /// `f<arg_key>k</arg_key><arg_value>v</arg_value>...` (one call).
    fn arg_pairs(body: &str) -> Option<Vec<Call>> {
        let (name, _) = body.split_once("<arg_key>")?;
        let mut rest = &body[name.len()..];
        let mut args = Map::new();
        while let Some((key, end)) = between(rest, "<arg_key>", "</arg_key>") {
            let (text, after) = between(&rest[end..], "<arg_value>", "</arg_value>")?;
            args.insert(key.trim().into(), value(text, false));
            rest = &rest[end + after..];
        }
        Some(vec![(name.trim().into(), Value::Object(args).to_string())])
    }

    /// Kimi K2: `<|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{...}
    /// <|tool_call_end|>`, any number of them.
    fn kimi(body: &str) -> Option<Vec<Call>> {
        let mut calls = Vec::new();
        for call in body.split("<|tool_call_begin|>").skip(1) {
            let (id, rest) = call.split_once("<|tool_call_argument_begin|>")?;
            let arguments = rest.split("<|tool_call_end|>").next()?.trim();
            let name = id.trim().trim_start_matches("functions.");
            let name = name.rsplit_once(':').map_or(name, |(n, _)| n);
            calls.push((name.to_string(), arguments.to_string()));
        }
        Some(calls)
    }

    /// DeepSeek R1/V3: `<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{...}\n```
    /// <｜tool▁call▁end｜>`, any number of them.
    fn deepseek(body: &str) -> Option<Vec<Call>> {
        let mut calls = Vec::new();
        for call in body.split("<｜tool▁sep｜>").skip(1) {
            let call = call.split("<｜tool▁call▁end｜>").next()?;
            let (name, arguments) = call.split_once('\n').unwrap_or((call, "{}"));
            calls.push((
                name.trim().to_string(),
                unfenced(arguments.trim()).to_string(),
            ));
        }
        Some(calls)
    }

    /// Gemma 4: `call:f{key:<|"|>text<|"|>,n:3}`, any number of them. Its strings are
    /// delimited by `<|"|>` and its keys are bare; made JSON, then read.
    pub fn gemma4(body: &str) -> Option<Vec<Call>> {
        let mut calls = Vec::new();
        for call in body.split("call:").skip(1) {
            let (name, rest) = call.split_once('{')?;
            let end = rest.rfind('}')?;
            let object = bare_keys_quoted(&format!("{{{}}}", &rest[..end]).replace("<|\"|>", "\""));
            let arguments: Value = serde_json::from_str(&object).ok()?;
            calls.push((name.trim().to_string(), arguments.to_string()));
        }
        Some(calls)
    }

    /// `{key: ...}` with its bare keys quoted (strings left as they are).
    fn bare_keys_quoted(text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 16);
        let (mut in_string, mut key) = (false, String::new());
        for c in text.chars() {
            match c {
                '"' => {
                    in_string = !in_string;
                    out.push(c);
                }
                _ if in_string => out.push(c),
                c if c.is_alphanumeric() || c == '_' => key.push(c),
                ':' if !key.is_empty() => {
                    out.push_str(&format!("\"{key}\":"));
                    key.clear();
                }
                c => {
                    out.push_str(&key);
                    key.clear();
                    out.push(c);
                }
            }
        }
        out.push_str(&key);
        out
    }

    /// Python calls: `[f(k='v', n=3), g()]`.
    pub fn pythonic(body: &str) -> Option<Vec<Call>> {
        let body = body.trim();
        let body = body
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(body);
        let mut calls = Vec::new();
        let mut rest = body;
        while let Some(open) = rest.find('(') {
            let name = rest[..open].trim().trim_start_matches(',').trim();
            let (args, after) = python_arguments(&rest[open + 1..])?;
            calls.push((name.to_string(), args.to_string()));
            rest = after;
        }
        Some(calls)
    }

    /// `k='v', n=3)...`: the arguments as a JSON object, and the text after the `)`.
    fn python_arguments(text: &str) -> Option<(Value, &str)> {
        let mut args = Map::new();
        let mut rest = text.trim_start();
        loop {
            if let Some(after) = rest.strip_prefix(')') {
                return Some((Value::Object(args), after));
            }
            let (key, after) = rest.split_once('=')?;
            let after = after.trim_start();
            let (value, after) = python_value(after)?;
            args.insert(key.trim().trim_start_matches(',').trim().into(), value);
            rest = after.trim_start().trim_start_matches(',').trim_start();
        }
    }

    /// One Python literal: a quoted string, a number, True/False/None.
    fn python_value(text: &str) -> Option<(Value, &str)> {
        let quote = text.chars().next()?;
        if quote == '\'' || quote == '"' {
            let end = text[1..].find(quote)? + 1;
            return Some((Value::String(text[1..end].into()), &text[end + 1..]));
        }
        let end = text.find([',', ')']).unwrap_or(text.len());
        let word = text[..end].trim();
        let value = match word {
            "True" => Value::Bool(true),
            "False" => Value::Bool(false),
            "None" => Value::Null,
            _ => serde_json::from_str(word).unwrap_or_else(|_| Value::String(word.into())),
        };
        Some((value, &text[end..]))
    }

    /// Mistral: `f[ARGS]{...}` or `f[CALL_ID]id[ARGS]{...}`, repeated after `[TOOL_CALLS]`.
    fn mistral(body: &str) -> Option<Vec<Call>> {
        let mut calls = Vec::new();
        for call in body.split("[TOOL_CALLS]") {
            let Some((head, args)) = call.split_once("[ARGS]") else {
                continue;
            };
            let name = head.split("[CALL_ID]").next()?.trim();
            let mut values = serde_json::Deserializer::from_str(args).into_iter::<Value>();
            let args = values.next()?.ok()?;
            calls.push((name.to_string(), args.to_string()));
        }
        Some(calls)
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
    fn each_familys_syntax_gives_the_same_call() {
        let paris = r#"{"city":"Paris"}"#;
        for (format, text) in [
            (
                ToolFormat::Tagged,
                "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
            ),
            (
                ToolFormat::Tagged,
                "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>",
            ),
            (
                ToolFormat::MiniMax,
                "<minimax:tool_call>\n<invoke name=\"get_weather\">\n<parameter name=\"city\">Paris</parameter>\n</invoke>\n</minimax:tool_call>",
            ),
            (
                ToolFormat::DsmlToolCalls,
                "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>",
            ),
            (
                ToolFormat::Kimi,
                "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\":\"Paris\"}<|tool_call_end|><|tool_calls_section_end|>",
            ),
            (
                ToolFormat::DeepSeek,
                "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\":\"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            ),
            (
                ToolFormat::Gemma4,
                "<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>}<tool_call|>",
            ),
            (
                ToolFormat::Pythonic,
                "<|tool_call_start|>[get_weather(city='Paris')]<|tool_call_end|>",
            ),
            (
                ToolFormat::JsonArray,
                "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}",
            ),
            (
                ToolFormat::Functionary,
                "<function=get_weather>{\"city\": \"Paris\"}</function>",
            ),
        ] {
            // Split at every point: no markup reaches the content.
            for step in [1, 3, 7, text.len()] {
                let pieces: Vec<String> = text
                    .chars()
                    .collect::<Vec<_>>()
                    .chunks(step)
                    .map(|c| c.iter().collect())
                    .collect();
                let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
                let (content, calls) = run(format, &pieces);
                assert_eq!(content, "", "{format:?} step {step}");
                assert_eq!(calls.len(), 1, "{format:?} step {step}");
                assert_eq!(
                    (calls[0].name.as_str(), calls[0].arguments.as_str()),
                    ("get_weather", paris),
                    "{format:?}"
                );
            }
        }
    }

    #[test]
    fn templates_choose_the_format() {
        assert_eq!(
            ToolFormat::of_template("{{ tools }}{{ '<tool_call>' }}"),
            ToolFormat::Tagged
        );
        assert_eq!(
            ToolFormat::of_template("{{ tools }}[TOOL_CALLS]"),
            ToolFormat::JsonArray
        );
        assert_eq!(
            ToolFormat::of_template("{{ tools }}<|python_tag|>"),
            ToolFormat::BareJson
        );
        // Without tools in the template, the model is given ours.
        assert_eq!(
            ToolFormat::of_template("<|python_tag|>"),
            ToolFormat::Tagged
        );
    }
}
