"""Suite `main` (tests/tests/server.rs): chat and text completions through the openai client:
answers, streams, logprobs, n, logit bias, drafting from a prediction, metrics, embeddings,
errors in OpenAI's shape."""

from checks.common import *  # noqa: F401,F403


@check("main")
def chat_non_streaming_answers_paris_with_usage():
    r = client().chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=32)
    assert r.object == "chat.completion"
    assert "Paris" in r.choices[0].message.content, r
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 27, r.usage
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 0 < r.usage.completion_tokens < 32
    # The same conversation again: its prompt comes from the prefix cache.
    again = client().chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=32)
    assert again.choices[0].message.content == r.choices[0].message.content
    assert again.usage.prompt_tokens_details.cached_tokens > 0, again.usage


@check("main")
def chat_streaming_chunks_have_openai_shape():
    chunks, text = stream_text(client(), temperature=0, max_tokens=32, stream_options={"include_usage": True})
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "Paris" in text, text
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 27
    assert chunks[-1].usage.completion_tokens > 0
    assert len({ch.id for ch in chunks}) == 1


@check("main")
def raw_stream_ends_with_done():
    with httpx.stream("POST", args.base_url + "/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {args.api_key}"} if args.api_key else {},
                      json={"model": args.model, "messages": MESSAGES, "stream": True, "max_tokens": 8}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]", data
    assert all(json.loads(d)["object"] == "chat.completion.chunk" for d in data[:-1])


@check("main")
def completions_single_list_and_stream():
    c = client()
    r = c.completions.create(model=args.model, prompt="The capital of France is", max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text.strip(), r
    assert r.usage.prompt_tokens == 5, r.usage
    r2 = c.completions.create(model=args.model, prompt=["One, two,", "Paris is in"], max_tokens=4, temperature=0)
    assert [ch.index for ch in r2.choices] == [0, 1]
    s = list(c.completions.create(model=args.model, prompt="The capital of France is", max_tokens=6,
                                  temperature=0, stream=True))
    assert "".join(ch.choices[0].text for ch in s if ch.choices) == r.choices[0].text


@check("main")
def chat_logprobs_in_openai_shape_streaming_included():
    c = client()
    r = c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=12,
                                  logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content, content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token, t
        assert t.logprob <= 0 and bytes(t.bytes).decode("utf-8", "replace") == t.token
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
    plain = c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=12)
    assert plain.choices[0].logprobs is None
    chunks = list(c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=12,
                                            logprobs=True, top_logprobs=3, stream=True))
    streamed = [t for ch in chunks if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in content], streamed


@check("main")
def completion_logprobs_in_the_legacy_shape():
    r = client().completions.create(model=args.model, prompt="The capital of France is", max_tokens=6,
                                    temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text, lp
    assert len(lp.token_logprobs) == len(lp.tokens) == len(lp.top_logprobs) == len(lp.text_offset)
    assert lp.text_offset[0] == 0 and all(len(t) == 2 for t in lp.top_logprobs), lp
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert top[token] == logprob and logprob == max(top.values()), (token, top)


@check("main")
def n_choices_and_logit_bias():
    c = client()
    r = c.chat.completions.create(model=args.model, messages=[{"role": "user", "content": "Write a poem."}], n=3,
                                  temperature=1.0, seed=4, max_tokens=16, extra_body={"ignore_eos": True})
    assert [ch.index for ch in r.choices] == [0, 1, 2], r
    assert len({ch.message.content for ch in r.choices}) > 1, r
    assert r.usage.completion_tokens == 48 and r.usage.prompt_tokens > 0, r.usage
    chunks = list(c.chat.completions.create(model=args.model, messages=MESSAGES, n=2, temperature=0, max_tokens=12,
                                            stream=True, stream_options={"include_usage": True}))
    texts = ["".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices and ch.choices[0].index == i)
             for i in range(2)]
    assert texts[0] == texts[1] and "Paris" in texts[0], texts
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].finish_reason) == 2
    # Two identical greedy choices: an even total.
    assert chunks[-1].usage.completion_tokens % 2 == 0, chunks[-1].usage
    # 7042 is " Paris" in SmolLM2's vocabulary: banned, the answer names Paris otherwise.
    banned = c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=12,
                                       logit_bias={"7042": -100}, logprobs=True)
    assert " Paris" not in [t.token for t in banned.choices[0].logprobs.content], banned


