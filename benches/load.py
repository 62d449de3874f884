"""Streaming load against an OpenAI-compatible server: N concurrent chat streams of exactly
`--tokens` tokens each (EOS ignored), repeated; prints one JSON line per concurrency level with
the median aggregate tokens/s over the repetitions and TTFT percentiles over all requests.
Loopback only; every run is bounded by --reps and a per-request timeout. Standard library only,
so that it runs on machines without the project's venv."""

import argparse
import concurrent.futures
import http.client
import json
import statistics
import time
import urllib.parse

MESSAGES = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


def one(url, model, tokens, seed):
    body = {"model": model, "messages": MESSAGES, "stream": True, "max_tokens": tokens,
            "temperature": 0.8, "ignore_eos": True, "stream_options": {"include_usage": True}}
    if seed is not None:
        body["seed"] = seed
    address = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=300)
    started = time.monotonic()
    ttft, completion = None, 0
    connection.request("POST", "/v1/chat/completions", body=json.dumps(body),
                       headers={"Content-Type": "application/json"})
    r = connection.getresponse()
    if r.status != 200:
        raise RuntimeError(f"{r.status}: {r.read()[:300]!r}")
    while line := r.readline():
        line = line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            completion = chunk["usage"]["completion_tokens"]
        for choice in chunk.get("choices", []):
            if ttft is None and choice.get("delta", {}).get("content"):
                ttft = time.monotonic() - started
    connection.close()
    return completion, ttft, time.monotonic() - started


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--concurrency", default="1,4,8")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--no-seed", action="store_true",
                   help="send no seed (mlx_lm.server batches only unseeded requests)")
    p.add_argument("--allow-short", action="store_true",
                   help="count what a server without ignore_eos generates instead of failing")
    a = p.parse_args()
    one(a.url, a.model, 8, None if a.no_seed else 0)  # warm-up
    for n in [int(x) for x in a.concurrency.split(",")]:
        aggregates, ttfts = [], []
        for rep in range(a.reps):
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                seeds = [None if a.no_seed else rep * 100 + i for i in range(n)]
                results = list(pool.map(lambda s: one(a.url, a.model, a.tokens, s), seeds))
            wall = time.monotonic() - started
            assert a.allow_short or all(r[0] == a.tokens for r in results), [r[0] for r in results]
            aggregates.append(sum(r[0] for r in results) / wall)
            ttfts.extend(r[1] for r in results)
        print(json.dumps({
            "server": a.label, "concurrency": n, "tokens_per_request": a.tokens, "reps": a.reps,
            "aggregate_tps_median": round(statistics.median(aggregates), 1),
            "aggregate_tps_min": round(min(aggregates), 1), "aggregate_tps_max": round(max(aggregates), 1),
            "ttft_p50_s": round(percentile(ttfts, 50), 4), "ttft_p99_s": round(percentile(ttfts, 99), 4),
            "tokens_median": statistics.median(r[0] for r in results),
        }), flush=True)


if __name__ == "__main__":
    main()
