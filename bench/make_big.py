#!/usr/bin/env python3
"""Writes a large safetensors file of random weights for `make bench` (not committed).

    python3 bench/make_big.py OUT.safetensors DTYPE(F32|BF16) GIB [TENSORS]
"""
import json
import struct
import sys

import numpy as np

out, dtype, gib = sys.argv[1], sys.argv[2], float(sys.argv[3])
ntensors = int(sys.argv[4]) if len(sys.argv) > 4 else 64
itemsize = {"F32": 4, "BF16": 2}[dtype]
total = int(gib * (1 << 30))
per = total // ntensors // itemsize
rows = 1024
cols = per // rows
header = {}
off = 0
for i in range(ntensors):
    nb = rows * cols * itemsize
    header[f"layers.{i}.weight"] = {"dtype": dtype, "shape": [rows, cols], "data_offsets": [off, off + nb]}
    off += nb
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
rng = np.random.default_rng(0)
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h)
    for i in range(ntensors):
        a = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02)
        if dtype == "BF16":
            a = (a.view(np.uint32) >> 16).astype(np.uint16)
        f.write(a.tobytes())