@check("main")
def models_lists_the_model_with_engine():
    models = client().models.list().data
    ours = [m for m in models if m.id == args.model]
    assert ours and ours[0].owned_by == "minerva", models
    extra = ours[0].model_extra
    assert extra["engine"] == "llama" and extra["format"] == "gguf" and extra["loaded"] is True, extra
    # Its size on disk (as Ollama's list reports it), parameters and quantization.
    tags = {m["name"]: m for m in raw("GET", "/api/tags").json()["models"]}
    assert extra["size_bytes"] == tags[args.model]["size"] and extra["size_bytes"] > 80e6, extra
    assert abs(extra["parameters"] - 134.5e6) < 0.1e6 and extra["quantization"] == "Q4_1", extra


@check("main")
def concurrent_streams_are_independent_and_correct():
    c = client()
    single = c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=24)
    expected = single.choices[0].message.content
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda _: stream_text(c, temperature=0, max_tokens=24)[1], range(8)))
    assert texts == [expected] * 8, texts


@check("main")
def dropped_stream_frees_its_slot():
    c = client()
    # Without cancellation this request would hold the model for ~4000 tokens (close to a minute).
    stream = c.chat.completions.create(model=args.model, messages=MESSAGES, stream=True, max_tokens=4000,
                                       temperature=0.7, seed=1, extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    started = time.monotonic()
    r = c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=8)
    assert r.choices[0].message.content
    assert time.monotonic() - started < 15, "the dropped generation still held the model"
    # The metrics show the queue empty again.
    deadline = time.monotonic() + 5
    while metric(f'minerva_queue_depth{{model="{args.model}"}}') != 0:
        assert time.monotonic() < deadline, "queue depth did not return to 0"
        time.sleep(0.1)


@check("main")
def a_prediction_drafts_the_answer_without_changing_it():
    c = client()
    plain = c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=24)
    answer = plain.choices[0].message.content
    predicted = c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=24,
                                          prediction={"type": "content", "content": answer})
    assert predicted.choices[0].message.content == answer, (predicted, answer)
    details = predicted.usage.completion_tokens_details
    assert details.accepted_prediction_tokens > 0, predicted.usage
    assert details.accepted_prediction_tokens < predicted.usage.completion_tokens, predicted.usage
    assert plain.usage.completion_tokens_details.accepted_prediction_tokens == 0, plain.usage
    r = raw("POST", "/v1/chat/completions", json={"model": args.model, "messages": MESSAGES,
                                                  "prediction": {"type": "guess", "content": "x"}})
    assert_error(r, 400, param="prediction.type")


@check("main")
def metrics_count_requests_tokens_and_latency():
    client().chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=8)
    list(client().chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=8,
                                          stream=True))
    m = f'{{model="{args.model}"}}'
    assert metric(f"minerva_completion_tokens_total{m}") >= 14
    assert metric(f"minerva_prompt_tokens_total{m}") >= 54
    assert metric(f"minerva_time_to_first_token_seconds_count{m}") >= 1
    assert metric(f"minerva_time_per_output_token_seconds_count{m}") >= 1
    assert metric(f"minerva_model_loaded{m}") == 1
    assert metric('minerva_http_requests_total{route="/v1/chat/completions",status="200"}') >= 2


