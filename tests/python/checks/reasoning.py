"""Suite `reasoning` (tests/tests/server.rs): reasoning kept apart under reasoning models'
templates, budgets, Harmony."""

from checks.common import *  # noqa: F401,F403


# --- reasoning: SmolLM2 served with reasoning models' templates (tests/tests/server.rs) -------
# The small model does not reason by itself; a grammar makes it write each format's markup, and
# the checks read back what the server made of it. Models: `qwen3` (Qwen3's template, the model
# opens <think> itself), `r1` (DeepSeek R1's, the prompt opens it), `harmony` (gpt-oss's, on the
# MLX twin).
THINK_LARK = 'start: "<think>\\n" /[a-z ]{5,40}/ "\\n</think>\\n\\n" /[A-Z][a-z ]{2,30}/ "."'


HARMONY_LARK = ('start: "<|channel|>analysis<|message|>" /[a-z ]{5,40}/ "<|end|><|start|>assistant'
                '<|channel|>final<|message|>" /[A-Z][a-z ]{2,30}/ "."')
HARMONY_CALL_LARK = ('start: "<|channel|>analysis<|message|>" /[a-z ]{5,40}/ "<|end|><|start|>assistant'
                     '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>'
                     '{\\"city\\": \\"Paris\\"}"')


def forced(lark):
    return {"response_format": {"type": "lark", "lark": lark}}


def no_markup(text):
    for mark in ("<think>", "</think>", "<|channel|>", "<|message|>", "<|end|>", "<|start|>"):
        assert mark not in (text or ""), (mark, text)


def reasoning_apart(model, lark):
    c = client()
    r = c.chat.completions.create(model=model, messages=MESSAGES, max_tokens=80, temperature=0.7, seed=5,
                                  extra_body=forced(lark))
    m = r.choices[0].message
    thought, answer = m.model_extra.get("reasoning_content"), m.content
    assert thought and thought.strip() and answer and answer.endswith("."), m
    assert m.model_extra.get("reasoning") == thought, m
    no_markup(thought), no_markup(answer)
    details = r.usage.completion_tokens_details
    assert 0 < details.reasoning_tokens < r.usage.completion_tokens, r.usage
    chunks = list(c.chat.completions.create(model=model, messages=MESSAGES, max_tokens=80, temperature=0.7,
                                            seed=5, stream=True, extra_body=forced(lark)))
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    streamed_thought = "".join(d.model_extra.get("reasoning_content") or "" for d in deltas)
    streamed_answer = "".join(d.content or "" for d in deltas)
    assert (streamed_thought, streamed_answer) == (thought, answer), (streamed_thought, streamed_answer, m)


@check("reasoning")
def think_tags_are_reasoning_not_content_streamed_or_not():
    reasoning_apart("qwen3", THINK_LARK)


@check("reasoning")
def harmony_analysis_is_reasoning_and_final_is_content():
    reasoning_apart("harmony", HARMONY_LARK)


@check("reasoning")
def a_harmony_call_on_the_commentary_channel_is_a_tool_call():
    c = client()
    r = c.chat.completions.create(model="harmony", messages=WEATHER_ASK, tools=[WEATHER_TOOL], max_tokens=200, extra_body=forced(HARMONY_CALL_LARK))
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"}), call
    assert choice.message.model_extra.get("reasoning_content"), choice.message
    no_markup(choice.message.content)


@check("reasoning")
def the_prompt_opened_block_and_a_budget_end_reasoning_before_a_json_answer():
    # R1's template opens <think> in the prompt: the answer's schema holds after the reasoning,
    # which the budget ends (the model never closes it by itself).
    c = client()
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
              "required": ["city"], "additionalProperties": False}
    r = c.chat.completions.create(model="r1", messages=MESSAGES, max_tokens=60, temperature=0,
                                  response_format={"type": "json_schema",
                                                   "json_schema": {"name": "a", "schema": schema}},
                                  extra_body={"thinking_budget": 8, "reasoning_effort": "medium"})
    m = r.choices[0].message
    assert m.model_extra.get("reasoning_content"), m
    assert set(json.loads(m.content)) == {"city"}, m.content
    assert 0 < r.usage.completion_tokens_details.reasoning_tokens <= 8 + 2, r.usage
    no_markup(m.content)


