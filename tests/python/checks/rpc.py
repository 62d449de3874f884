"""Suite `rpc` (tests/tests/distributed.rs): a model split over ggml RPC workers, a lost worker, an
engine without RPC."""

from checks.common import *  # noqa: F401,F403


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def split_answer():
    return client().chat.completions.create(model=args.split, messages=MESSAGES, temperature=0, max_tokens=48)


@check("rpc")
def a_model_split_over_two_workers_answers_as_one_process():
    c = client()
    one = c.chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=48)
    split = split_answer()
    assert split.choices[0].message.content == one.choices[0].message.content, (split, one)
    assert split.usage == one.usage, (split.usage, one.usage)
    # Concurrent requests are batched across the workers (the prompt whose first tokens win by
    # a wide margin: batch shapes change llama.cpp's float rounding).
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda _: stream_text(c, model=args.split, temperature=0, max_tokens=48)[1],
                              range(4)))
    assert texts == [one.choices[0].message.content] * 4, texts
    parts = model_entry(args.split)["placement"]
    workers = [f"127.0.0.1:{port}" for port in args.worker_ports]
    assert [p["device"] for p in parts][0] == "CPU", parts
    assert [p["device"].split("[")[1].rstrip("]") for p in parts[1:]] == workers, parts
    assert all(p["layers"] > 0 for p in parts) and sum(p["layers"] for p in parts) == 30, parts
    # The output layer stays here: a step sends hidden states over the network, not logits.
    assert [p["output"] for p in parts] == [True, False, False], parts
    assert model_entry(args.model)["placement"] == [
        {"device": "CPU", "first_layer": 0, "layers": 30, "output": True}]
    print(f"       placement: {[(p['device'], p['layers']) for p in parts]}")


@check("rpc")
def a_lost_worker_fails_the_stream_clearly_and_the_model_comes_back():
    expected = split_answer().choices[0].message.content
    port = args.worker_ports[-1]
    body = {"model": args.split, "messages": MESSAGES, "max_tokens": 3000, "temperature": 0, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", args.base_url + "/v1/chat/completions", json=body, timeout=120) as r:
        events = sse_lines(r)
        for _ in range(3):
            next(events)
        os.kill(args.worker_pid, signal.SIGKILL)
        rest = list(events)
    assert rest[-1] == "[DONE]", rest[-3:]
    error = json.loads(rest[-2])["error"]
    assert error["code"] == "engine_crashed" and args.split in error["message"], error
    assert "SIGABRT" in error["message"] and "RPC" in error["message"], error
    assert raw("GET", "/health").status_code == 200
    plain = client().chat.completions.create(model=args.model, messages=MESSAGES, temperature=0, max_tokens=8)
    assert plain.usage.completion_tokens == 8
    # While the worker is down, loading again names it.
    r = raw("POST", "/v1/chat/completions", json={"model": args.split, "messages": MESSAGES, "max_tokens": 4})
    assert r.status_code >= 500 and f"127.0.0.1:{port}" in r.text and "not reachable" in r.text, r.text
    worker = subprocess.Popen([args.minerva, "worker", "--rpc", "--port", str(port)],
                              stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            assert time.monotonic() < deadline, "the restarted worker does not listen"
            time.sleep(0.1)
        again = split_answer()
        assert again.choices[0].message.content == expected, (again, expected)
        assert model_entry(args.split)["status"] == "loaded"
    finally:
        worker.kill()
        worker.wait()


@check("rpc")
def an_engine_without_rpc_refuses_workers_by_name():
    r = raw("POST", "/v1/chat/completions", json={"model": args.twin, "messages": MESSAGES, "max_tokens": 4})
    # `rpc` is the llama engine's option: the MLX engine names the key it does not know.
    assert r.status_code >= 400 and "unknown field `rpc`" in r.text and "engine `mlx`" in r.text, r.text
