"""Suite `tools` (tests/tests/server.rs): tool calls on every dialect: required calls, round trips,
bad tool requests."""

from checks.common import *  # noqa: F401,F403


TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}},
                   "required": ["zone"], "additionalProperties": False}}}
ANTHROPIC_WEATHER = {"name": "get_weather", "description": "Current weather in a city",
                     "input_schema": WEATHER_TOOL["function"]["parameters"]}


@check("tools")
def required_call_is_valid_and_streams_the_same():
    import jsonschema
    c = client()
    kw = dict(model=args.model, messages=WEATHER_ASK, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required",
              parallel_tool_calls=False, temperature=0, max_tokens=120)
    r = c.chat.completions.create(**kw)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function", call
    tool = next(t for t in (WEATHER_TOOL, TIME_TOOL) if t["function"]["name"] == call.function.name)
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
    # Streamed: the tool_calls deltas put together are the same call; no markup in content.
    calls, content, finish = {}, "", None
    for chunk in c.chat.completions.create(stream=True, **kw):
        for ch in chunk.choices:
            content += ch.delta.content or ""
            finish = ch.finish_reason or finish
            for d in ch.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"name": "", "arguments": ""})
                entry["name"] += d.function.name or ""
                entry["arguments"] += d.function.arguments or ""
    assert content == "" and finish == "tool_calls", (content, finish)
    assert calls == {0: {"name": call.function.name, "arguments": call.function.arguments}}, calls
    # A named function is the one called.
    r = c.chat.completions.create(**{**kw, "tool_choice": {"type": "function", "function": {"name": "get_time"}}})
    [call] = r.choices[0].message.tool_calls
    assert call.function.name == "get_time", call
    jsonschema.validate(json.loads(call.function.arguments), TIME_TOOL["function"]["parameters"])


@check("tools")
def a_full_tool_round_trip_through_the_client():
    c = client()
    first = c.chat.completions.create(model=args.model, messages=WEATHER_ASK, tools=[WEATHER_TOOL],
                                      tool_choice="required", parallel_tool_calls=False, temperature=0,
                                      max_tokens=120)
    call = first.choices[0].message.tool_calls[0]
    history = WEATHER_ASK + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "sunny"})},
    ]
    final = c.chat.completions.create(model=args.model, messages=history, tools=[WEATHER_TOOL],
                                      tool_choice="none", temperature=0, max_tokens=60)
    text = final.choices[0].message.content
    assert text and "<tool_call>" not in text and final.choices[0].message.tool_calls is None, final
    # With the model free to choose, whatever it does, no call markup reaches the content.
    for stream in (False, True):
        r = c.chat.completions.create(model=args.model, messages=history, tools=[WEATHER_TOOL], stream=stream,
                                      temperature=0.8, seed=5, max_tokens=80)
        chunks = list(r) if stream else [r]
        for chunk in chunks:
            for ch in chunk.choices:
                text = ch.delta.content if stream else ch.message.content
                assert "<tool_call>" not in (text or "") and "</tool_call>" not in (text or ""), chunk


@check("tools")
def bad_tool_requests_are_400s_naming_the_field():
    def chat(**body):
        return raw("POST", "/v1/chat/completions", json={"model": args.model, "messages": WEATHER_ASK, **body})

    assert_error(chat(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}), 400,
                 param="tool_choice", contains="nope")
    assert_error(chat(tool_choice="required"), 400, param="tool_choice")
    assert_error(chat(tools=[{"type": "retrieval"}]), 400)
    bad_history = WEATHER_ASK + [{"role": "tool", "content": "18 degrees"}]
    assert_error(raw("POST", "/v1/chat/completions", json={"model": args.model, "messages": bad_history}), 400,
                 param="messages[1].tool_call_id")
    assert_error(chat(tools=[WEATHER_TOOL], tool_choice="required", response_format={"type": "json_object"}), 400,
                 param="tool_choice")


@check("tools")
def anthropic_tool_use_round_trip_streamed_and_not():
    import jsonschema
    a = anthropic_client()
    # Greedy, so that the streamed call can be compared (this client sends no temperature).
    kw = dict(model=args.model, max_tokens=120, messages=WEATHER_ASK, tools=[ANTHROPIC_WEATHER],
              tool_choice={"type": "any", "disable_parallel_tool_use": True}, extra_body={"temperature": 0})
    m = a.messages.create(**kw)
    assert m.stop_reason == "tool_use", m
    [use] = [b for b in m.content if b.type == "tool_use"]
    assert use.name == "get_weather", use
    jsonschema.validate(use.input, ANTHROPIC_WEATHER["input_schema"])
    assert all("<tool_call>" not in b.text for b in m.content if b.type == "text"), m
    with a.messages.stream(**kw) as stream:
        final = stream.get_final_message()
    [streamed] = [b for b in final.content if b.type == "tool_use"]
    assert (streamed.name, streamed.input) == (use.name, use.input) and final.stop_reason == "tool_use", final
    history = WEATHER_ASK + [
        {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": json.dumps({"temperature": 18, "sky": "sunny"})}]},
    ]
    answer = a.messages.create(model=args.model, max_tokens=60, messages=history, tools=[ANTHROPIC_WEATHER],
                               tool_choice={"type": "none"})
    assert answer.stop_reason in ("end_turn", "max_tokens") and answer.content[0].text, answer


@check("tools")
def responses_function_call_round_trip_streamed_and_not():
    import jsonschema
    c = client()
    tool = {"type": "function", **WEATHER_TOOL["function"]}
    kw = dict(model=args.model, input="What is the weather in Paris?", tools=[tool], tool_choice="required",
              parallel_tool_calls=False, temperature=0, max_output_tokens=120)
    r = c.responses.create(**kw)
    [call] = [item for item in r.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_"), call
    jsonschema.validate(json.loads(call.arguments), tool["parameters"])
    with c.responses.stream(**kw) as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    [streamed] = [item for item in final.output if item.type == "function_call"]
    assert "".join(deltas) == streamed.arguments == call.arguments, (deltas, streamed, call)
    # Items are announced as they begin: a call alone is the whole output, streamed or not.
    assert [item.type for item in final.output] == [item.type for item in r.output] == ["function_call"], \
        (final.output, r.output)
    follow = c.responses.create(
        model=args.model, tools=[tool], tool_choice="none", temperature=0, max_output_tokens=60,
        input=[{"role": "user", "content": "What is the weather in Paris?"},
               {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
               {"type": "function_call_output", "call_id": call.call_id,
                "output": json.dumps({"temperature": 18, "sky": "sunny"})}])
    assert follow.output_text and "<tool_call>" not in follow.output_text, follow
