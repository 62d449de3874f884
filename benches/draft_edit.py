"""Speculative decoding on an edit task: a served model rewrites a ~1,500-token text with small
changes, greedily, with no drafts, with prompt lookup, and with the original text given as
OpenAI's `prediction`. Generation speed is taken between the first and the last streamed token
(the prompt is served from the prefix cache after the first round, so TTFT is not the point).
Rounds alternate the three ways; medians (min-max) and ratios to plain decoding are printed.

    python benches/draft_edit.py --url http://127.0.0.1:PORT --plain ID --lookup ID [--rounds 5]
where `--lookup` is the same model configured with draft = "prompt-lookup".
"""

import argparse
import json
import statistics
import time
import urllib.request

PLACES = ["harbour", "market", "library", "bakery", "station", "garden", "workshop", "school"]
PEOPLE = ["the baker", "a teacher", "the old sailor", "two children", "the mayor", "a painter"]
THINGS = ["bread", "letters", "maps", "lanterns", "apples", "books", "tools", "boats"]
TIMES = ["in the morning", "at noon", "before sunset", "after the rain", "on Sundays", "at dawn"]


def source_text(sentences=120):
    """A plain, varied English text (deterministic) of about 1,500 tokens."""
    out = []
    for i in range(sentences):
        p, q = PEOPLE[i % len(PEOPLE)], PEOPLE[(i * 5 + 2) % len(PEOPLE)]
        place, thing, when = PLACES[(i * 3) % len(PLACES)], THINGS[(i * 7 + 1) % len(THINGS)], TIMES[(i * 11) % len(TIMES)]
        out.append([
            f"{p.capitalize()} walked to the {place} {when} to look for {thing}.",
            f"At the {place}, {q} was counting {thing} and humming.",
            f"Nobody in town remembered why the {place} kept so many {thing}.",
            f"{when.capitalize()}, the river beside the {place} was quiet.",
        ][i % 4])
    return " ".join(out)


def stream(url, body):
    """(generated tokens, seconds from the first to the last token, usage) of one request."""
    request = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    first = last = None
    usage = None
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
    return usage["completion_tokens"], last - first, usage


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--plain", required=True)
    p.add_argument("--lookup", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=300)
    args = p.parse_args()
    text = source_text()
    messages = [{"role": "user", "content":
                 "Copy the following text exactly, but write 'harbor' instead of 'harbour'. "
                 "Output only the text.\n\n" + text}]
    base = {"messages": messages, "temperature": 0, "max_tokens": args.max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    ways = {
        "plain": dict(base, model=args.plain),
        "prompt lookup": dict(base, model=args.lookup),
        "prediction": dict(base, model=args.plain, prediction={"type": "content", "content": text}),
    }
    rates = {w: [] for w in ways}
    answers = {}
    for r in range(args.rounds + 1):
        order = list(ways) if r % 2 else list(reversed(ways))
        for way in order:
            tokens, seconds, usage = stream(args.url, ways[way])
            if r == 0:  # warm-up: the prompt enters the prefix cache
                continue
            rates[way].append((tokens - 1) / seconds)
            answers[way] = (tokens, usage.get("completion_tokens_details"))
    plain = statistics.median(rates["plain"])
    for way, values in rates.items():
        m = statistics.median(values)
        print(f"{way:14} {m:7.1f} tok/s ({min(values):.1f}-{max(values):.1f}) "
              f"{m / plain:5.2f}x plain; {answers[way][0]} tokens, drafts {answers[way][1]}")


if __name__ == "__main__":
    main()
