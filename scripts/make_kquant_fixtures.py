#!/usr/bin/env python3
"""Writes the k-quant compare fixtures in Tests/Fixtures/kquant/ with llama.cpp's own quantizers.

The `gguf` package can decode the k-quants (Q2_K … Q6_K) but not write them, so the blocks come from llama.cpp's
`ggml_quantize_chunk` in the libggml that the PyPI package llama-cpp-python builds and ships (called through ctypes;
with an importance matrix it runs the quantize_row_*_impl searches that `llama-quantize --imatrix` runs, without one
the *_ref quantizers). gguf-py writes the GGUF containers around those raw blocks.

a.safetensors            the float32 weights A: two matrices, a heavy-tailed (Student t, 4 d.o.f.) 32×512 and a
                         Gaussian 16×256 (k-quant rows are multiples of 256).
TYPE.gguf                A quantized by llama.cpp's reference quantizer, for TYPE in Q2_K Q3_K Q4_K Q5_K Q6_K.
TYPE_imatrix.gguf        A quantized with a (seeded, random) importance matrix.
TYPE_f16.gguf            A rounded to float16 first, then quantized (llama-quantize reading an F16 GGUF).
Q4_K_q8.gguf, Q5_0_q8.gguf  A quantized to Q8_0, dequantized, and quantized again (`llama-quantize
                         --allow-requantize` from a Q8_0 file): roundings of the Q8_0 copy, not of A.
Q4_K_lora.gguf           A plus a rank-4 update of 0.3% of ‖W‖, then Q4_K: hidden under Q4_K's ~3–6% error.
Q6_K_lora.gguf           the same with 0.3% before Q6_K.
Q5_K_tuned.gguf          A plus dense noise of 0.5% of ‖W‖ (a fine-tune's full-rank change), then Q5_K.
MANIFEST.json            the expected reading of each file (rounding or changed), with its relative L2 error to A.

Deterministic: seeded numpy; llama.cpp's quantizers are deterministic. Needs: numpy, safetensors, gguf,
llama-cpp-python (`pip install llama-cpp-python`, built from source). Run: python3 scripts/make_kquant_fixtures.py
"""
import ctypes
import glob
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "kquant")
TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def load_ggml() -> ctypes.CDLL:
    import llama_cpp  # noqa: F401  (the package that ships libggml)
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    for dep in sorted(glob.glob(os.path.join(libdir, "libggml-base.so*"))):
        lib = ctypes.CDLL(dep, mode=ctypes.RTLD_GLOBAL)
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.ggml_row_size.restype = ctypes.c_size_t
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        return lib
    raise SystemExit(f"libggml-base not found in {libdir}")


GGML = None


def quantize(x: np.ndarray, qtype: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """llama.cpp's quantizer for one 2-D float32 matrix: the raw blocks, one uint8 row per matrix row."""
    t = int(T[qtype])
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, n = x.shape
    row = GGML.ggml_row_size(t, n)
    out = np.zeros((rows, row), dtype=np.uint8)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    size = GGML.ggml_quantize_chunk(t, x.ctypes.data, out.ctypes.data, 0, rows, n,
                                    None if im is None else im.ctypes.data)
    assert size == rows * row, (qtype, size, rows * row)
    return out


def write_gguf(path: str, tensors: dict[str, np.ndarray], qtype: str) -> None:
    w = gguf.GGUFWriter(path, "llama")
    for name, blocks in tensors.items():
        w.add_tensor(name, blocks, raw_dtype=T[qtype])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    global GGML
    GGML = load_ggml()
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261129)
    A = {
        "blk.0.ffn_up.weight": (rng.standard_t(4, (32, 512)) * 0.02).astype(np.float32),
        "blk.0.attn_q.weight": (rng.standard_normal((16, 256)) * 0.05).astype(np.float32),
    }
    save_file(A, os.path.join(OUT, "a.safetensors"))
    imatrix = {n: (rng.gamma(0.5, 2.0, a.shape[1]) + 1e-3).astype(np.float32) for n, a in A.items()}

    def lora(w: np.ndarray, rank: int, size: float) -> np.ndarray:
        l = rng.standard_normal((w.shape[0], rank)) @ rng.standard_normal((rank, w.shape[1]))
        return (w + l * (size * np.linalg.norm(w) / np.linalg.norm(l))).astype(np.float32)

    def dense(w: np.ndarray, size: float) -> np.ndarray:
        d = rng.standard_normal(w.shape)
        return (w + d * (size * np.linalg.norm(w) / np.linalg.norm(d))).astype(np.float32)

    manifest = {}

    def emit(name: str, qtype: str, src: dict[str, np.ndarray], expect: str, im: bool = False) -> None:
        blocks = {n: quantize(a, qtype, imatrix[n] if im else None) for n, a in src.items()}
        path = os.path.join(OUT, name)
        write_gguf(path, blocks, qtype)
        # the relative L2 error to A as the gguf package decodes it
        err = {}
        for n, b in blocks.items():
            y = gguf.quants.dequantize(b, T[qtype]).reshape(A[n].shape)
            err[n] = float(np.linalg.norm(y - A[n]) / np.linalg.norm(A[n]))
        manifest[name] = {"type": qtype, "expect": expect, "relative_l2": err}

    for q in TYPES:
        emit(f"{q}.gguf", q, A, "rounding")
        emit(f"{q}_imatrix.gguf", q, A, "rounding", im=True)
        emit(f"{q}_f16.gguf", q, {n: a.astype(np.float16).astype(np.float32) for n, a in A.items()}, "rounding")
    q8 = {n: gguf.quants.dequantize(quantize(a, "Q8_0"), T.Q8_0).reshape(a.shape) for n, a in A.items()}
    emit("Q4_K_q8.gguf", "Q4_K", q8, "rounding via Q8_0")
    emit("Q5_0_q8.gguf", "Q5_0", q8, "rounding via Q8_0")
    emit("Q4_K_lora.gguf", "Q4_K", {n: lora(a, 4, 0.003) for n, a in A.items()}, "changed")
    emit("Q6_K_lora.gguf", "Q6_K", {n: lora(a, 4, 0.003) for n, a in A.items()}, "changed")
    emit("Q5_K_tuned.gguf", "Q5_K", {n: dense(a, 0.005) for n, a in A.items()}, "changed")
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
