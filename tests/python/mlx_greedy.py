"""Greedy continuations of raw-text prompts with Python mlx_lm on an MLX directory: the peer's
answers for a converted real model.

Usage: mlx_greedy.py MODEL_DIR STEPS PROMPTS_JSON [TEXTS_JSON]

Prints one JSON object: "answers", one per prompt: {"prompt_ids", "tokens", "logprobs",
"margins"} (each chosen token's log-probability, and how far it leads the runner-up; an end of
sequence does not stop it); and "tokenized": the ids of each of TEXTS (special tokens added)."""

import json
import sys

import mlx.core as mx
from mlx_lm import load
from mlx_lm.models.cache import make_prompt_cache

model_dir, steps, prompts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
texts = json.loads(sys.argv[4]) if len(sys.argv) > 4 else []
model, tokenizer = load(model_dir)
answers = []
for prompt in prompts:
    ids = tokenizer.encode(prompt)
    cache = make_prompt_cache(model)
    logits = model(mx.array([ids]), cache=cache)[0, -1].astype(mx.float32)
    tokens, logprobs, margins = [], [], []
    for _ in range(steps):
        logprob = logits - mx.logsumexp(logits)
        first, second = mx.argsort(-logprob)[:2].tolist()
        tokens.append(first)
        logprobs.append(logprob[first].item())
        margins.append((logprob[first] - logprob[second]).item())
        logits = model(mx.array([[first]]), cache=cache)[0, -1].astype(mx.float32)
    answers.append({"prompt_ids": ids, "tokens": tokens, "logprobs": logprobs, "margins": margins})
print(json.dumps({"answers": answers, "tokenized": [tokenizer.encode(t) for t in texts]}))
