"""Suite `speculative` (tests/tests/runners.rs): a draft model in the runner; a quantized KV cache
in the estimate."""

from checks.common import *  # noqa: F401,F403


@check("speculative")
def a_draft_model_in_the_runner_keeps_answers_and_drafts_concurrently():
    # Configured: `--model` (the GGUF drafting with its MLX twin, in its runner process) and
    # `--victim` (the same GGUF without a draft).
    drafted, plain = model_entry(args.model), model_entry(args.victim)
    assert drafted["estimated_memory_bytes"] > plain["estimated_memory_bytes"] + 50e6, (drafted, plain)
    c = client()
    alone = c.chat.completions.create(model=args.victim, messages=MESSAGES, max_tokens=24, temperature=0)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(
            lambda _: c.chat.completions.create(model=args.model, messages=MESSAGES, max_tokens=24,
                                                temperature=0),
            range(4)))
    for a in answers:
        assert a.choices[0].message.content == alone.choices[0].message.content, (a, alone)
        details = a.usage.completion_tokens_details
        assert details.accepted_prediction_tokens > 0, a.usage
    print(f"       4 concurrent answers equal the plain one; drafts kept "
          f"{[a.usage.completion_tokens_details.accepted_prediction_tokens for a in answers]}")


@check("speculative")
def a_quantized_kv_cache_shows_in_the_memory_estimate_and_answers():
    # Configured: `--twin` is the GGUF with kv_cache_type = "q8_0".
    quantized, plain = model_entry(args.twin), model_entry(args.victim)
    assert quantized["estimated_memory_bytes"] < plain["estimated_memory_bytes"], (quantized, plain)
    r = client().chat.completions.create(model=args.twin, messages=MESSAGES, max_tokens=24, temperature=0)
    assert "Paris" in r.choices[0].message.content, r
