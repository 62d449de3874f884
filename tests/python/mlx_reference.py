"""Small random-weight models made, saved and run by Python mlx_lm itself: the reference the MLX
engine's model families are checked against (tests/tests/families.rs).

Usage: mlx_reference.py REQUEST_JSON

REQUEST: {"tokenizer": DIR, "seed": S, "cases": [{"name", "model_type", "config", "quantize",
"bfloat16", "kv_bits", "dir", "prompt": [ids], "steps": N}]}.

For each case, with mx.random.seed(S): mlx_lm's own Model class for `model_type`, built from
`config` (vocab_size set to VOCAB_SIZE, the tokenizer's) with mlx_lm's random initialization,
sharpened (OUTPUT_GAIN, QK_GAIN), cast to bfloat16 when `bfloat16` (as mlx-community's
checkpoints are; decoded in float32 over those values all the same); then what `mlx_lm.convert`
does with a checkpoint:
`sanitize` (a tied head is not saved), 4-bit affine quantization in groups of 64 by
`quantize_model` when `quantize`, `save_model` and `save_config` into `dir`, beside the tokenizer
files of DIR. The directory is loaded back with mlx_lm's `load_model` and the prompt
decoded greedily for N steps in float32 with mlx_lm's prompt cache; with `kv_bits`, every
layer's cache is quantized from the start (`to_quantized`, groups of 64), which is what
mlx_lm's `kv_bits` does with `quantized_kv_start=0` (its prompt pass aside).

Prints one JSON object: "cases", one per case: {"name", "tokens", "logprobs", "margins", "top"}
(each step's chosen token, its log-probability, how far it leads the runner-up, and the five
likeliest (id, logprob)) and, with `kv_bits`, "spread" (see NOISE); or {"name",
"reference_unavailable": why} where mlx_lm cannot run the case on this machine.
"""

import contextlib
import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import _get_classes, load_model, quantize_model, save_config, save_model

# mlx_lm 0.32.2's QuantizedSwitchLinear (the experts of mixture-of-experts models) passes
# `global_scale=None` to mx.gather_qmm, which mlx 0.32.2 rejects; leave it out when it is None.
_gather_qmm = mx.gather_qmm


def _gather_qmm_without_none(*args, global_scale=None, **kwargs):
    if global_scale is not None:
        kwargs["global_scale"] = global_scale
    return _gather_qmm(*args, **kwargs)


mx.gather_qmm = _gather_qmm_without_none

# mlx_lm's initialization (norm weights of one, small projections) leaves a random model's
# attention and next-token distribution nearly flat, where a wrong position or an ignored norm
# weight hardly shows. So every norm weight is drawn from U(0.5, 1.5), the final one's times
# OUTPUT_GAIN (a clear favourite at most steps), and query and key projections are scaled by
# QK_GAIN (attention that prefers some positions).
OUTPUT_GAIN = 5.0
QK_GAIN = 3.0
# An 8-bit cache rounds each key and value to one of 256 levels of its group: a value near the
# boundary between two goes either way with the slightest difference in the float computation
# before it, and such flips move these models' log-probabilities by up to a few 1e-2.
# The spread of mlx_lm's own answer under float-noise-sized perturbations (the embedding times
# 1 + NOISE * N(0, 1), SPREAD_DRAWS draws, decoding the same tokens) says how far an engine
# computing the same thing may be. NOISE is above the engine's own float differences: with float
# caches, the engine's log-probabilities are closer to mlx_lm's than this perturbation moves them.
NOISE = 1e-5
SPREAD_DRAWS = 8
# Failures that are mlx's or mlx_lm's limits, not the model's: MLX's CUDA build has no quantized
# matmul for float32 queries over an 8-bit cache; mlx_lm cannot quantize a rotating (sliding
# window) cache.
UNAVAILABLE = ("No implementation for problem shape", "Quantization NYI")
TOP = 5
VOCAB_SIZE = 49152  # SmolLM2's tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def make(case, tokenizer_dir, seed):
    """Build, initialize and save the case's model as mlx_lm converts a checkpoint."""
    config = dict(case["config"], model_type=case["model_type"], vocab_size=VOCAB_SIZE)
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    for name, weight in weights.items():
        if name.endswith("norm.weight"):
            gain = OUTPUT_GAIN if name.endswith("model.norm.weight") else 1.0
            weights[name] = gain * mx.random.uniform(0.5, 1.5, weight.shape)
        elif name.endswith(("q_proj.weight", "k_proj.weight")):
            weights[name] = QK_GAIN * weight
    text_config = config.get("text_config", config)
    if text_config.get("tie_word_embeddings"):
        weights = {k: v for k, v in weights.items() if not k.endswith("lm_head.weight")}
    weights = model.sanitize(weights)
    model.load_weights(list(weights.items()))
    if case.get("bfloat16"):
        model.set_dtype(mx.bfloat16)
        config["torch_dtype"] = "bfloat16"
    if case["quantize"]:
        # quantize_model reports the bits per weight on stdout, which carries the answer.
        with contextlib.redirect_stdout(sys.stderr):
            model, config = quantize_model(model, config, group_size=64, bits=4)
    out = Path(case["dir"])
    save_model(out, model)
    save_config(config, config_path=out / "config.json")
    for name in TOKENIZER_FILES:
        if (Path(tokenizer_dir) / name).is_file():
            shutil.copy(Path(tokenizer_dir) / name, out / name)
    return out


