//! Chat templates: the model's own Jinja template rendered with minijinja, configured like the
//! Hugging Face renderer (trim/lstrip blocks, loop controls, Python string methods) and with the
//! helpers real templates call. Every engine renders prompts here, so the same messages give the
//! same prompt text on every engine.

use std::path::Path;

use chrono::format::{Item, StrftimeItems};
use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::reasoning::ReasoningFormat;
use crate::request::{ChatMessage, Role, Tool, ToolCall};
use crate::tools::{self, ToolFormat};

mod compat;
mod pyjson;

const TEMPLATE_NAME: &str = "chat";

/// A compiled chat template with the special tokens it may refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    takes_tools: bool,
    tool_format: ToolFormat,
    reasoning_format: ReasoningFormat,
    /// The template refuses a system message: it goes at the head of the first user message.
    folds_system: bool,
    /// The template writes tool-call arguments as text (it refuses them as objects).
    string_arguments: bool,
}

#[derive(Serialize)]
struct RenderContext<'a> {
    messages: Vec<serde_json::Value>,
    /// `None` when no tools are offered, as Hugging Face passes it.
    tools: Option<Vec<serde_json::Value>>,
    add_generation_prompt: bool,
    /// Today, for templates that print it (FireFunction); `chat_template_kwargs` may set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    datetime: Option<String>,
    /// The offered tools as indented JSON text, for templates that print a `functions`
    /// variable (FireFunction); `chat_template_kwargs` may set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    functions: Option<String>,
    bos_token: &'a str,
    eos_token: &'a str,
    /// The request's `chat_template_kwargs` (e.g. `enable_thinking`, `reasoning_effort`); the
    /// names above win over theirs.
    #[serde(flatten)]
    kwargs: &'a serde_json::Map<String, serde_json::Value>,
}

