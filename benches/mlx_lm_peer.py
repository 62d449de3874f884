"""Python mlx_lm on an MLX model directory, measured the way `minerva bench` measures: the same
filler text cut to exactly --pp token ids, greedy, end-of-sequence ignored, a fresh KV cache per
repetition; time to first token and generation rate after it. Prints one JSON object."""
import argparse, json, statistics, time

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import stream_generate
from mlx_lm.sample_utils import make_sampler

# mlx_lm 0.32.2's quantized experts pass `global_scale=None` to mx.gather_qmm, which mlx 0.32.2
# rejects; leave it out when it is None (mixture-of-experts models).
_gather_qmm = mx.gather_qmm
mx.gather_qmm = lambda *a, global_scale=None, **k: _gather_qmm(
    *a, **k, **({} if global_scale is None else {"global_scale": global_scale})
)

# Must stay equal to FILLER in runtime/src/bench/mod.rs.
FILLER = ("The river wound through the valley, past orchards and stone bridges, "
          "carrying the stories of every village it touched toward the distant sea. ")

p = argparse.ArgumentParser()
p.add_argument("model"); p.add_argument("--pp", type=int, default=128)
p.add_argument("--tg", type=int, default=128); p.add_argument("--reps", type=int, default=5)
p.add_argument("--warmup", type=int, default=1)
a = p.parse_args()

model, tokenizer = load(a.model)
text = FILLER
while len(tokenizer.encode(text, add_special_tokens=False)) < a.pp:
    text += FILLER
ids = tokenizer.encode(text, add_special_tokens=False)[: a.pp]
tokenizer._eos_token_ids = set()  # generate past end-of-sequence, like --ignore-eos
sampler = make_sampler(temp=0.0)

ttft, pp, tg = [], [], []
for i in range(a.warmup + a.reps):
    start = time.perf_counter(); first = None; n = 0
    for response in stream_generate(model, tokenizer, ids, max_tokens=a.tg, sampler=sampler):
        n += 1
        if first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    if i >= a.warmup:
        ttft.append(first); pp.append(a.pp / first); tg.append((n - 1) / (total - first))

spread = lambda v: {"median": statistics.median(v), "min": min(v), "max": max(v)}
print(json.dumps({"engine": "mlx_lm", "mlx": mx.__version__, "prompt_tokens": len(ids),
                  "prompt_ids_head": ids[:8], "generated_tokens": n, "ttft_s": spread(ttft),
                  "pp_tps": spread(pp), "tg_tps": spread(tg)}))
