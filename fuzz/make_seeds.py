#!/usr/bin/env python3
"""Seed inputs for the reader fuzzer (fuzz/README in the main README, "Fuzzing"): small valid files of every
format, written by the real libraries, plus the committed test fixtures. Each seed is one byte naming the file
extension the harness uses (see extensions in Sources/FuzzReaders/Fuzz.swift) followed by the file."""
import io, json, os, pickle, sys, glob
import numpy as np

EXT = ["safetensors", "gguf", "npy", "npz", "pt", "pkl", "bin", "json"]
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "seeds")
os.makedirs(out, exist_ok=True)
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

def seed(name, ext, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([EXT.index(ext)]) + data)

rng = np.random.default_rng(0)
w = {"layer.weight": rng.standard_normal((4, 6)).astype(np.float32), "layer.bias": np.arange(4, dtype=np.float16)}

from safetensors.numpy import save as st_save
seed("tiny.safetensors", "safetensors", st_save(w, metadata={"format": "np"}))
b = io.BytesIO(); np.save(b, w["layer.weight"]); seed("tiny.npy", "npy", b.getvalue())
b = io.BytesIO(); np.savez(b, **w); seed("tiny.npz", "npz", b.getvalue())
b = io.BytesIO(); np.savez_compressed(b, **w); seed("tiny_deflated.npz", "npz", b.getvalue())

import torch
sd = {"fc.weight": torch.randn(3, 5), "fc.bias": torch.zeros(3, dtype=torch.bfloat16),
      "view": torch.arange(20, dtype=torch.int64).reshape(4, 5)[:, 1:3]}
b = io.BytesIO(); torch.save(sd, b); seed("tiny.pt", "pt", b.getvalue())
b = io.BytesIO(); torch.save(sd, b, _use_new_zipfile_serialization=False); seed("legacy.bin", "bin", b.getvalue())

class Evil:
    def __reduce__(self): return (os.system, ("true",))
seed("evil.pkl", "pkl", pickle.dumps({"w": [1.0, 2.0], "x": Evil()}, protocol=2))
seed("index.json", "json", json.dumps({"metadata": {"total_size": 8},
                                      "weight_map": {"a": "model-00001-of-00001.safetensors"}}).encode())

import gguf
p = os.path.join(out, "_tmp.gguf")
wr = gguf.GGUFWriter(p, "llama")
wr.add_tensor("tok.weight", rng.standard_normal((2, 32)).astype(np.float32))
wr.add_tensor("q.weight", gguf.quants.quantize(rng.standard_normal((1, 32)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0),
              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
wr.write_header_to_file(); wr.write_kv_data_to_file(); wr.write_tensors_to_file(); wr.close()
seed("tiny.gguf", "gguf", open(p, "rb").read()); os.remove(p)

for f in glob.glob(os.path.join(root, "Tests/Fixtures/*/*")):
    if "/lap/" in f: continue
    ext = f.rsplit(".", 1)[-1]
    if ext in EXT and os.path.getsize(f) < 64 << 10:
        seed("fixture_" + os.path.basename(f), ext, open(f, "rb").read())
print(f"{len(os.listdir(out))} seeds in {out}")
