//! Each dialect's event sequence for one generation, without a model: the same runtime events
//! (reasoning, answer text in two pieces, a tool call, the end) through the one streaming
//! driver as OpenAI chat chunks, Anthropic's message events, Responses events and Ollama's JSON
//! lines; and a generation failing mid-stream in each.

use std::sync::Arc;
use std::time::Instant;

use axum::response::Response;
use minerva_runtime::{
    Config, Error, FinishReason, GenerationRequest, Input, Router, Runtime, StreamEvent,
    TokenStream, ToolCall, Usage,
};
use serde_json::{json, Value};

use crate::handlers::Chunks;
use crate::responses::{ResponseFrame, ResponseStream, ResponsesRequest};
use crate::{anthropic, ollama, stream, AppState};

fn state() -> Arc<AppState> {
    crate::app(Runtime::new(Config::default(), Router::new(Vec::new()))).1
}

fn usage() -> Usage {
    Usage {
        prompt_tokens: 7,
        completion_tokens: 5,
        reasoning_tokens: 2,
        ..Default::default()
    }
}

/// A choice that reasons, answers "Hello" in two pieces, calls `get_weather` and ends.
fn generation() -> TokenStream {
    let events = vec![
        StreamEvent::Reasoning {
            choice: 0,
            text: "think".into(),
        },
        StreamEvent::Delta {
            choice: 0,
            text: "Hel".into(),
            logprobs: Vec::new(),
        },
        StreamEvent::Delta {
            choice: 0,
            text: "lo".into(),
            logprobs: Vec::new(),
        },
        StreamEvent::ToolCall {
            choice: 0,
            call: ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            },
        },
        StreamEvent::Done {
            choice: 0,
            finish_reason: FinishReason::ToolCalls,
            usage: usage(),
            stop_sequence: None,
        },
    ];
    Box::pin(futures::stream::iter(events.into_iter().map(Ok)))
}

/// A generation whose engine fails after the first piece of text.
fn failing() -> TokenStream {
    let events = vec![
        Ok(StreamEvent::Delta {
            choice: 0,
            text: "Hel".into(),
            logprobs: Vec::new(),
        }),
        Err(Error::EngineCrashed {
            model: "m".into(),
            reason: "killed by signal 9 (SIGKILL)".into(),
        }),
    ];
    Box::pin(futures::stream::iter(events))
}

async fn body(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The (event name, data) of each server-sent event; `[DONE]` as a string.
async fn sse(response: Response) -> Vec<(String, Value)> {
    body(response)
        .await
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim_start().to_string())
            };
            let data = field("data:").unwrap_or_default();
            let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
            (field("event:").unwrap_or_default(), data)
        })
        .collect()
}

fn chat_chunks() -> Chunks {
    Chunks::new(
        "chatcmpl",
        "m",
        true,
        &GenerationRequest::new(Input::Chat(Vec::new())),
    )
}

