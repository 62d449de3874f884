"""A model split over ggml RPC workers (or an MLX ring) on loopback vs the same model in one
process: prompt
tok/s (a fresh ~500-token prompt each time, to the first streamed token), generation tok/s (first
token to last, end-of-sequence ignored) and the bytes the workers receive and send per generated
token (the kernel's counters of their TCP connections, read with `ss`, over the generation);
for a ring (`--links`), the bytes sent over all its links. Models alternate within each round;
medians (min-max) and ratios to the first model are printed.

    python benches/rpc_split.py --url http://127.0.0.1:PORT --models one split2 split3 \
        --workers split2=PORT split3=PORT,PORT [--links ring2=PORT,PORT] [--rounds 5] [--tokens 128]
"""

import argparse
import itertools
import json
import re
import statistics
import subprocess
import time
import urllib.request

FRESH = itertools.count()


def prompt():
    """About 500 tokens, never seen before by the server (no cached prefix)."""
    n = next(FRESH)
    return " ".join(f"Line {n}.{i}: the ferry crossed the river at dawn with {i + n} boxes of apples."
                    for i in range(30))


def tcp_bytes(ports):
    """(bytes to, bytes from) the workers at `ports` on their established connections."""
    to = back = 0
    for port in ports:
        out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, check=True).stdout
        to += sum(int(n) for n in re.findall(r"bytes_received:(\d+)", out))
        back += sum(int(n) for n in re.findall(r"bytes_acked:(\d+)", out))
    return to, back


def link_bytes(ports):
    """(bytes sent over the ring's links, 0): both ends of each loopback link are listed, and
    each end's acknowledged bytes are what it sent."""
    filters = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( {filters} )"],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(n) for n in re.findall(r"bytes_acked:(\d+)", out)), 0


def measure(url, model, counter, tokens):
    """(prompt tok/s, generation tok/s, bytes to and from the workers per generated token)."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt() + "\nRetell this."}],
            "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    request = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    started = time.perf_counter()
    first = last = None
    bytes_at_first = None
    count, usage = 0, None
    try:
        response = urllib.request.urlopen(request, timeout=600)
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{model}: HTTP {e.code}: {e.read().decode()}") from None
    with response:
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                if first is None:
                    first, bytes_at_first = now, counter()
                last = now
                count += 1
    to, back = (after - before for after, before in zip(counter(), bytes_at_first))
    generated = usage["completion_tokens"] - 1
    return (usage["prompt_tokens"] / (first - started), generated / (last - first),
            to / generated, back / generated)


def spread(values, unit=""):
    return f"{statistics.median(values):,.1f}{unit} ({min(values):,.1f}-{max(values):,.1f})"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--workers", nargs="*", default=[], help="MODEL=PORT[,PORT...]: RPC workers")
    parser.add_argument("--links", nargs="*", default=[], help="MODEL=PORT[,PORT...]: an MLX ring's ports")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    def parse(pairs):
        return {m: [int(p) for p in ports.split(",")] for m, ports in (w.split("=") for w in pairs)}
    workers, links = parse(args.workers), parse(args.links)

    def counter(model):
        if model in links:
            return lambda: link_bytes(links[model])
        return lambda: tcp_bytes(workers.get(model, []))
    for model in args.models:  # warm-up: load, first graph
        measure(args.url, model, counter(model), 8)
    results = {m: [] for m in args.models}
    for r in range(args.rounds):
        order = args.models if r % 2 == 0 else args.models[::-1]
        for model in order:
            results[model].append(measure(args.url, model, counter(model), args.tokens))
    base = args.models[0]
    med = {m: [statistics.median(x[i] for x in results[m]) for i in range(4)] for m in args.models}
    print(f"{'model':<10} {'prompt tok/s':>24} {'gen tok/s':>22} {'pp ratio':>9} {'tg ratio':>9} "
          f"{'B/token to workers':>19} {'from':>7}")
    for m in args.models:
        pp = [x[0] for x in results[m]]
        tg = [x[1] for x in results[m]]
        print(f"{m:<10} {spread(pp):>24} {spread(tg):>22} {med[m][0] / med[base][0]:>9.2f} "
              f"{med[m][1] / med[base][1]:>9.2f} {med[m][2]:>19,.0f} {med[m][3]:>7,.0f}")


if __name__ == "__main__":
    main()
