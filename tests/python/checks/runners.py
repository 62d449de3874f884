"""Suite `runners` (tests/tests/runners.rs): runner processes: one per model, both engines alike,
crashes and kills contained, unloading frees memory."""

from checks.common import *  # noqa: F401,F403


def parent_pid(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("PPid:")).split()[1])


@check("runners")
def each_model_runs_in_a_runner_process_of_its_own():
    pids = []
    for model in (args.model, args.victim, args.twin):
        entry = model_entry(model)
        assert entry["loaded"] and entry["status"] == "loaded", entry
        pid = entry["runner_pid"]
        assert isinstance(pid, int) and parent_pid(pid) == args.server_pid, entry
        pids.append(pid)
    assert len(set(pids)) == 3, pids


@check("runners")
def both_engines_answer_the_same_through_runners():
    c = client()
    answers = [c.chat.completions.create(model=m, messages=MESSAGES, temperature=0, max_tokens=16)
               for m in (args.model, args.twin)]
    assert answers[0].choices[0].message.content == answers[1].choices[0].message.content, answers
    assert answers[0].usage == answers[1].usage, answers
    # The template is applied in the runner too, alike on both engines.
    prompts = [raw("POST", "/apply-template", json={"model": m, "messages": MESSAGES}).json()["prompt"]
               for m in (args.model, args.twin)]
    assert prompts[0] == prompts[1] and FRANCE in prompts[0], prompts
    # Token ids back to text, in the runner too.
    ids = raw("POST", "/tokenize", json={"model": args.model, "content": FRANCE}).json()["tokens"]
    texts = [raw("POST", "/detokenize", json={"model": m, "tokens": ids}).json()["content"]
             for m in (args.model, args.twin)]
    assert texts == [FRANCE, FRANCE], texts


@check("runners")
def a_crashing_model_fails_alone():
    # A long stream on the healthy model, running while the other model's runner dies.
    body = {"model": args.model, "messages": MESSAGES, "max_tokens": 160, "temperature": 0, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", args.base_url + "/v1/chat/completions", json=body, timeout=120) as healthy:
        events = sse_lines(healthy)
        first = next(events)
        assert json.loads(first)["choices"], first
        # The victim's file is cut short under its runner (as an in-place download would):
        # llama.cpp's mapped weights vanish and its next request dies with SIGBUS.
        os.truncate(args.victim_path, 1_000_000)
        r = raw("POST", "/v1/chat/completions", json={"model": args.victim, "messages": MESSAGES, "max_tokens": 4})
        assert_error(r, 503, contains=args.victim)
        assert r.json()["error"]["code"] == "engine_crashed" and "SIGBUS" in r.text, r.text
        rest = list(events)
    assert rest[-1] == "[DONE]", rest[-3:]
    assert not any('"error"' in line for line in rest), [line for line in rest if "error" in line]
    finish = [json.loads(line)["choices"][0]["finish_reason"] for line in rest[:-1]]
    assert finish[-1] == "length", finish[-3:]
    # The failure shows; the server and the healthy model carry on.
    entry = model_entry(args.victim)
    assert entry["status"] == "failed" and "SIGBUS" in entry["failure"] and entry["crashes"] == 1, entry
    assert model_entry(args.model)["status"] == "loaded"
    assert metric(f'minerva_model_failed{{model="{args.victim}"}}') == 1
    assert metric(f'minerva_engine_crashes{{model="{args.victim}"}}') == 1
    # The next request loads it again, and now the truncated file is refused by name.
    r = raw("POST", "/v1/chat/completions", json={"model": args.victim, "messages": MESSAGES, "max_tokens": 4})
    assert_error(r, 500, contains=args.victim_path)
    assert raw("GET", "/health").status_code == 200


@check("runners")
def a_killed_runner_ends_its_stream_with_an_error_and_comes_back():
    pid = model_entry(args.model)["runner_pid"]
    body = {"model": args.model, "messages": MESSAGES, "max_tokens": 3000, "temperature": 0, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", args.base_url + "/v1/chat/completions", json=body, timeout=120) as r:
        events = sse_lines(r)
        for _ in range(3):
            next(events)
        os.kill(pid, signal.SIGKILL)
        rest = list(events)
    assert rest[-1] == "[DONE]", rest[-3:]
    error = json.loads(rest[-2])["error"]
    assert error["code"] == "engine_crashed" and "SIGKILL" in error["message"], error
    assert args.model in error["message"], error
    r = client().chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=8)
    assert r.choices[0].message.content and r.usage.completion_tokens == 8
    entry = model_entry(args.model)
    assert entry["status"] == "loaded" and entry["runner_pid"] not in (None, pid), entry


@check("runners")
def unloading_a_model_ends_its_runner_and_frees_its_memory():
    pid = model_entry(args.twin)["runner_pid"]
    runner_mb, server_mb = rss_mb(pid), rss_mb(args.server_pid)
    r = raw("POST", f"/v1/models/{args.twin}/unload")
    assert r.status_code == 200 and r.json()["unloaded"] is True, r.text
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() < deadline, "the runner did not exit"
        time.sleep(0.05)
    entry = model_entry(args.twin)
    assert entry["status"] == "unloaded" and entry["runner_pid"] is None, entry
    after_mb = rss_mb(args.server_pid)
    print(f"       RSS: {args.twin} runner {runner_mb:.0f} MB (gone after unload); "
          f"server {server_mb:.0f} MB before, {after_mb:.0f} MB after")
    assert after_mb < runner_mb, (after_mb, runner_mb)
    r = raw("POST", f"/v1/models/{args.twin}/load")
    assert r.status_code == 200 and r.json()["loaded"] is True, r.text
    assert model_entry(args.twin)["runner_pid"] not in (None, pid)
    assert_error(raw("POST", "/v1/models/no-such-model/unload"), 404)
