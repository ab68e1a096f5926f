#!/usr/bin/env python3
"""Writes two BF16 safetensors checkpoints of TinyLlama-1.1B's shape (not committed): A with random weights and B a
"fine-tune" of it (each weight plus 5% Gaussian noise), for measuring `wscan compare` on a model of realistic size.

    python3 bench/make_llama_pair.py A.safetensors B.safetensors [LAYERS]    (22 layers: 1.1B parameters, 2.2 GB each)
"""
import json
import struct
import sys

import numpy as np

a_path, b_path = sys.argv[1], sys.argv[2]
layers = int(sys.argv[3]) if len(sys.argv) > 3 else 22
d, ff, vocab, kv = 2048, 5632, 32000, 256
shapes = {"model.embed_tokens.weight": (vocab, d)}
for i in range(layers):
    p = f"model.layers.{i}."
    shapes.update({p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d),
                   p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d),
                   p + "mlp.gate_proj.weight": (ff, d), p + "mlp.up_proj.weight": (ff, d), p + "mlp.down_proj.weight": (d, ff),
                   p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,)})
shapes["model.norm.weight"] = (d,)
shapes["lm_head.weight"] = (vocab, d)
header, off = {}, 0
for k, s in shapes.items():
    n = int(np.prod(s)) * 2
    header[k] = {"dtype": "BF16", "shape": list(s), "data_offsets": [off, off + n]}
    off += n
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)


def bf16(x):
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)   # round to nearest even


rng = np.random.default_rng(0)
with open(a_path, "wb") as fa, open(b_path, "wb") as fb:
    for f in (fa, fb):
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
    for k, s in shapes.items():
        scale = 1.0 if len(s) == 1 else 0.02
        w = (rng.standard_normal(s, dtype=np.float32) * scale) if len(s) > 1 else np.ones(s, np.float32)
        fa.write(bf16(w).tobytes())
        fb.write(bf16(w + 0.05 * scale * rng.standard_normal(s, dtype=np.float32)).tobytes())
print(f"wrote {a_path} and {b_path}: {sum(int(np.prod(s)) for s in shapes.values()) / 1e9:.2f}B parameters each")