#[tokio::test]
async fn openai_chat_chunks() {
    let started = Instant::now();
    let events = sse(stream::sse_response(
        state(),
        generation(),
        chat_chunks(),
        "m".into(),
        started,
    ))
    .await;
    let chunks: Vec<&Value> = events.iter().map(|(_, data)| data).collect();
    assert_eq!(chunks.last().unwrap(), &&json!("[DONE]"));
    let deltas: Vec<&Value> = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| &c["choices"][0]["delta"])
        .collect();
    assert_eq!(deltas[0]["role"], "assistant", "{chunks:?}");
    let text = |key: &str| -> String { deltas.iter().filter_map(|d| d[key].as_str()).collect() };
    assert_eq!(text("content"), "Hello");
    assert_eq!(text("reasoning_content"), "think");
    let calls: Vec<&Value> = deltas.iter().filter_map(|d| d.get("tool_calls")).collect();
    assert_eq!(calls.len(), 1, "{chunks:?}");
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    assert_eq!(calls[0][0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    let last = chunks[chunks.len() - 2];
    assert_eq!(
        last["choices"][0]["finish_reason"], "tool_calls",
        "{chunks:?}"
    );
    assert!(chunks
        .iter()
        .all(|c| c["id"] == chunks[0]["id"] || c.is_string()));
}

#[tokio::test]
async fn anthropic_message_events() {
    let dialect = anthropic::MessageStream::new("msg_1", "m", true);
    let events = sse(stream::sse_response(
        state(),
        generation(),
        dialect,
        "m".into(),
        Instant::now(),
    ))
    .await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(
        &names[names.len() - 2..],
        ["message_delta", "message_stop"],
        "{names:?}"
    );
    // Blocks open, take their deltas and close in order: thinking, text, tool use.
    let blocks: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "content_block_start")
        .map(|(_, data)| data["content_block"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(blocks, ["thinking", "text", "tool_use"], "{events:?}");
    let starts = names
        .iter()
        .filter(|n| **n == "content_block_start")
        .count();
    let stops = names.iter().filter(|n| **n == "content_block_stop").count();
    assert_eq!(starts, stops, "{names:?}");
    let delta = |kind: &str, key: &str| -> String {
        events
            .iter()
            .filter(|(name, data)| name == "content_block_delta" && data["delta"]["type"] == kind)
            .filter_map(|(_, data)| data["delta"][key].as_str())
            .collect()
    };
    assert_eq!(delta("thinking_delta", "thinking"), "think");
    assert_eq!(delta("text_delta", "text"), "Hello");
    let arguments: Value =
        serde_json::from_str(&delta("input_json_delta", "partial_json")).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    let end = &events[events.len() - 2].1;
    assert_eq!(end["delta"]["stop_reason"], "tool_use", "{end}");
    assert_eq!(end["usage"]["output_tokens"], 5, "{end}");
}

#[tokio::test]
async fn responses_events() {
    let request = ResponsesRequest::parse(br#"{"model": "m", "input": "hi"}"#).unwrap();
    let dialect = ResponseStream::new(ResponseFrame::new(&request, 0));
    let events = sse(stream::sse_response(
        state(),
        generation(),
        dialect,
        "m".into(),
        Instant::now(),
    ))
    .await;
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"response.created"), "{names:?}");
    assert_eq!(names.last(), Some(&"response.completed"), "{names:?}");
    assert!(
        events
            .iter()
            .all(|(name, data)| data["type"] == name.as_str()),
        "{events:?}"
    );
    let deltas = |kind: &str| -> String {
        events
            .iter()
            .filter(|(name, _)| name == kind)
            .filter_map(|(_, data)| data["delta"].as_str())
            .collect()
    };
    assert_eq!(deltas("response.reasoning_text.delta"), "think");
    assert_eq!(deltas("response.output_text.delta"), "Hello");
    let output = &events.last().unwrap().1["response"]["output"];
    let kinds: Vec<&str> = output
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["reasoning", "message", "function_call"], "{output}");
    assert_eq!(output[2]["name"], "get_weather");
    assert_eq!(output[2]["arguments"], r#"{"city":"Paris"}"#);
    // Every item announced is also finished.
    let added = names
        .iter()
        .filter(|n| **n == "response.output_item.added")
        .count();
    let done = names
        .iter()
        .filter(|n| **n == "response.output_item.done")
        .count();
    assert_eq!((added, done), (3, 3), "{names:?}");
}

#[tokio::test]
async fn ollama_json_lines() {
    let dialect = ollama::OllamaStream::new("m", true, true, Instant::now());
    let text = body(stream::ndjson_response(
        state(),
        generation(),
        dialect,
        "m".into(),
        Instant::now(),
    ))
    .await;
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, pieces) = lines.split_last().unwrap();
    assert!(pieces.iter().all(|l| l["done"] == false), "{lines:?}");
    let joined = |key: &str| -> String {
        pieces
            .iter()
            .filter_map(|l| l["message"][key].as_str())
            .collect()
    };
    assert_eq!(joined("thinking"), "think");
    assert_eq!(joined("content"), "Hello");
    let calls: Vec<&Value> = pieces
        .iter()
        .filter_map(|l| l["message"].get("tool_calls"))
        .collect();
    assert_eq!(calls.len(), 1, "{lines:?}");
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    assert_eq!(
        calls[0][0]["function"]["arguments"],
        json!({"city": "Paris"})
    );
    assert_eq!(last["done"], true);
    assert_eq!(last["eval_count"], 5);
    assert_eq!(last["prompt_eval_count"], 7);
}

#[tokio::test]
async fn an_engine_failing_mid_stream_ends_every_dialect_with_its_error() {
    let openai = sse(stream::sse_response(
        state(),
        failing(),
        chat_chunks(),
        "m".into(),
        Instant::now(),
    ))
    .await;
    let (_, error) = &openai[openai.len() - 2];
    assert_eq!(error["error"]["code"], "engine_crashed", "{openai:?}");
    assert_eq!(openai.last().unwrap().1, json!("[DONE]"));

    let dialect = anthropic::MessageStream::new("msg_1", "m", true);
    let anthropic = sse(stream::sse_response(
        state(),
        failing(),
        dialect,
        "m".into(),
        Instant::now(),
    ))
    .await;
    let (name, error) = anthropic.last().unwrap();
    assert_eq!(
        (name.as_str(), &error["type"]),
        ("error", &json!("error")),
        "{anthropic:?}"
    );

    let request = ResponsesRequest::parse(br#"{"model": "m", "input": "hi"}"#).unwrap();
    let dialect = ResponseStream::new(ResponseFrame::new(&request, 0));
    let responses = sse(stream::sse_response(
        state(),
        failing(),
        dialect,
        "m".into(),
        Instant::now(),
    ))
    .await;
    let names: Vec<&str> = responses.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names
            .last()
            .is_some_and(|n| *n == "response.failed" || *n == "error"),
        "{names:?}"
    );

    let dialect = ollama::OllamaStream::new("m", true, true, Instant::now());
    let text = body(stream::ndjson_response(
        state(),
        failing(),
        dialect,
        "m".into(),
        Instant::now(),
    ))
    .await;
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("SIGKILL")),
        "{text}"
    );
}