def decode(model, prompt, steps, kv_bits, forced=None):
    """The float32 log-probabilities at each of `steps` steps after `prompt` with mlx_lm's prompt
    cache, each step taking its likeliest token, or forced[step]."""
    cache = make_prompt_cache(model)
    if kv_bits:
        cache = [c.to_quantized(group_size=64, bits=kv_bits) for c in cache]
    logits = model(mx.array([prompt]), cache=cache)[0, -1]
    for step in range(steps):
        logits = logits.astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits)
        yield logprobs
        token = forced[step] if forced else mx.argmax(logprobs).item()
        logits = model(mx.array([[token]]), cache=cache)[0, -1]


def greedy(model, prompt, steps, kv_bits):
    """mlx_lm's greedy continuation of `prompt`, with each step's log-probabilities."""
    answer = {"tokens": [], "logprobs": [], "margins": [], "top": []}
    for logprobs in decode(model, prompt, steps, kv_bits):
        top = mx.argsort(-logprobs)[:TOP]
        ids, values = top.tolist(), logprobs[top].tolist()
        answer["tokens"].append(ids[0])
        answer["logprobs"].append(values[0])
        answer["margins"].append(values[0] - values[1])
        answer["top"].append([[i, v] for i, v in zip(ids, values)])
    return answer


def spread(model, prompt, answer, kv_bits):
    """How far the log-probabilities of `answer`'s top tokens move when the embedding is
    perturbed by NOISE, decoding the same tokens (largest over SPREAD_DRAWS draws)."""
    name, embedding = next(
        (k, v) for k, v in tree_flatten(model.parameters()) if k.endswith("embed_tokens.weight")
    )
    largest = 0.0
    for draw in range(SPREAD_DRAWS):
        mx.random.seed(draw)
        noisy = embedding * (1 + NOISE * mx.random.normal(embedding.shape))
        model.update(tree_unflatten([(name, noisy)]))
        steps = decode(model, prompt, len(answer["tokens"]), kv_bits, forced=answer["tokens"])
        for logprobs, top in zip(steps, answer["top"]):
            moved = logprobs[mx.array([i for i, _ in top])] - mx.array([v for _, v in top])
            largest = max(largest, mx.max(mx.abs(moved)).item())
    model.update(tree_unflatten([(name, embedding)]))
    return largest


def main():
    request = json.loads(sys.argv[1])
    results = []
    for case in request["cases"]:
        out = make(case, request["tokenizer"], request["seed"])
        model, _ = load_model(out)
        model.set_dtype(mx.float32)  # scales and biases too; packed weights are not floats
        try:
            answer = greedy(model, case["prompt"], case["steps"], case["kv_bits"])
            if case["kv_bits"]:
                answer["spread"] = spread(model, case["prompt"], answer, case["kv_bits"])
        except (RuntimeError, ValueError, NotImplementedError) as e:
            if not any(reason in str(e) for reason in UNAVAILABLE):
                raise
            answer = {"reference_unavailable": f"{type(e).__name__}: {e}"}
        results.append(dict(answer, name=case["name"]))
    print(json.dumps({"cases": results}))


if __name__ == "__main__":
    main()
