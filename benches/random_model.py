"""A random-weight Llama-3-shaped model as a Q4_1 GGUF, for speed and crash tests at real sizes
without downloads (the GPU machine reaches nothing). The tokenizer, chat template and every other
non-shape key come from a real GGUF (the SmolLM2 test model), so prompts tokenize and render as
they would; the weights are random Q4_1 blocks, so the text is meaningless. `minerva convert`
turns it into its exact MLX twin (Q4_1 maps onto MLX 4-bit).

    python3 benches/random_model.py --like models/SmolLM2-135M-Instruct.Q4_1.gguf --size 8b OUT.gguf
"""

import argparse

import numpy as np
import gguf

# Llama 3.2 1B / 3B and Llama 3.1 8B, but with the donor's vocabulary.
SIZES = {
    "1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, ffn=8192),
    "3b": dict(hidden=3072, layers=28, heads=24, kv_heads=8, ffn=8192),
    "8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336),
}
Q4_1 = gguf.GGMLQuantizationType.Q4_1
BLOCK = 32
BLOCK_BYTES = 20  # f16 scale, f16 minimum, 16 bytes of 4-bit values


def q4_1(rng, rows, cols, spread):
    """Random Q4_1 rows: values spread evenly over [-spread, spread]."""
    blocks = rows * cols // BLOCK
    data = np.empty((blocks, BLOCK_BYTES), dtype=np.uint8)
    head = np.empty((blocks, 2), dtype=np.float16)
    head[:, 0] = spread * 2 / 15  # scale
    head[:, 1] = -spread  # minimum
    data[:, :4] = head.view(np.uint8)
    data[:, 4:] = rng.integers(0, 256, size=(blocks, 16), dtype=np.uint8)
    return data.reshape(rows, cols // BLOCK * BLOCK_BYTES)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--like", required=True, help="GGUF whose tokenizer and template to take")
    ap.add_argument("--size", choices=sorted(SIZES), default="8b")
    ap.add_argument("--context", type=int, default=8192)
    ap.add_argument("out")
    args = ap.parse_args()
    shape = SIZES[args.size]
    hidden, heads, kv_heads, ffn = shape["hidden"], shape["heads"], shape["kv_heads"], shape["ffn"]
    head_dim = hidden // heads

    donor = gguf.GGUFReader(args.like)
    arch = "llama"
    writer = gguf.GGUFWriter(args.out, arch)
    for field in donor.fields.values():
        name = field.name
        if name.startswith("GGUF.") or name.startswith(f"{arch}.") or name in (
            "general.architecture", "general.file_type", "general.name"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    vocab = len(donor.fields["tokenizer.ggml.tokens"].data)
    writer.add_name(f"random-llama-{args.size}")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    writer.add_context_length(args.context)
    writer.add_embedding_length(hidden)
    writer.add_block_count(shape["layers"])
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)

    rng = np.random.default_rng(0)
    # Spreads that keep activations of a random network in range (about 1/sqrt(inputs)).
    def add(name, rows, cols):
        writer.add_tensor(name, q4_1(rng, rows, cols, 1.7 / np.sqrt(cols)), raw_dtype=Q4_1)

    def norm(name, size):
        writer.add_tensor(name, np.ones(size, dtype=np.float32))

    add("token_embd.weight", vocab, hidden)
    for i in range(shape["layers"]):
        p = f"blk.{i}"
        norm(f"{p}.attn_norm.weight", hidden)
        add(f"{p}.attn_q.weight", heads * head_dim, hidden)
        add(f"{p}.attn_k.weight", kv_heads * head_dim, hidden)
        add(f"{p}.attn_v.weight", kv_heads * head_dim, hidden)
        add(f"{p}.attn_output.weight", hidden, heads * head_dim)
        norm(f"{p}.ffn_norm.weight", hidden)
        add(f"{p}.ffn_gate.weight", ffn, hidden)
        add(f"{p}.ffn_up.weight", ffn, hidden)
        add(f"{p}.ffn_down.weight", hidden, ffn)
    norm("output_norm.weight", hidden)
    add("output.weight", vocab, hidden)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"{args.out}: random {args.size} ({shape['layers']} layers, hidden {hidden}), vocabulary {vocab}")


if __name__ == "__main__":
    main()