impl ChatTemplate {
    /// Compile `source`; `bos_token` and `eos_token` are the texts of the model's special tokens.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", pyjson::tojson);
        // Python's: `none is iterable` is false (minijinja iterates none as empty).
        env.add_test("iterable", |v: &Value| !v.is_none() && v.try_iter().is_ok());
        env.add_template_owned(TEMPLATE_NAME, compat::rewrite(source))
            .map_err(|e| Error::Template(describe(&e)))?;
        let mut template = ChatTemplate {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            takes_tools: tools::template_takes_tools(source),
            tool_format: ToolFormat::of_template(source),
            reasoning_format: ReasoningFormat::of_template(source),
            folds_system: false,
            string_arguments: false,
        };
        template.probe(source);
        Ok(template)
    }

    /// Find out, by rendering, what the template refuses that a request may hold: a system
    /// message, tool-call arguments as an object (as llama.cpp's renderer does).
    fn probe(&mut self, source: &str) {
        let system = [
            ChatMessage::new(Role::System, "s"),
            ChatMessage::new(Role::User, "u"),
        ];
        if self.render(&system, &[], true).is_err() {
            self.folds_system = true;
            self.folds_system = self.render(&system, &[], true).is_ok();
        }
        if !source.contains("tool_calls") {
            return;
        }
        let mut call = ChatMessage::new(Role::Assistant, "");
        call.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments: r#"{"a": 1}"#.into(),
        }];
        let mut result = ChatMessage::new(Role::Tool, "r");
        result.tool_call_id = Some("call_1".into());
        let history = [ChatMessage::new(Role::User, "u"), call, result];
        let tool = Tool {
            name: "f".into(),
            description: None,
            parameters: serde_json::json!({"type": "object", "properties": {}}),
        };
        let tools = std::slice::from_ref(&tool);
        if self.render(&history, tools, true).is_err() {
            self.string_arguments = true;
            self.string_arguments = self.render(&history, tools, true).is_ok();
        }
    }

    /// The template in the file `path` (a model's configured `chat_template`), over the same
    /// special tokens as this one; errors name the file.
    pub fn replaced_by_file(&self, path: &Path) -> Result<Self> {
        ChatTemplate::from_file(path, &self.bos_token, &self.eos_token)
    }

    /// The template in the file `path`; errors name the file.
    pub fn from_file(path: &Path, bos_token: &str, eos_token: &str) -> Result<Self> {
        let named = |e: &dyn std::fmt::Display| {
            Error::Template(format!("chat template {}: {e}", path.display()))
        };
        let source = std::fs::read_to_string(path).map_err(|e| named(&e))?;
        ChatTemplate::new(&source, bos_token, eos_token).map_err(|e| named(&e))
    }

    /// Read the template of a Hugging Face / MLX model directory: `chat_template.jinja`, or the
    /// `chat_template` field of `tokenizer_config.json` (`None` if the model has none).
    pub fn source_from_dir(dir: &Path) -> Result<Option<String>> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            return std::fs::read_to_string(&jinja)
                .map(Some)
                .map_err(|e| Error::io(&jinja, e));
        }
        let config_path = dir.join("tokenizer_config.json");
        if !config_path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid_model(&config_path, format!("invalid JSON: {e}")))?;
        Ok(match config.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: use the default one.
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str())
                .map(str::to_string),
            _ => None,
        })
    }

    /// Render `messages`, ending with the assistant's turn opener when `add_generation_prompt`.
    /// How the model writes tool calls.
    pub fn tool_format(&self) -> ToolFormat {
        self.tool_format
    }

    /// How the model marks its reasoning.
    pub fn reasoning_format(&self) -> &ReasoningFormat {
        &self.reasoning_format
    }

    /// Render `messages` (offering `tools`), ending with the assistant's turn when
    /// `add_generation_prompt`. A template that knows no tools gets them, and earlier calls and
    /// results, written into the messages ([`tools::without_template_tools`]).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_with(
            messages,
            tools,
            add_generation_prompt,
            &serde_json::Map::new(),
        )
    }

    /// [`ChatTemplate::render`] with the template's own variables (`chat_template_kwargs`, e.g.
    /// `enable_thinking` or `reasoning_effort`).
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let reserved = [
            "messages",
            "tools",
            "add_generation_prompt",
            "bos_token",
            "eos_token",
        ];
        if let Some(name) = reserved.iter().find(|name| kwargs.contains_key(**name)) {
            return Err(Error::param(
                "chat_template_kwargs",
                format!("`{name}` is the server's to set, not a template argument"),
            ));
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::Template(describe(&e)))?;
        let uses_tools = !tools.is_empty()
            || messages
                .iter()
                .any(|m| m.role == Role::Tool || !m.tool_calls.is_empty());
        let mut rewritten = None;
        let template_tools = match (uses_tools, self.takes_tools) {
            (true, false) => {
                rewritten = Some(tools::without_template_tools(messages, tools));
                None
            }
            (true, true) if !tools.is_empty() => Some(tools::tools_for_template(tools)),
            _ => None,
        };
        if self.folds_system {
            rewritten = Some(fold_system(rewritten.as_deref().unwrap_or(messages)));
        }
        let messages = rewritten.as_deref().unwrap_or(messages);
        // What some templates expect their caller to define (as llama.cpp defines them).
        let functions = (!kwargs.contains_key("functions")).then(|| {
            serde_json::to_string_pretty(template_tools.as_deref().unwrap_or_default())
                .unwrap_or_default()
        });
        let datetime = (!kwargs.contains_key("datetime")).then(|| {
            chrono::Utc::now()
                .format("%b %d %Y %H:%M:%S GMT")
                .to_string()
        });
        template
            .render(RenderContext {
                messages: messages
                    .iter()
                    .map(|m| template_message(m, self.string_arguments))
                    .collect(),
                tools: template_tools,
                add_generation_prompt,
                datetime,
                functions,
                bos_token: &self.bos_token,
                eos_token: &self.eos_token,
                kwargs,
            })
            .map_err(|e| Error::Template(describe(&e)))
    }
}

/// `messages` for a template that refuses system messages: their text at the head of the first
/// user message (a system message with no user message after it becomes one).
fn fold_system(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut system = Vec::new();
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        match m.role {
            Role::System => system.push(m.content.as_str()),
            Role::User if !system.is_empty() => {
                let mut m = m.clone();
                m.content = format!("{}\n\n{}", system.join("\n\n"), m.content);
                system.clear();
                out.push(m);
            }
            _ => out.push(m.clone()),
        }
    }
    if !system.is_empty() {
        out.push(ChatMessage::new(Role::User, system.join("\n\n")));
    }
    out
}

/// A message in the shape Hugging Face templates read: tool calls as
/// `{"id", "type": "function", "function": {"name", "arguments"}}` with the arguments as an
/// object when they are JSON (as text for templates that want text).
fn template_message(m: &ChatMessage, string_arguments: bool) -> serde_json::Value {
    let mut value = serde_json::json!({"role": m.role, "content": m.content});
    if !m.tool_calls.is_empty() {
        value["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                let arguments = match string_arguments {
                    true => serde_json::Value::String(c.arguments.clone()),
                    false => serde_json::from_str::<serde_json::Value>(&c.arguments)
                        .unwrap_or_else(|_| serde_json::Value::String(c.arguments.clone())),
                };
                serde_json::json!({"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": arguments}})
            })
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        value["tool_call_id"] = serde_json::json!(id);
    }
    if let Some(reasoning) = &m.reasoning {
        // Qwen3, DeepSeek, GLM, Kimi and MiniMax templates read `reasoning_content`; gpt-oss's
        // reads `thinking`.
        value["reasoning_content"] = serde_json::json!(reasoning);
        value["thinking"] = serde_json::json!(reasoning);
    }
    value
}

