"""Prompt store: the second turn of a ~2,000-token conversation whose KV state lost its slot to
another conversation. The same model is served twice with one slot each: with the prompt store
(the state comes back from host memory) and with `prompt_cache_size = 0` (the whole prompt is
processed again, cold). Per round: conversation A's first turn, then B's (which takes the slot),
then A's second turn, timed to its first streamed token. Fresh texts each round; the two models
alternate. Medians (min-max) and the ratio stored / cold are printed.

    python benches/prompt_store.py --url http://127.0.0.1:PORT --stored ID --cold ID [--rounds 4]
"""

import argparse
import json
import statistics
import time
import urllib.request

WORDS = ["harbour", "market", "library", "bakery", "station", "garden", "workshop", "school",
         "bread", "letters", "maps", "lanterns", "apples", "books", "tools", "boats", "river",
         "bridge", "tower", "meadow", "orchard", "lighthouse", "ferry", "quarry"]


def text(seed, sentences=92):
    """A varied English text of about 2,000 tokens, different for each seed."""
    out = []
    for i in range(sentences):
        a = WORDS[(seed * 7 + i * 5) % len(WORDS)]
        b = WORDS[(seed * 3 + i * 11 + 4) % len(WORDS)]
        out.append(f"Note {seed}.{i}: the {a} near the {b} was busy today, and nobody knew why.")
    return " ".join(out)


def turn(url, model, messages, max_tokens):
    """(answer text, seconds to the first streamed token, usage)."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    request = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    started = time.perf_counter()
    first, answer, usage = None, "", None
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    first = first or time.perf_counter() - started
                    answer += choice["delta"]["content"]
    return answer, first, usage


def second_turn_ttft(url, model, seed):
    """TTFT and usage of conversation A's second turn after B took the only slot."""
    a = [{"role": "user", "content": text(seed) + "\n\nSummarise these notes in one line."}]
    b = [{"role": "user", "content": text(seed + 1000) + "\n\nSummarise these notes in one line."}]
    answer, _, _ = turn(url, model, a, 16)
    turn(url, model, b, 16)
    a += [{"role": "assistant", "content": answer}, {"role": "user", "content": "Shorter, please."}]
    _, ttft, usage = turn(url, model, a, 4)
    return ttft, usage


def spread(values):
    return f"{statistics.median(values) * 1000:.0f} ms ({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--stored", required=True)
    parser.add_argument("--cold", required=True)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    ttfts = {"stored": [], "cold": []}
    for r in range(args.rounds):
        order = [("stored", args.stored), ("cold", args.cold)]
        for how, model in order if r % 2 == 0 else order[::-1]:
            ttft, usage = second_turn_ttft(args.url, model, seed=r * 2 + (how == "cold"))
            ttfts[how].append(ttft)
            print(f"  round {r + 1} {how}: TTFT {ttft * 1000:.0f} ms, prompt {usage['prompt_tokens']}, "
                  f"cached {usage.get('prompt_tokens_details', {}).get('cached_tokens')}", flush=True)
    stored, cold = statistics.median(ttfts["stored"]), statistics.median(ttfts["cold"])
    print(f"  second turn TTFT restored from the store: {spread(ttfts['stored'])}")
    print(f"  second turn TTFT cold (no store):          {spread(ttfts['cold'])}")
    print(f"  stored / cold: {stored / cold:.3f}")


if __name__ == "__main__":
    main()
