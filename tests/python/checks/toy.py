"""Suite `toy` (tests/tests/toy_engine.rs): a third engine (an evaluator over a fixed table) through
every dialect."""

from checks.common import *  # noqa: F401,F403


@check("toy")
def a_toy_engine_answers_through_every_dialect():
    # tests/tests/toy_engine.rs: after "assistant: " its table spells "minerva!", then ends.
    c = client()
    r = c.chat.completions.create(model=args.model, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "minerva!", r
    assert r.choices[0].finish_reason == "stop", r
    assert r.usage.prompt_tokens == len("user: hi\nassistant: "), r.usage
    assert r.usage.completion_tokens == len("minerva!") + 1, r.usage
    chunks, text = stream_text(c)
    assert text == "minerva!", chunks
    r = c.completions.create(model=args.model, prompt="say", max_tokens=4, n=2, logprobs=2)
    assert [ch.text for ch in r.choices] == ["mine", "mine"], r
    assert all(ch.finish_reason == "length" for ch in r.choices), r
    assert r.choices[0].logprobs.tokens == list("mine"), r.choices[0].logprobs
    m = anthropic_client().messages.create(model=args.model, max_tokens=32, messages=[{"role": "user", "content": "hi"}])
    assert m.content[0].text == "minerva!" and m.stop_reason == "end_turn", m
    tokens = raw("POST", "/tokenize", json={"model": args.model, "content": "abc"}).json()
    assert tokens["tokens"] == [97, 98, 99], tokens
    models = [m.id for m in c.models.list().data]
    assert "toy" in models, models
