"""Suite `queue` (tests/tests/server.rs): a full admission queue answers 429 with Retry-After."""

from checks.common import *  # noqa: F401,F403


@check("queue")
def full_queue_answers_429_with_retry_after():
    c = client()
    stream = c.chat.completions.create(model=args.model, messages=MESSAGES, stream=True, max_tokens=2000,
                                       temperature=0.7, seed=3, extra_body={"ignore_eos": True})
    next(iter(stream))
    r = raw("POST", "/v1/chat/completions", json={"model": args.model, "messages": MESSAGES, "max_tokens": 4})
    stream.close()
    assert_error(r, 429)
    assert r.headers.get("retry-after") == "1", r.headers
