"""Suite `ollama` (tests/tests/server.rs): Ollama's API through the official ollama client and
LangChain's `ChatOllama` and `OllamaEmbeddings`."""

from checks.common import *  # noqa: F401,F403


@check("ollama")
def ollama_chat_streamed_and_not_answers_like_chat_completions():
    o = ollama_client()
    r = o.chat(model=args.model, messages=MESSAGES, options={"temperature": 0, "num_predict": 24}, stream=False)
    reference = client().chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=24)
    assert r.message.content == reference.choices[0].message.content, (r.message, reference)
    assert r.done and r.done_reason in ("stop", "length"), r
    assert r.eval_count == reference.usage.completion_tokens and r.prompt_eval_count > 0, r
    assert r.total_duration >= r.eval_duration > 0, r
    parts = list(o.chat(model=args.model, messages=MESSAGES, options={"temperature": 0, "num_predict": 24},
                        stream=True))
    assert "".join(p.message.content for p in parts) == r.message.content, parts
    assert parts[-1].done and not any(p.done for p in parts[:-1]), parts
    # generate: the prompt through the template, or raw.
    g = o.generate(model=args.model, prompt=FRANCE, system=SYSTEM, options={"temperature": 0, "num_predict": 24})
    assert g.response == r.message.content, (g, r)
    g = o.generate(model=args.model, prompt="The year is", raw=True, options={"temperature": 0, "num_predict": 4})
    assert g.response and g.eval_count == 4, g


@check("ollama")
def ollama_structured_output_tools_and_options():
    o = ollama_client()
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
              "required": ["city"], "additionalProperties": False}
    r = o.chat(model=args.model, messages=MESSAGES, format=schema, options={"temperature": 0})
    assert set(json.loads(r.message.content)) == {"city"}, r.message
    r = o.chat(model=args.model, messages=MESSAGES, format="json", options={"num_predict": 40, "seed": 1})
    assert r.message.content.startswith("{"), r.message
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                           "required": ["city"]}}}
    # SmolLM2 calls the tool when asked in the tagged format it was shown; stop strings and
    # seeds reach the core.
    ask = [{"role": "user", "content": "What is the weather in Paris? Call get_weather."}]
    r = o.chat(model=args.model, messages=ask, tools=[tool], options={"temperature": 0, "num_predict": 60})
    for call in r.message.tool_calls or []:
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict), call
    # A call and its result in the history, as Ollama's clients send them (no call ids).
    called = {"role": "assistant", "content": "",
              "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    history = ask + [called, {"role": "tool", "content": "18 degrees and sunny", "tool_name": "get_weather"}]
    follow = o.chat(model=args.model, messages=history, tools=[tool], options={"temperature": 0, "num_predict": 30})
    assert follow.message.content and "<tool_call>" not in follow.message.content, follow
    r = o.chat(model=args.model, messages=MESSAGES, options={"temperature": 0, "stop": ["Paris"]})
    assert "Paris" not in r.message.content, r.message
    a = o.chat(model=args.model, messages=MESSAGES, options={"temperature": 0.9, "seed": 7, "num_predict": 12})
    b = o.chat(model=args.model, messages=MESSAGES, options={"temperature": 0.9, "seed": 7, "num_predict": 12})
    assert a.message.content == b.message.content, (a.message, b.message)


@check("ollama")
def ollama_models_show_embeddings_and_errors():
    import ollama
    o = ollama_client()
    listed = {m.model: m for m in o.list().models}
    assert args.model in listed, listed
    assert listed[args.model].details.parameter_size == "134.5M", listed[args.model].details
    assert listed[args.model].modified_at.year >= 2024, listed[args.model]
    loaded = [m.model for m in o.ps().models]
    assert args.model in loaded, loaded
    shown = o.show(args.model)
    assert "completion" in shown.capabilities and shown.details.format == "gguf", shown
    e = o.embed(model=args.model, input=["a cat", "a dog"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) > 0, e
    one = o.embeddings(model=args.model, prompt="a cat")
    assert abs(sum(x * y for x, y in zip(one.embedding, e.embeddings[0])) - 1) < 1e-3, one
    assert raw("GET", "/api/version").json()["version"], "version"
    for call, status in [(lambda: o.chat(model="nope", messages=MESSAGES), 404),
                         (lambda: o.chat(model=args.model, messages=[{"role": "user", "content": "x",
                                                                       "images": ["aGVsbG8="]}]), 400),
                         (lambda: o.pull("not a repo"), 400),
                         (lambda: o.copy(args.model, "other"), 501)]:
        try:
            call()
            raise AssertionError("expected an error")
        except ollama.ResponseError as err:
            assert err.status_code == status and err.error, (err.status_code, err.error)
    r = raw("POST", "/api/chat", json={"model": args.model, "messages": MESSAGES, "options": {"top_k": "many"}})
    assert r.status_code == 400 and "options.top_k" in r.json()["error"], r.text


@check("ollama")
def langchain_chat_ollama_chats_streams_structures_calls_tools_and_embeds():
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
    from langchain_ollama import ChatOllama, OllamaEmbeddings

    chat = ChatOllama(model=args.model, base_url=args.base_url, temperature=0, num_predict=24)
    asked = [SystemMessage(SYSTEM), HumanMessage(FRANCE)]
    answer = chat.invoke(asked)
    reference = client().chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=24)
    assert answer.content == reference.choices[0].message.content, (answer, reference)
    assert answer.usage_metadata["output_tokens"] == reference.usage.completion_tokens, answer.usage_metadata
    assert "".join(chunk.content for chunk in chat.stream(asked)) == answer.content
    # Structured output goes through Ollama's `format` as a JSON schema.
    schema = {"title": "capital", "type": "object", "required": ["city"], "additionalProperties": False,
              "properties": {"city": {"type": "string", "maxLength": 20}}}
    structured = ChatOllama(model=args.model, base_url=args.base_url, temperature=0).with_structured_output(
        schema, method="json_schema")
    city = structured.invoke([HumanMessage("Name the capital of France.")])
    assert set(city) == {"city"} and isinstance(city["city"], str), city
    # Tools: calls come back as LangChain tool calls; a call and its result in the history are
    # answered in text.
    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                       "required": ["city"]}}}
    tools = ChatOllama(model=args.model, base_url=args.base_url, temperature=0, num_predict=60).bind_tools([weather])
    ask = HumanMessage("What is the weather in Paris? Call get_weather.")
    called = tools.invoke([ask])
    for call in called.tool_calls:
        assert call["name"] == "get_weather" and isinstance(call["args"], dict), called
    history = [ask, AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}]),
               ToolMessage("18 degrees and sunny", tool_call_id="call_1")]
    follow = tools.invoke(history)
    assert (follow.content or follow.tool_calls) and "<tool_call>" not in follow.content, follow
    # Embeddings equal Ollama's /api/embed's.
    vector = OllamaEmbeddings(model=args.model, base_url=args.base_url).embed_query("Paris is in France")
    direct = ollama_client().embed(model=args.model, input="Paris is in France").embeddings[0]
    assert len(vector) == len(direct) and max(abs(a - b) for a, b in zip(vector, direct)) < 1e-5
