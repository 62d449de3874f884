"""Suite `limits` (tests/tests/server.rs): max_tokens_limit on every dialect, request_timeout, huge
grammars served or refused while streams run."""

from checks.common import *  # noqa: F401,F403


@check("limits")
def max_tokens_limit_caps_every_dialect():
    # The server runs with max_tokens_limit = 6: asking for more, or for nothing, gets 6 and `length`.
    c = client()
    story = "Write a long story about a dragon."
    messages = [{"role": "user", "content": story}]
    for asked in (100, None):
        kw = {} if asked is None else {"max_tokens": asked}
        r = c.chat.completions.create(model=args.model, messages=messages, temperature=0, **kw)
        assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (6, "length"), r
    r = c.completions.create(model=args.model, prompt="Once upon a time", max_tokens=100, temperature=0)
    assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (6, "length"), r
    r = c.responses.create(model=args.model, input=story, temperature=0, max_output_tokens=100)
    assert (r.usage.output_tokens, r.status) == (6, "incomplete"), r
    m = anthropic_client().messages.create(model=args.model, max_tokens=100, messages=messages)
    assert (m.usage.output_tokens, m.stop_reason) == (6, "max_tokens"), m
    # Within the limit, a request's own max_tokens holds.
    r = c.chat.completions.create(model=args.model, messages=messages, temperature=0, max_tokens=3)
    assert r.usage.completion_tokens == 3, r


@check("limits")
def request_timeout_stops_a_long_generation_with_504():
    # Model `slow`: request_timeout = 2 and no max_tokens limit of its own worth hitting.
    body = {"model": "slow", "messages": MESSAGES, "max_tokens": 100000, "ignore_eos": True}
    started = time.time()
    r = raw("POST", "/v1/chat/completions", json=body)
    assert_error(r, 504, contains="request_timeout")
    assert r.json()["error"]["code"] == "request_timeout", r.text
    assert time.time() - started < 30, time.time() - started
    # Streaming: the chunks so far, then an error event.
    with httpx.stream("POST", args.base_url + "/v1/chat/completions", json={**body, "stream": True},
                      timeout=60) as s:
        assert s.status_code == 200
        lines = [l for l in s.iter_lines() if l.startswith("data: ")]
    assert any('"content"' in l for l in lines), lines[:3]
    assert any("request_timeout" in l for l in lines[-3:]), lines[-3:]
    # The model is free again: a short request answers.
    r = client().chat.completions.create(model="slow", messages=MESSAGES, temperature=0, max_tokens=4)
    assert r.usage.completion_tokens == 4, r


@check("limits")
def huge_grammars_are_served_or_refused_by_name_while_streams_run():
    import threading
    words = lambda n: "start: " + " | ".join(f'"w{i}"' for i in range(n))
    texts = []

    def stream():
        _, text = stream_text(client(), temperature=0, max_tokens=6)
        texts.append(text)

    beside = [threading.Thread(target=stream) for _ in range(2)]
    for t in beside:
        t.start()
    r = client().chat.completions.create(model=args.model, messages=MESSAGES, max_tokens=5,
                                         extra_body={"response_format": {"type": "lark", "lark": words(5000)}})
    assert r.choices[0].message.content.startswith("w"), r
    over = raw("POST", "/v1/chat/completions", json={
        "model": args.model, "messages": MESSAGES,
        "response_format": {"type": "lark", "lark": words(30000)}})
    assert_error(over, 400, param="response_format", contains="over the limit")
    deep = raw("POST", "/v1/chat/completions", json={
        "model": args.model, "messages": MESSAGES,
        "response_format": {"type": "regex", "regex": "(" * 500 + "a" + ")" * 500}})
    assert_error(deep, 400, param="response_format", contains="levels deep")
    for t in beside:
        t.join(timeout=120)
    assert len(texts) == 2 and all(texts), texts
