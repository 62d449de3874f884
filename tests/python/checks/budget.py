"""Suite `budget` (tests/tests/runners.rs): a model larger than the memory budget refused by name."""

from checks.common import *  # noqa: F401,F403


@check("budget")
def racing_first_requests_load_one_copy():
    # Configured: `--model` and `--victim` (the same GGUF), a memory_budget that fits one.
    entry = model_entry(args.model)
    assert not entry["loaded"] and entry["context_size"] == 1024, entry
    estimate = entry["estimated_memory_bytes"]
    assert 150e6 < estimate < 250e6, entry
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda _: client().chat.completions.create(model=args.model, messages=MESSAGES, max_tokens=2),
            range(8)))
    assert all(a.choices[0].message.content is not None for a in answers)
    assert metric(f'minerva_model_loads{{model="{args.model}"}}') == 1
    pid = model_entry(args.model)["runner_pid"]
    print(f"       {args.model}: estimated {estimate / 2**20:.0f} MiB, its runner holds "
          f"{rss_mb(pid):.0f} MB RSS")


@check("budget")
def over_budget_the_idle_model_is_evicted_after_its_request_ends():
    first = model_entry(args.model)
    first_mb = rss_mb(first["runner_pid"])
    body = {"model": args.model, "messages": MESSAGES, "max_tokens": 120, "temperature": 0, "stream": True,
            "ignore_eos": True}
    other = {}

    def ask_other():
        other["answer"] = client().chat.completions.create(model=args.victim, messages=MESSAGES, max_tokens=4)
        other["at"] = time.monotonic()

    with httpx.stream("POST", args.base_url + "/v1/chat/completions", json=body, timeout=120) as r:
        events = sse_lines(r)
        next(events)
        waiter = concurrent.futures.ThreadPoolExecutor(1).submit(ask_other)
        rest = list(events)
        ended = time.monotonic()
    waiter.result(timeout=120)
    assert rest[-1] == "[DONE]" and not any('"error"' in line for line in rest), rest[-3:]
    assert json.loads(rest[-2])["choices"][0]["finish_reason"] == "length", rest[-2]
    assert other["at"] >= ended, "the second model answered while the first was still streaming"
    wait_gone(first["runner_pid"])
    assert model_entry(args.model)["status"] == "unloaded"
    assert metric(f'minerva_model_evictions{{model="{args.model}"}}') == 1
    second = model_entry(args.victim)
    print(f"       evicted {args.model}: its runner's {first_mb:.0f} MB RSS freed (process gone); "
          f"{args.victim} now holds {rss_mb(second['runner_pid']):.0f} MB; server {rss_mb(args.server_pid):.0f} MB")


@check("budget")
def request_keep_alive_zero_unloads_after_the_answer():
    pid = model_entry(args.victim)["runner_pid"]
    r = raw("POST", "/v1/chat/completions",
            json={"model": args.victim, "messages": MESSAGES, "max_tokens": 2, "keep_alive": 0})
    assert r.status_code == 200, r.text
    wait_gone(pid, seconds=5)
    assert model_entry(args.victim)["status"] == "unloaded"
    r = raw("POST", "/v1/chat/completions",
            json={"model": args.victim, "messages": MESSAGES, "max_tokens": 2, "keep_alive": "5m"})
    assert r.status_code == 200, r.text
    assert model_entry(args.victim)["expires_in_s"] in (299, 300)
    r = raw("POST", "/v1/chat/completions",
            json={"model": args.victim, "messages": MESSAGES, "max_tokens": 2, "keep_alive": "soon"})
    assert_error(r, 400, param="keep_alive")


@check("budget")
def a_model_larger_than_the_budget_is_refused_by_name():
    r = raw("POST", "/v1/chat/completions", json={"model": args.twin, "messages": MESSAGES, "max_tokens": 2})
    assert_error(r, 503, contains="memory_budget")
    assert r.json()["error"]["code"] == "model_unavailable", r.text