@check("main")
def embeddings_have_model_width_and_meaning():
    texts = ["The capital of France is Paris.", "Paris is the capital city of France.", "Bananas are yellow fruit."]
    r = client().embeddings.create(model=args.model, input=texts)
    vectors = [d.embedding for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2]
    assert all(len(v) == 576 for v in vectors), [len(v) for v in vectors]  # SmolLM2-135M: n_embd 576
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-3 for v in vectors)
    cos = lambda a, b: sum(x * y for x, y in zip(a, b))
    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]), "paraphrases should be closer"
    assert r.usage.prompt_tokens > 0
    plain = raw("POST", "/v1/embeddings", json={"model": args.model, "input": texts[0], "encoding_format": "float"}).json()
    assert max(abs(a - b) for a, b in zip(plain["data"][0]["embedding"], vectors[0])) < 1e-5
    assert_error(raw("POST", "/v1/embeddings", json={"model": args.model, "input": "x", "dimensions": 8}), 400,
                 param="dimensions")


@check("main")
def errors_have_openai_shape_and_status():
    assert_error(raw("POST", "/v1/chat/completions", content=b"{not json"), 400, contains="not valid JSON")
    assert_error(raw("POST", "/v1/chat/completions",
                     json={"model": args.model, "messages": MESSAGES, "temperature": "hot"}), 400, param="temperature")
    assert_error(raw("POST", "/v1/chat/completions", json={"model": args.model}), 400, contains="messages")
    assert_error(raw("POST", "/v1/chat/completions", json={"model": "no-such-model", "messages": MESSAGES}), 404,
                 param="model")
    assert_error(raw("POST", "/v1/chat/completions",
                     json={"model": args.model, "messages": MESSAGES, "tools": [{"type": "function"}]}), 400,
                 param="tools[0]")
    assert_error(raw("POST", "/v1/chat/completions",
                     json={"model": args.model, "messages": MESSAGES, "prediction": {"type": "content"}}),
                 400, param="prediction")
    assert_error(raw("POST", "/v1/chat/completions", json={"model": args.model, "messages": MESSAGES, "n": 9}),
                 400, param="n")
    assert_error(raw("POST", "/v1/chat/completions",
                     json={"model": args.model, "messages": MESSAGES, "frobnicate": 1}), 400, param="frobnicate")
    assert_error(raw("POST", "/v1/chat/completions",
                     json={"model": args.model, "messages": MESSAGES, "top_p": 7}), 400, param="top_p")
    assert_error(raw("POST", "/v1/chat/completions",
                     json={"model": args.model, "messages": MESSAGES, "temperature": -1}), 400, param="temperature")
    # OpenAI refuses a user message without content.
    assert_error(raw("POST", "/v1/chat/completions",
                     json={"model": args.model, "messages": [{"role": "user", "content": None}]}), 400,
                 param="messages[0].content")
    chat = lambda **kw: raw("POST", "/v1/chat/completions", json={"model": args.model, "messages": MESSAGES, **kw})
    assert_error(chat(logprobs=True, top_logprobs=21), 400, param="top_logprobs")
    assert_error(chat(top_logprobs=2), 400, param="top_logprobs")
    assert_error(chat(logit_bias={"49152": 5}), 400, param="logit_bias", contains="49152")
    assert_error(chat(logit_bias={"abc": 5}), 400, param="logit_bias", contains="abc")
    assert_error(chat(logit_bias={"5": 101}), 400, param="logit_bias")
    assert_error(raw("POST", "/v1/completions", json={"model": args.model, "prompt": "x", "logprobs": 21}), 400,
                 param="logprobs")
    long_prompt = "Paris " * 3000
    assert_error(raw("POST", "/v1/chat/completions",
                     json={"model": args.model, "messages": [{"role": "user", "content": long_prompt}]}),
                 400, contains="context holds")
    assert_error(raw("POST", "/v1/chat/completions", content=b"x" * (5 << 20),
                     headers={"content-type": "application/json"}), 413)
    assert_error(raw("GET", "/v1/nothing-here"), 404)
    # The server still answers after all of that.
    assert raw("GET", "/health").json() == {"status": "ok"}
    # The openai client raises its typed errors.
    try:
        client().chat.completions.create(model="no-such-model", messages=MESSAGES)
        raise AssertionError("expected NotFoundError")
    except openai.NotFoundError:
        pass
