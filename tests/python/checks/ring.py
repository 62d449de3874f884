"""Suite `ring` (tests/tests/distributed.rs): a model split over an MLX ring, a lost rank, unloading
stops the ranks."""

from checks.common import *  # noqa: F401,F403


RESTARTED = []


@check("ring")
def a_model_split_over_an_mlx_ring_answers_as_one_process():
    c = client()
    one = c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=32)
    split = c.chat.completions.create(model=args.split, messages=MESSAGES, temperature=0, max_tokens=32)
    assert split.choices[0].message.content == one.choices[0].message.content, (split, one)
    assert split.usage == one.usage, (split.usage, one.usage)
    # Several sequences in one pass, each with its own cache on both ranks.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda _: stream_text(c, model=args.split, temperature=0, max_tokens=32)[1],
                              range(4)))
    assert texts == [one.choices[0].message.content] * 4, texts
    # Choices sharing one prompt: the prompt's cache is copied on every rank.
    two = c.chat.completions.create(model=args.split, messages=MESSAGES, temperature=0, max_tokens=32, n=2)
    assert [ch.message.content for ch in two.choices] == [one.choices[0].message.content] * 2, two
    parts = model_entry(args.split)["placement"]
    assert parts == [
        {"device": "cpu (rank 0)", "first_layer": 0, "layers": 15, "output": True},
        {"device": f"rank 1 [127.0.0.1:{args.worker_ports[-1]}]", "first_layer": 15, "layers": 15,
         "output": False}], parts


@check("ring")
def a_lost_rank_fails_the_stream_clearly_and_the_model_comes_back():
    expected = client().chat.completions.create(model=args.split, messages=MESSAGES, temperature=0,
                                                max_tokens=32).choices[0].message.content
    body = {"model": args.split, "messages": MESSAGES, "max_tokens": 3000, "temperature": 0, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", args.base_url + "/v1/chat/completions", json=body, timeout=120) as r:
        events = sse_lines(r)
        for _ in range(3):
            next(events)
        os.kill(args.worker_pid, signal.SIGKILL)
        rest = list(events)
    assert rest[-1] == "[DONE]", rest[-3:]
    # The engine's error, or the runner's end that follows it: either way naming the ring.
    error = json.loads(rest[-2])["error"]
    assert "MLX ring" in error["message"], error
    assert raw("GET", "/health").status_code == 200
    # Rank 1 back: the next request loads the model in a fresh runner, which joins the ring.
    RESTARTED.append(subprocess.Popen(
        [args.minerva, "--threads", "1", "worker", "--mlx", "--hostfile", args.hostfile, "--rank", "1",
         args.split_path], stdout=subprocess.DEVNULL))
    again = client().chat.completions.create(model=args.split, messages=MESSAGES, temperature=0, max_tokens=32)
    assert again.choices[0].message.content == expected, (again, expected)


@check("ring")
def unloading_the_model_stops_the_other_ranks():
    assert RESTARTED, "runs after the lost-rank check"
    r = raw("POST", f"/v1/models/{args.split}/unload")
    assert r.status_code == 200 and r.json()["unloaded"] is True, r.text
    try:
        assert RESTARTED[0].wait(timeout=30) == 0, "rank 1 did not stop cleanly"
    finally:
        RESTARTED[0].kill()
