"""Greedy generation with Python mlx_lm on an MLX directory (the peer engine for converted models).
Prints one JSON object: the generated text and the prompt token ids."""

import json
import sys

from mlx_lm import generate, load
from mlx_lm.sample_utils import make_sampler

model_dir, system, user, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model, tokenizer = load(model_dir)
messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
ids = tokenizer.encode(prompt, add_special_tokens=False)
text = generate(model, tokenizer, prompt=ids, max_tokens=max_tokens, sampler=make_sampler(temp=0.0))
print(json.dumps({"text": text, "prompt_ids": ids}))
