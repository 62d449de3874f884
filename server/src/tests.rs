//! The dialects side by side, without a model: the same conversation, tools, schema and
//! sampling sent through OpenAI's chat, Anthropic's Messages and OpenAI's Responses conversions
//! give the same runtime request, and the same mistakes the same refusals (each naming the
//! field in its dialect's spelling).

use minerva_runtime::{
    ChatMessage, Constraint, GenerationRequest, Input, Role, SamplingParams, Tool, ToolCall,
};
use serde_json::{json, Value};

use crate::anthropic::MessagesRequest;
use crate::error::ApiError;
use crate::openai::{self, ChatRequest};
use crate::responses::ResponsesRequest;

fn bytes(body: &Value) -> Vec<u8> {
    serde_json::to_vec(body).unwrap()
}

/// `body` plus the fields every request of the dialect needs.
fn with(base: Value, body: Value) -> Value {
    let mut all = base;
    all.as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    all
}

fn chat(body: Value) -> Result<GenerationRequest, ApiError> {
    let body = with(json!({"model": "m"}), body);
    let (request, options) = openai::parse::<ChatRequest>(&bytes(&body), ChatRequest::FIELDS)?;
    request.to_request(&options)
}

fn messages(body: Value) -> Result<GenerationRequest, ApiError> {
    let body = with(json!({"model": "m", "max_tokens": 16}), body);
    MessagesRequest::parse(&bytes(&body))?.to_request()
}

fn responses(body: Value) -> Result<GenerationRequest, ApiError> {
    let body = with(json!({"model": "m"}), body);
    ResponsesRequest::parse(&bytes(&body))?.to_request()
}

fn conversation(request: &GenerationRequest) -> &[ChatMessage] {
    match &request.input {
        Input::Chat(messages) => messages,
        other => panic!("not a chat: {other:?}"),
    }
}

fn refused(result: Result<GenerationRequest, ApiError>) -> (String, Option<String>) {
    let error = result.expect_err("refused");
    (error.message, error.param)
}

#[test]
fn text_parts_are_one_message_joined_by_newlines_in_every_dialect() {
    let parts = |kind: &str| json!([{"type": kind, "text": "a"}, {"type": kind, "text": "b"}]);
    let requests = [
        chat(json!({"messages": [{"role": "user", "content": parts("text")}]})),
        messages(json!({"messages": [{"role": "user", "content": parts("text")}]})),
        responses(json!({"input": [{"role": "user", "content": parts("input_text")}]})),
    ];
    for request in requests {
        let request = request.unwrap();
        assert_eq!(
            conversation(&request),
            [ChatMessage::new(Role::User, "a\nb")]
        );
    }
}

#[test]
fn tools_convert_alike_and_bad_ones_are_refused_alike() {
    let parameters = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let user = json!([{"role": "user", "content": "weather?"}]);
    let chat_tool = |name: &str, parameters: &Value| json!({"type": "function", "function": {"name": name, "description": "d", "parameters": parameters}});
    let messages_tool = |name: &str, schema: &Value| json!({"name": name, "description": "d", "input_schema": schema});
    let responses_tool = |name: &str, parameters: &Value| json!({"type": "function", "name": name, "description": "d", "parameters": parameters});
    let expected = vec![Tool {
        name: "get_weather".into(),
        description: Some("d".into()),
        parameters: parameters.clone(),
    }];
    let requests = [
        chat(json!({"messages": user, "tools": [chat_tool("get_weather", &parameters)]})),
        messages(json!({"messages": user, "tools": [messages_tool("get_weather", &parameters)]})),
        responses(
            json!({"input": "weather?", "tools": [responses_tool("get_weather", &parameters)]}),
        ),
    ];
    for request in requests {
        assert_eq!(request.unwrap().tools, expected);
    }

    let not_a_schema = json!("a string");
    for (result, param) in [
        (
            chat(json!({"messages": user, "tools": [chat_tool("get weather", &parameters)]})),
            "tools[0].function.name",
        ),
        (
            messages(
                json!({"messages": user, "tools": [messages_tool("get weather", &parameters)]}),
            ),
            "tools.0.name",
        ),
        (
            responses(json!({"input": "x", "tools": [responses_tool("get weather", &parameters)]})),
            "tools[0].name",
        ),
        (
            chat(json!({"messages": user, "tools": [chat_tool("f", &not_a_schema)]})),
            "tools[0].function.parameters",
        ),
        (
            messages(json!({"messages": user, "tools": [messages_tool("f", &not_a_schema)]})),
            "tools.0.input_schema",
        ),
        (
            responses(json!({"input": "x", "tools": [responses_tool("f", &not_a_schema)]})),
            "tools[0].parameters",
        ),
    ] {
        let (message, at) = refused(result);
        assert_eq!(at.as_deref(), Some(param), "{message}");
    }
}

#[test]
fn json_schemas_follow_one_rule() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let user = json!([{"role": "user", "content": "city?"}]);
    let chat_format = |name: &str| json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": true}});
    let responses_format =
        |name: &str| json!({"format": {"type": "json_schema", "name": name, "schema": schema}});
    let requests = [
        chat(json!({"messages": user, "response_format": chat_format("city")})),
        messages(
            json!({"messages": user, "output_config": {"format": {"type": "json_schema", "schema": schema}}}),
        ),
        responses(json!({"input": "city?", "text": responses_format("city")})),
    ];
    for request in requests {
        assert_eq!(
            request.unwrap().constraint,
            Some(Constraint::JsonSchema(schema.clone()))
        );
    }
    let (message, param) = refused(chat(
        json!({"messages": user, "response_format": chat_format("a city")}),
    ));
    assert_eq!(param.as_deref(), Some("response_format"), "{message}");
    let (message, param) = refused(responses(
        json!({"input": "x", "text": responses_format("a city")}),
    ));
    assert_eq!(param.as_deref(), Some("text.format"), "{message}");
    let (message, _) = refused(messages(json!({
        "messages": user,
        "output_config": {"format": {"type": "json_schema", "schema": "not a schema"}}
    })));
    assert!(message.contains("output_config.format.schema"), "{message}");
}