fn describe(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!(
            "{} (template line {line})",
            e.detail().unwrap_or(&e.to_string())
        ),
        None => e.detail().map_or_else(|| e.to_string(), str::to_string),
    }
}

/// `raise_exception(message)`: templates call it to reject conversations they cannot format.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current local time, as Llama 3 templates use for the date.
fn strftime_now(format: String) -> std::result::Result<String, minijinja::Error> {
    let items: Vec<Item> = StrftimeItems::new(&format).collect();
    if items.contains(&Item::Error) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("invalid strftime format `{format}`"),
        ));
    }
    Ok(chrono::Local::now()
        .format_with_items(items.into_iter())
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Role;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_with_default_system_prompt() {
        let t = ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>").unwrap();
        let out = t
            .render(&[ChatMessage::new(Role::User, "Hi")], &[], true)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    fn weather_call_history() -> (Vec<ChatMessage>, Vec<Tool>) {
        let tools = vec![Tool {
            name: "get_weather".into(),
            description: Some("Weather in a city".into()),
            parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        }];
        let mut call = ChatMessage::new(Role::Assistant, "");
        call.tool_calls.push(crate::request::ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city": "Paris"}"#.into(),
        });
        let mut result = ChatMessage::new(Role::Tool, "18 C");
        result.tool_call_id = Some("call_1".into());
        let messages = vec![ChatMessage::new(Role::User, "Weather?"), call, result];
        (messages, tools)
    }

    #[test]
    fn templates_that_take_tools_get_them_in_hugging_face_shape() {
        // The parts of a Qwen-style template that read tools, calls and results.
        let src = "{% if tools %}<tools>{% for t in tools %}{{ t.function.name }}:{{ t.function.parameters | tojson }}{% endfor %}</tools>{% endif %}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% for c in m.tool_calls %}<tool_call>{{ c.function.name }} {{ c.function.arguments.city }}</tool_call>{% endfor %}{% if m.tool_call_id %}({{ m.tool_call_id }}){% endif %}{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let (messages, tools) = weather_call_history();
        let out = t.render(&messages, &tools, false).unwrap();
        assert_eq!(
            out,
            "<tools>get_weather:{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}</tools>[user]Weather?[assistant]<tool_call>get_weather Paris</tool_call>[tool]18 C(call_1)"
        );
        assert_eq!(t.tool_format(), ToolFormat::Tagged);
    }

    #[test]
    fn templates_without_tools_get_the_fallback_prompt() {
        let t = ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>").unwrap();
        let (messages, tools) = weather_call_history();
        let out = t.render(&messages, &tools, true).unwrap();
        assert!(out.starts_with("<|im_start|>system\n# Tools"), "{out}");
        assert!(out.contains(r#""name":"get_weather""#), "{out}");
        assert!(
            out.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>"),
            "{out}"
        );
        assert!(
            out.contains("<|im_start|>user\n<tool_response>\n18 C\n</tool_response><|im_end|>"),
            "{out}"
        );
    }

    #[test]
    fn python_methods_blocks_and_helpers() {
        let src = "{{ bos_token }}{% for m in messages %}\n  {%- if m.role == 'system' %}{% continue %}{% endif %}\n{{ m.content.strip().upper() }}|{{ m | tojson }}\n{% endfor %}{{ strftime_now('%Y') | length }}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        let out = t
            .render(
                &[
                    ChatMessage::new(Role::System, "skip"),
                    ChatMessage::new(Role::User, "  hi "),
                ],
                &[],
                false,
            )
            .unwrap();
        assert_eq!(out, "<s>HI|{\"role\": \"user\", \"content\": \"  hi \"}\n4");
    }

    #[test]
    fn raise_exception_and_syntax_errors_are_clear() {
        let t = ChatTemplate::new(
            "{% if messages[0].role == 'assistant' %}{{ raise_exception('Conversation must start with user') }}{% endif %}",
            "",
            "",
        )
        .unwrap();
        let err = t
            .render(&[ChatMessage::new(Role::Assistant, "x")], &[], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Conversation must start with user"), "{err}");
        let err = ChatTemplate::new("{% for %}", "", "")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("chat template:"), "{err}");
        assert!(strftime_now("%Q".into()).is_err());
    }
}
