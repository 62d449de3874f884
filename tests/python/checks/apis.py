"""Suite `apis` (tests/tests/server.rs): tokenize, detokenize, apply-template, Anthropic's messages
and the Responses API."""

from checks.common import *  # noqa: F401,F403


@check("apis")
def tokenize_and_count_tokens_agree_with_usage():
    c = client()
    r = c.completions.create(model=args.model, prompt="The year is", max_tokens=1, temperature=0)
    tokens = raw("POST", "/tokenize", json={"model": args.model, "content": "The year is"}).json()["tokens"]
    assert len(tokens) == r.usage.prompt_tokens and all(isinstance(t, int) for t in tokens), (tokens, r.usage)
    a = anthropic_client()
    messages = [{"role": "user", "content": FRANCE}]
    counted = a.messages.count_tokens(model=args.model, system=SYSTEM, messages=messages)
    message = a.messages.create(model=args.model, max_tokens=2, system=SYSTEM, messages=messages)
    assert counted.input_tokens == message.usage.input_tokens, (counted, message.usage)
    tool = {"name": "w", "description": "weather", "input_schema": {"type": "object"}}
    r = raw("POST", "/v1/messages/count_tokens", json={"model": args.model, "messages": messages, "tools": [tool]})
    assert r.status_code == 400 and r.json()["type"] == "error", r.text
    assert_error(raw("POST", "/tokenize", json={"model": args.model}), 400)
    assert raw("POST", "/tokenize", json={"model": "nope", "content": "x"}).status_code == 404


@check("apis")
def detokenize_gives_back_the_text():
    text = "The year is 1969; café, 日本 🙂"
    tokens = raw("POST", "/tokenize", json={"model": args.model, "content": text}).json()["tokens"]
    r = raw("POST", "/detokenize", json={"model": args.model, "tokens": tokens})
    assert r.status_code == 200 and r.json() == {"content": text}, r.text
    assert_error(raw("POST", "/detokenize", json={"model": args.model, "tokens": [10_000_000]}), 400,
                 contains="outside the vocabulary")
    assert_error(raw("POST", "/detokenize", json={"model": args.model, "tokens": ["a"]}), 400)
    assert_error(raw("POST", "/detokenize", json={"model": args.model}), 400)
    assert raw("POST", "/detokenize", json={"model": "nope", "tokens": [1]}).status_code == 404


@check("apis")
def apply_template_renders_the_prompt_a_chat_is_given():
    chat = client().chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=1)
    r = raw("POST", "/apply-template", json={"model": args.model, "messages": MESSAGES})
    prompt = r.json()["prompt"]
    assert SYSTEM in prompt and FRANCE in prompt and prompt.index(SYSTEM) < prompt.index(FRANCE), prompt
    # Exactly the prompt generation reads: its tokens are the chat's prompt tokens.
    tokens = raw("POST", "/tokenize", json={"model": args.model, "content": prompt}).json()["tokens"]
    assert len(tokens) == chat.usage.prompt_tokens, (prompt, tokens, chat.usage)
    # Tools reach the template; `tool_choice: none` drops them, as for generation.
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    body = {"model": args.model, "messages": MESSAGES, "tools": [tool]}
    assert "get_weather" in raw("POST", "/apply-template", json=body).json()["prompt"]
    body["tool_choice"] = "none"
    assert raw("POST", "/apply-template", json=body).json()["prompt"] == prompt
    assert_error(raw("POST", "/apply-template", json={"model": args.model}), 400)
    assert_error(raw("POST", "/apply-template", json={"model": args.model, "prompt": "x", "messages": MESSAGES}), 400)
    assert raw("POST", "/apply-template", json={"model": "nope", "messages": MESSAGES}).status_code == 404