#[test]
fn sampling_maps_the_same_fields_the_same_way() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let expected = SamplingParams {
        temperature: Some(0.5),
        top_p: Some(0.9),
        ..Default::default()
    };
    let requests = [
        chat(json!({"messages": user, "temperature": 0.5, "top_p": 0.9})),
        messages(json!({"messages": user, "temperature": 0.5, "top_p": 0.9})),
        responses(json!({"input": "hi", "temperature": 0.5, "top_p": 0.9})),
    ];
    for request in requests {
        assert_eq!(request.unwrap().sampling, expected);
    }
}

#[test]
fn a_tool_round_trip_is_the_same_conversation_in_every_dialect() {
    let call = ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    };
    let chat_history = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": call.arguments}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"}
    ]);
    let messages_history = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18 degrees"}
        ]}
    ]);
    let responses_history = json!([
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": "call_1", "output": "18 degrees"}
    ]);
    let mut assistant = ChatMessage::new(Role::Assistant, "");
    assistant.tool_calls = vec![call.clone()];
    let mut result = ChatMessage::new(Role::Tool, "18 degrees");
    result.tool_call_id = Some("call_1".into());
    let expected = [ChatMessage::new(Role::User, "weather?"), assistant, result];
    let requests = [
        chat(json!({"messages": chat_history})),
        messages(json!({"messages": messages_history})),
        responses(json!({"input": responses_history})),
    ];
    for request in requests {
        assert_eq!(conversation(&request.unwrap()), expected);
    }
}

#[test]
fn unknown_fields_are_refused_by_name_in_every_dialect() {
    let user = json!([{"role": "user", "content": "hi"}]);
    for result in [
        chat(json!({"messages": user, "frobnicate": 1})),
        messages(json!({"messages": user, "frobnicate": 1})),
        responses(json!({"input": "hi", "frobnicate": 1})),
    ] {
        let (message, _) = refused(result);
        assert!(message.contains("frobnicate"), "{message}");
    }
}

#[test]
fn chat_template_kwargs_and_reasoning_effort_reach_the_request() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let request = chat(json!({
        "messages": user,
        "chat_template_kwargs": {"enable_thinking": false},
        "reasoning_effort": "high"
    }))
    .unwrap();
    assert_eq!(
        Value::Object(request.chat_template_kwargs),
        json!({"enable_thinking": false, "reasoning_effort": "high", "thinking": true})
    );
    for (body, param) in [
        (
            json!({"messages": user, "chat_template_kwargs": "no"}),
            "chat_template_kwargs",
        ),
        (
            json!({"messages": user, "reasoning_effort": 3}),
            "reasoning_effort",
        ),
        (
            json!({"messages": user, "reasoning_effort": "extreme"}),
            "reasoning_effort",
        ),
    ] {
        let (message, at) = refused(chat(body));
        assert_eq!(at.as_deref(), Some(param), "{message}");
    }
    let history = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello.", "reasoning_content": "A greeting."},
        {"role": "user", "content": "bye"}
    ]);
    let request = chat(json!({"messages": history})).unwrap();
    assert_eq!(
        conversation(&request)[1].reasoning.as_deref(),
        Some("A greeting.")
    );
}

#[test]
fn reasoning_switches_and_budgets_are_the_same_in_every_dialect() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let kwargs = |r: GenerationRequest| Value::Object(r.chat_template_kwargs);
    let off = json!({"enable_thinking": false, "thinking": false, "reasoning_effort": "none"});
    assert_eq!(
        kwargs(chat(json!({"messages": user, "reasoning_effort": "none"})).unwrap()),
        off
    );
    assert_eq!(
        kwargs(responses(json!({"input": "hi", "reasoning": {"effort": "none"}})).unwrap()),
        off
    );
    let anthropic = messages(json!({"messages": user, "thinking": {"type": "disabled"}}));
    assert_eq!(
        kwargs(anthropic.unwrap()),
        json!({"enable_thinking": false, "thinking": false})
    );
    let budgeted = messages(json!({
        "messages": user, "max_tokens": 64, "thinking": {"type": "enabled", "budget_tokens": 32}
    }))
    .unwrap();
    assert_eq!(budgeted.reasoning_budget, Some(32));
    assert_eq!(
        budgeted.chat_template_kwargs["enable_thinking"],
        json!(true)
    );
    for (result, param) in [
        (
            responses(json!({"input": "hi", "reasoning": {"effort": "extreme"}})),
            "reasoning.effort",
        ),
        (
            messages(
                json!({"messages": user, "thinking": {"type": "enabled", "budget_tokens": 99}}),
            ),
            "thinking.budget_tokens",
        ),
        (
            messages(json!({"messages": user, "thinking": {"type": "sometimes"}})),
            "thinking.type",
        ),
    ] {
        let (message, at) = refused(result);
        assert_eq!(at.as_deref(), Some(param), "{message}");
    }
    // Earlier thinking comes back as the assistant turn's reasoning.
    let history = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "A greeting.", "signature": ""},
            {"type": "text", "text": "Hello."}
        ]},
        {"role": "user", "content": "bye"}
    ]);
    let request = messages(json!({"messages": history})).unwrap();
    let turn = &conversation(&request)[1];
    assert_eq!(
        (turn.content.as_str(), turn.reasoning.as_deref()),
        ("Hello.", Some("A greeting."))
    );
}