@check("reasoning")
def anthropic_thinking_blocks_and_budget():
    a = anthropic_client()
    m = a.messages.create(model="qwen3", max_tokens=40, messages=MESSAGES[1:], extra_body={"temperature": 0},
                          thinking={"type": "enabled", "budget_tokens": 10})
    kinds = [b.type for b in m.content]
    assert kinds[0] == "thinking" and "text" in kinds, m.content
    assert m.content[0].thinking.strip(), m.content
    text = "".join(b.text for b in m.content if b.type == "text")
    no_markup(text), no_markup(m.content[0].thinking)
    assert m.usage.output_tokens <= 40, m.usage
    with a.messages.stream(model="qwen3", max_tokens=40, messages=MESSAGES[1:], extra_body={"temperature": 0},
                           thinking={"type": "enabled", "budget_tokens": 10}) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content][0] == "thinking", final.content
    assert final.content[0].thinking == m.content[0].thinking, (final.content, m.content)
    # Thinking off: no thinking block.
    m = a.messages.create(model="qwen3", max_tokens=20, messages=MESSAGES[1:], thinking={"type": "disabled"})
    assert all(b.type != "thinking" for b in m.content), m.content


@check("reasoning")
def responses_reasoning_items_before_the_message():
    c = client()
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
              "required": ["city"], "additionalProperties": False}
    kw = dict(model="r1", input=FRANCE, max_output_tokens=60, temperature=0, reasoning={"effort": "medium"},
              text={"format": {"type": "json_schema", "name": "a", "schema": schema}},
              extra_body={"thinking_budget": 8})
    r = c.responses.create(**kw)
    kinds = [item.type for item in r.output]
    assert kinds == ["reasoning", "message"], r.output
    thought = r.output[0].content[0].text
    assert thought.strip() and set(json.loads(r.output_text)) == {"city"}, r
    no_markup(thought)
    assert 0 < r.usage.output_tokens_details.reasoning_tokens <= 8 + 2, r.usage
    with c.responses.stream(**kw) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.reasoning_text.delta" in events, events
    assert [item.type for item in final.output] == ["reasoning", "message"], final.output
    assert final.output_text == r.output_text and final.output[0].content[0].text == thought, final


@check("reasoning")
def a_budget_on_a_model_that_does_not_reason_is_a_warning_on_every_dialect():
    # args.model: SmolLM2 under its own template, which marks no reasoning.
    chat = {"model": args.model, "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
    for stream in (False, True):
        r = raw("POST", "/v1/chat/completions", json={**chat, "stream": stream, "thinking_budget": 4})
        assert r.status_code == 200 and "does not reason" in r.headers.get("x-minerva-warning", ""), r.headers
    r = raw("POST", "/v1/messages", json={"model": args.model, "max_tokens": 8, "messages": MESSAGES[1:],
                                          "thinking": {"type": "enabled", "budget_tokens": 4}})
    assert r.status_code == 200 and "does not reason" in r.headers["x-minerva-warning"], r.headers
    assert [b["type"] for b in r.json()["content"]] == ["text"], r.json()
    r = raw("POST", "/v1/responses", json={"model": args.model, "input": FRANCE, "max_output_tokens": 8,
                                           "thinking_budget": 4})
    assert r.status_code == 200 and "does not reason" in r.headers["x-minerva-warning"], r.headers
    # No budget, no warning; the same budget on a reasoning model, no warning.
    r = raw("POST", "/v1/chat/completions", json=chat)
    assert "x-minerva-warning" not in r.headers, r.headers
    r = raw("POST", "/v1/chat/completions", json={**chat, "model": "qwen3", "thinking_budget": 4})
    assert "x-minerva-warning" not in r.headers, r.headers


@check("reasoning")
def ollama_think_gives_the_thinking_field():
    import ollama
    o = ollama.Client(host=args.base_url)
    r = o.chat(model="r1", messages=MESSAGES, think=True, options={"temperature": 0, "num_predict": 12})
    assert r.message.thinking and "<think>" not in (r.message.content or ""), r.message
    parts = list(o.chat(model="r1", messages=MESSAGES, think=True, stream=True,
                        options={"temperature": 0, "num_predict": 12}))
    assert "".join(p.message.thinking or "" for p in parts) == r.message.thinking, parts
    assert "thinking" in o.show("r1").capabilities and "thinking" not in o.show(args.model).capabilities
    r = o.generate(model="r1", prompt=FRANCE, think=False, options={"temperature": 0, "num_predict": 12})
    assert not r.thinking, r


@check("reasoning")
def bad_reasoning_options_are_400s_naming_them():
    body = {"model": "qwen3", "messages": MESSAGES}
    assert_error(raw("POST", "/v1/chat/completions", json={**body, "reasoning_effort": 7}), 400,
                 param="reasoning_effort")
    assert_error(raw("POST", "/v1/chat/completions", json={**body, "thinking_budget": "lots"}), 400,
                 param="thinking_budget")
    r = raw("POST", "/v1/messages", json={"model": "qwen3", "max_tokens": 10, "messages": MESSAGES[1:],
                                           "thinking": {"type": "enabled", "budget_tokens": 20}})
    assert r.status_code == 400 and "budget_tokens" in r.text, r.text