@check("apis")
def anthropic_messages_answer_like_chat_completions():
    chat = client().chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=24)
    a = anthropic_client()
    # Greedy by default here would need temperature, which this client no longer sends: raw JSON.
    body = {"model": args.model, "max_tokens": 24, "system": SYSTEM, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "text", "text": FRANCE}]}]}
    raw_message = raw("POST", "/v1/messages", json=body).json()
    assert raw_message["type"] == "message" and raw_message["role"] == "assistant", raw_message
    assert raw_message["content"] == [{"type": "text", "text": chat.choices[0].message.content}], raw_message
    assert raw_message["usage"]["output_tokens"] == chat.usage.completion_tokens, raw_message
    assert raw_message["stop_reason"] == ("end_turn" if chat.choices[0].finish_reason == "stop" else "max_tokens")
    # The official client: text, a stop sequence, then a stream whose text equals the final message.
    m = a.messages.create(model=args.model, max_tokens=40, system=SYSTEM, stop_sequences=["Paris"],
                          messages=[{"role": "user", "content": FRANCE},
                                    {"role": "assistant", "content": "Let me think."},
                                    {"role": "user", "content": "So?"}])
    assert m.stop_reason in ("stop_sequence", "end_turn", "max_tokens"), m
    if m.stop_reason == "stop_sequence":
        assert m.stop_sequence == "Paris" and "Paris" not in m.content[0].text, m
    with a.messages.stream(model=args.model, max_tokens=16, system=SYSTEM,
                           messages=[{"role": "user", "content": FRANCE}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and text == final.content[0].text, (text, final)
    assert final.usage.output_tokens >= 1 and final.usage.input_tokens + final.usage.cache_read_input_tokens > 10


@check("apis")
def anthropic_structured_output_and_errors():
    import jsonschema
    a = anthropic_client()
    m = a.messages.create(model=args.model, max_tokens=300, messages=CITY_PROMPT,
                          output_config={"format": {"type": "json_schema", "schema": CITY_SCHEMA}})
    jsonschema.validate(json.loads(m.content[0].text), CITY_SCHEMA)
    r = raw("POST", "/v1/messages", json={"model": args.model, "max_tokens": 5, "messages": MESSAGES[1:],
                                          "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
    assert r.status_code == 400 and r.json()["type"] == "error", r.text
    r = raw("POST", "/v1/messages", json={"model": "no-such-model", "max_tokens": 5, "messages": MESSAGES[1:]})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error", r.text
    r = raw("POST", "/v1/messages", json={"model": args.model, "messages": MESSAGES[1:]})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"], r.text


@check("apis")
def responses_api_text_stream_and_schema():
    import jsonschema
    c = client()
    chat = c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=24)
    r = c.responses.create(model=args.model, instructions=SYSTEM, input=FRANCE, temperature=0, max_output_tokens=24)
    assert r.output_text == chat.choices[0].message.content, (r.output_text, chat)
    assert r.usage.output_tokens == chat.usage.completion_tokens
    assert r.status == ("completed" if chat.choices[0].finish_reason == "stop" else "incomplete")
    items = [{"role": "developer", "content": SYSTEM},
             {"role": "user", "content": [{"type": "input_text", "text": FRANCE}]}]
    with c.responses.stream(model=args.model, input=items, temperature=0, max_output_tokens=60) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == chat.choices[0].message.content, (deltas, final)
    r = c.responses.create(model=args.model, input=CITY_PROMPT, max_output_tokens=300, temperature=1.0,
                           text={"format": {"type": "json_schema", "name": "city", "schema": CITY_SCHEMA}})
    jsonschema.validate(json.loads(r.output_text), CITY_SCHEMA)
    assert_error(raw("POST", "/v1/responses", json={"model": args.model, "input": "x",
                                                    "previous_response_id": "resp_1"}),
                 400, param="previous_response_id", contains="stores none")
    assert_error(raw("POST", "/v1/responses", json={"model": args.model, "input": "x",
                                                    "tools": [{"type": "web_search"}]}), 400)
