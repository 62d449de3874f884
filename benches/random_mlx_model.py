"""A random-weight MLX model directory in a real model's shape, made by mlx_lm's own classes and
saved as `mlx_lm.convert` saves a 4-bit checkpoint (bfloat16, affine 4-bit in groups of 64), with
the tokenizer of another directory (its ids must fit the shape's vocabulary). For measuring
speed only: the text it writes means nothing.

Usage: random_mlx_model.py SHAPE OUT_DIR --tokenizer DIR [--dtype float32]   (SHAPE: see SHAPES)
"""
import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx
from mlx_lm.utils import _get_classes, quantize_model, save_config, save_model

# mlx_lm 0.32.2's quantized experts pass `global_scale=None` to mx.gather_qmm, which mlx 0.32.2
# rejects (see tests/python/mlx_reference.py); the peer needs the same shim (benches/mlx_lm_peer.py).
_gather_qmm = mx.gather_qmm
mx.gather_qmm = lambda *a, global_scale=None, **k: _gather_qmm(
    *a, **k, **({} if global_scale is None else {"global_scale": global_scale})
)

GEMMA3 = {
    "model_type": "gemma3_text", "head_dim": 256, "query_pre_attn_scalar": 256,
    "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0, "sliding_window_pattern": 6,
    "rms_norm_eps": 1e-6, "vocab_size": 262144,
}
QWEN3_MOE = {
    "model_type": "qwen3_moe", "decoder_sparse_step": 1, "mlp_only_layers": [],
    "norm_topk_prob": True, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
    "max_position_embeddings": 40960, "vocab_size": 151936, "tie_word_embeddings": False,
}
SHAPES = {
    # Gemma 3 270M's and 4B's text models (Hugging Face configs).
    "gemma3-270m": dict(GEMMA3, hidden_size=640, num_hidden_layers=18, intermediate_size=2048,
                        num_attention_heads=4, num_key_value_heads=1, sliding_window=512,
                        max_position_embeddings=32768),
    "gemma3-4b": dict(GEMMA3, hidden_size=2560, num_hidden_layers=34, intermediate_size=10240,
                      num_attention_heads=8, num_key_value_heads=4, sliding_window=1024,
                      rope_scaling={"rope_type": "linear", "factor": 8.0},
                      max_position_embeddings=131072, vocab_size=262208),
    # Qwen3-30B-A3B, and a small model of the same make for the CPU.
    "qwen3-30b-a3b": dict(QWEN3_MOE, hidden_size=2048, num_hidden_layers=48,
                          intermediate_size=6144, num_attention_heads=32, num_key_value_heads=4,
                          head_dim=128, num_experts=128, num_experts_per_tok=8,
                          moe_intermediate_size=768),
    "qwen3-moe-small": dict(QWEN3_MOE, hidden_size=512, num_hidden_layers=8,
                            intermediate_size=1536, num_attention_heads=8,
                            num_key_value_heads=2, head_dim=64, num_experts=32,
                            num_experts_per_tok=4, moe_intermediate_size=256),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("shape", choices=sorted(SHAPES))
    p.add_argument("out")
    p.add_argument("--tokenizer", required=True)
    # bfloat16 as real checkpoints; float32 for the CPU, where MLX's bfloat16 products have no
    # BLAS (mlx_lm took over 300 s for pp128 + tg64 on the bfloat16 gemma3-270m here).
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    a = p.parse_args()
    config = dict(SHAPES[a.shape])
    # Every token the model can pick must have text, or a stream shows no progress while it
    # generates (timing goes by text): the vocabulary is the tokenizer's. The output head is then
    # smaller than the real model's (e.g. 49,152 rows instead of Qwen3's 151,936).
    vocab = json.loads((Path(a.tokenizer) / "tokenizer.json").read_text())
    config["vocab_size"] = len(vocab["model"]["vocab"]) + sum(
        t["id"] >= len(vocab["model"]["vocab"]) for t in vocab.get("added_tokens", [])
    )
    model_class, args_class = _get_classes(config)
    mx.random.seed(0)
    model = model_class(args_class.from_dict(config))
    if config["model_type"] == "gemma3_text":
        model.sanitize({})  # no head of its own: tied to the embedding, as Gemma 3's checkpoints
    # Lazy until saved: each shard is drawn, cast and quantized as it is written.
    model.set_dtype(getattr(mx, a.dtype))
    with contextlib.redirect_stdout(sys.stderr):
        model, config = quantize_model(model, config, group_size=64, bits=4)
    out = Path(a.out)
    save_model(out, model)
    save_config(config, config_path=out / "config.json")
    for name in TOKENIZER_FILES:
        if (Path(a.tokenizer) / name).is_file():
            shutil.copy(Path(a.tokenizer) / name, out / name)
    print(out)


if __name__ == "__main__":
    main()
