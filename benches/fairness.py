"""Fairness under load: does one heavy request hold the others hostage? A canary chat stream runs
while each load is sent beside it; we record the canary's inter-token gaps (p50, p99, longest)
and the time to first token of a second canary sent just after the load. Loads: none (the
baseline), an embeddings request of 24 inputs of 300 words, a prompt of about 4,000 tokens, a
heavy JSON schema (many properties with patterns), and `n = 8` choices. Prints one JSON line per
(server, load, round). Loopback only, bounded in requests and time; standard library only.
"""

import argparse
import http.client
import json
import threading
import time
import urllib.parse

CANARY = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
WORDS = ("river stone bridge harbour lantern meadow orchard valley thunder candle ember "
         "willow falcon granite marble copper").split()


def text(words, seed):
    return " ".join(WORDS[(i * 7 + seed) % len(WORDS)] for i in range(words))


def post(url, path, body, timeout=600):
    address = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=timeout)
    connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return connection.getresponse()


def stream(url, model, tokens, events, messages=CANARY):
    """A greedy canary of `tokens` tokens (EOS ignored); appends each content chunk's arrival."""
    r = post(url, "/v1/chat/completions", {"model": model, "messages": messages, "stream": True,
                                           "max_tokens": tokens, "temperature": 0, "ignore_eos": True})
    if r.status != 200:
        raise RuntimeError(f"canary: {r.status} {r.read()[:200]!r}")
    while line := r.readline():
        line = line.decode().strip()
        if not line.startswith("data: {"):
            continue
        # Only chunks that carry text (servers open a stream with an empty role chunk).
        if any(c.get("delta", {}).get("content") for c in json.loads(line[6:]).get("choices", [])):
            events.append(time.monotonic())


def load(url, model, kind):
    """One heavy request of `kind`; returns its status."""
    if kind == "embeddings":
        body = {"model": model, "input": [text(300, i) for i in range(24)]}
        r = post(url, "/v1/embeddings", body)
    else:
        body = {"model": model, "max_tokens": 16, "temperature": 0.8}
        if kind == "long-prompt":
            body["messages"] = [{"role": "user", "content": text(3000, 1) + "\nSummarise this."}]
            body["max_tokens"] = 1
        elif kind == "schema":
            props = {f"field_{i}": {"type": "string", "pattern": f"^[a-z]{{{i % 5 + 1},{i % 5 + 8}}}$"}
                     for i in range(120)}
            body["messages"] = CANARY
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "heavy", "schema": {"type": "object", "properties": props,
                                            "required": list(props)[:20]}}}
        elif kind == "n8":
            body["messages"] = CANARY
            body["n"] = 8
        r = post(url, "/v1/chat/completions", body)
    r.read()
    return r.status


def measure(url, model, kind, tokens):
    events, second = [], []
    canary = threading.Thread(target=stream, args=(url, model, tokens, events))
    canary.start()
    while not events and canary.is_alive():
        time.sleep(0.01)
    status = None
    loader = None
    if kind != "none":
        def run():
            nonlocal status
            status = load(url, model, kind)
        loader = threading.Thread(target=run)
        loader.start()
    time.sleep(0.2)
    sent = time.monotonic()
    # A prompt of its own, so that its first token is not served from the first canary's cache.
    stream(url, model, 2, second, [{"role": "user", "content": f"Name a colour. ({kind}, {sent})"}])
    ttft = (second[0] - sent) if second else None
    canary.join(timeout=600)
    if loader:
        loader.join(timeout=600)
    gaps = sorted(b - a for a, b in zip(events, events[1:]))
    p = lambda q: gaps[min(len(gaps) - 1, int(q * len(gaps)))] * 1e3 if gaps else None
    return {"load": kind, "load_status": status, "tokens": len(events), "gap_p50_ms": p(0.5),
            "gap_p99_ms": p(0.99), "gap_max_ms": gaps[-1] * 1e3 if gaps else None,
            "ttft_ms": ttft * 1e3 if ttft is not None else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--loads", default="none,embeddings,long-prompt,schema,n8")
    ap.add_argument("--tokens", type=int, default=200, help="the canary's length")
    args = ap.parse_args()
    for kind in args.loads.split(","):
        result = measure(args.url, args.model, kind, args.tokens)
        print(json.dumps({"server": args.label, **result}), flush=True)


if __name__ == "__main__":
    main()
