"""Suites `pull` and `pull-off` (tests/tests/pull.rs): model management over HTTP against the hub
stand-in, and the switch that turns it off."""

from checks.common import *  # noqa: F401,F403


def listed_ids():
    return [m["id"] for m in raw("GET", "/v1/models").json()["data"]]


@check("pull")
def two_clients_pulling_one_model_share_one_download_with_progress():
    import ollama
    import threading
    o = ollama_client()
    assert args.model not in [m.model for m in o.list().models]
    events = []

    def ours():
        body = {"model": args.model}
        with httpx.stream("POST", args.base_url + "/v1/models/pull", json=body, timeout=120) as r:
            assert r.status_code == 200, r.read()
            events.extend(json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: "))

    follower = threading.Thread(target=ours)
    follower.start()
    progress = list(o.pull(args.model, stream=True))
    follower.join()
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success", statuses
    files = [p for p in progress if p.status.startswith("pulling ") and p.total]
    assert files and files[-1].completed == files[-1].total, files[-3:]
    done = [p.completed for p in files]
    assert done == sorted(done) and len(set(done)) > 1, done  # progress reported as it went
    assert events[-1]["status"] == "success" and events[-1]["model"] == args.model, events[-2:]
    assert any(e.get("status") == "downloading" and e["total"] for e in events), events[:3]
    # Pulled once more: already there, nothing fetched (the test reads the hub's log).
    assert o.pull(args.model).status == "success"


@check("pull")
def a_pulled_model_is_listed_served_and_deleted():
    import ollama
    o = ollama_client()
    assert args.model in [m.model for m in o.list().models]
    assert args.model in listed_ids()
    r = o.chat(model=args.model, messages=MESSAGES, options={"temperature": 0, "num_predict": 16})
    assert "Paris" in r.message.content, r
    assert args.model in [m.model for m in o.ps().models]
    o.delete(args.model)
    assert args.model not in [m.model for m in o.list().models]
    assert not os.path.exists(os.path.join(args.cache, "models--" + args.model.split(":")[0].replace("/", "--")))
    try:
        o.delete(args.model)
        raise AssertionError("a second delete succeeded")
    except ollama.ResponseError as err:
        assert err.status_code == 404, (err.status_code, err.error)
    r = raw("POST", "/api/chat", json={"model": args.model, "messages": MESSAGES})
    assert r.status_code == 404 and r.json()["error"], r.text


@check("pull")
def our_api_pulls_and_deletes_a_directory_model():
    r = raw("POST", "/v1/models/pull", json={"model": args.twin, "stream": False})
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    assert os.path.isfile(os.path.join(r.json()["path"], "config.json")), r.text
    assert args.twin in listed_ids()
    c = client().chat.completions.create(model=args.twin, messages=MESSAGES, temperature=0, max_tokens=16)
    assert "Paris" in c.choices[0].message.content, c
    r = raw("DELETE", f"/v1/models/{args.twin}")
    assert r.status_code == 200 and r.json() == {"id": args.twin, "object": "model", "deleted": True}, r.text
    assert args.twin not in listed_ids()
    assert_error(raw("DELETE", f"/v1/models/{args.twin}"), 404)


@check("pull")
def bad_pulls_and_deletes_are_refused_by_name():
    assert_error(raw("POST", "/v1/models/pull", json={}), 400)
    assert_error(raw("POST", "/v1/models/pull", json={"model": "../../etc/passwd"}), 400, param="model")
    assert_error(raw("POST", "/v1/models/pull", json={"model": "test-org/missing", "stream": False}), 404,
                 contains="test-org/missing")
    r = raw("POST", "/api/pull", json={"model": "test-org/missing"})
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert "test-org/missing" in lines[-1]["error"], lines
    r = raw("POST", "/api/pull", json={})
    assert r.status_code == 400 and r.json()["error"], r.text
    # A configured model on a local path is not the cache's to delete.
    assert_error(raw("DELETE", f"/v1/models/{args.local}"), 400, contains="local path")
    assert client().chat.completions.create(model=args.local, messages=MESSAGES, max_tokens=1).choices
    assert_error(raw("DELETE", "/v1/models/nothing-here"), 404)
    assert raw("POST", "/api/copy", json={"source": args.local, "destination": "x"}).status_code == 501


@check("pull-off")
def downloads_are_refused_where_switched_off():
    assert_error(raw("POST", "/v1/models/pull", json={"model": args.model}), 403, contains="allow_downloads")
    assert_error(raw("DELETE", f"/v1/models/{args.model}"), 403)
    r = raw("POST", "/api/pull", json={"model": args.model})
    assert r.status_code == 403 and "allow_downloads" in r.json()["error"], r.text
    assert raw("DELETE", "/api/delete", json={"model": args.model}).status_code == 403
