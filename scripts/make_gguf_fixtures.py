#!/usr/bin/env python3
"""Writes the GGUF test fixtures in Tests/Fixtures/gguf/ with the reference `gguf` package (llama.cpp).

all_types.gguf            one tensor of every type wscan decodes, an opaque IQ4_NL tensor, and metadata of
                          every GGUF value type (including nested and long arrays).
all_types.ref.safetensors the reference decoding of every decodable tensor as float32 (gguf.quants.dequantize
                          for block types, numpy astype(float32) otherwise), same names, row-major shapes.
align64.gguf              two tensors with general.alignment = 64.

Deterministic: seeded numpy, no timestamps. Run: python3 scripts/make_gguf_fixtures.py
"""
import json
import os
import struct

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, GGUFValueType as V
from gguf.quants import quantize, dequantize

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "gguf")


def q8_k_blocks(x: np.ndarray) -> np.ndarray:
    """block_q8_K { f32 d; i8 qs[256]; i16 bsums[16] } as in ggml-quants.c quantize_row_q8_K_ref
    (gguf.quants has no Q8_K quantizer). Returns the uint8 byte array and the float32 reference decoding."""
    rows = x.reshape(-1, 256).astype(np.float32)
    out = bytearray()
    ref = []
    for r in rows:
        amax_i = int(np.argmax(np.abs(r)))
        mx = r[amax_i]
        iscale = np.float32(-127.0) / mx
        q = np.clip(np.round(iscale * r), -128, 127).astype(np.int8)  # nearest_int (ties never hit here)
        d = np.float32(1.0) / iscale
        bsums = q.reshape(16, 16).astype(np.int16).sum(axis=1).astype(np.int16)
        out += struct.pack("<f", d) + q.tobytes() + bsums.astype("<i2").tobytes()
        ref.append(np.float32(d) * q.astype(np.float32))
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(x.shape[0], -1), np.stack(ref).reshape(x.shape).astype(np.float32)


def write_safetensors(path: str, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240611)
    w = gguf.GGUFWriter(os.path.join(OUT, "all_types.gguf"), arch="wscantest")

    # metadata: every value type
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.5)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "hello GGUF")
    w.add_uint64("test.u64", 18000000000000000000)
    w.add_int64("test.i64", -9000000000000000000)
    w.add_float64("test.f64", 2.25)
    w.add_array("test.array_i32", [1, -2, 3])
    w.add_key_value("test.array_u8", [1, 2, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_array("test.array_str", ["a", "bc"])
    w.add_array("test.array_bool", [True, False])
    w.add_array("test.array_f32", [0.25, -1.5])
    w.add_array("test.nested", [[1, 2], [3, 4, 5]])
    w.add_array("test.nested3", [[["x"]], [["y", "z"]]])
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(40)])
    w.add_key_value("test.array_u64", [1, 2], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("test.array_f64", [0.5], V.ARRAY, sub_type=V.FLOAT64)

    ref: dict[str, np.ndarray] = {}

    def plain(name: str, a: np.ndarray) -> None:
        w.add_tensor(name, a)
        ref[name] = a.astype(np.float32)

    plain("f32", rng.standard_normal((3, 5)).astype(np.float32))
    plain("f16", rng.standard_normal((2, 3, 7)).astype(np.float16))
    plain("f64", rng.standard_normal((4, 6)))
    plain("i8", rng.integers(-128, 128, (2, 16)).astype(np.int8))
    plain("i16", rng.integers(-32768, 32768, (16,)).astype(np.int16))
    plain("i32", rng.integers(-2**24, 2**24, (3, 4)).astype(np.int32))
    plain("i64", rng.integers(-2**24, 2**24, (2, 2, 2, 2)).astype(np.int64))
    bf = rng.standard_normal((2, 9)).astype(np.float32)
    bq = quantize(bf, T.BF16)
    w.add_tensor("bf16", bq, raw_dtype=T.BF16)
    ref["bf16"] = dequantize(bq, T.BF16).astype(np.float32)

    shapes = {T.Q4_0: (4, 64), T.Q4_1: (2, 96), T.Q5_0: (3, 64), T.Q5_1: (2, 64), T.Q8_0: (2, 3, 64)}
    for qt, shape in shapes.items():
        x = (rng.standard_normal(shape) * rng.uniform(0.01, 3.0, shape[:-1] + (1,))).astype(np.float32)
        x.flat[5] = 0.0
        q = quantize(x, qt)
        w.add_tensor(qt.name.lower(), q, raw_dtype=qt)
        r = dequantize(q, qt).astype(np.float32)
        assert r.shape == x.shape
        ref[qt.name.lower()] = r
    # gguf.quants has no k-quant quantizers: random block bytes (every bit pattern of the packed fields) with
    # finite f16 scales written over the d/dmin fields, decoded with gguf.quants.dequantize.
    kshapes = {T.Q2_K: ((2, 256), [80, 82]), T.Q3_K: ((2, 256), [108]), T.Q4_K: ((3, 256), [0, 2]),
               T.Q5_K: ((2, 256), [0, 2]), T.Q6_K: ((2, 256), [208])}
    for qt, (shape, half_offsets) in kshapes.items():
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        nblk = shape[-1] // bs
        q = rng.integers(0, 256, shape[:-1] + (nblk, ts)).astype(np.uint8)
        for o in half_offsets:
            h = (rng.standard_normal(q.shape[:-1]) * 0.05).astype(np.float16)
            q[..., o:o + 2] = h.view(np.uint8).reshape(q.shape[:-1] + (2,))
        q = q.reshape(shape[:-1] + (nblk * ts,))
        w.add_tensor(qt.name.lower(), q, raw_dtype=qt)
        r = dequantize(q, qt).astype(np.float32)
        assert r.shape == shape and np.isfinite(r).all()
        ref[qt.name.lower()] = r
    xk = rng.standard_normal((2, 256)).astype(np.float32)
    qk, rk = q8_k_blocks(xk)
    w.add_tensor("q8_k", qk, raw_dtype=T.Q8_K)
    ref["q8_k"] = rk

    # a type wscan catalogues but cannot decode
    iq = rng.integers(0, 256, (2, 64 // 32 * 18)).astype(np.uint8)
    w.add_tensor("iq4_nl", iq, raw_dtype=T.IQ4_NL)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    write_safetensors(os.path.join(OUT, "all_types.ref.safetensors"), ref)

    w = gguf.GGUFWriter(os.path.join(OUT, "align64.gguf"), arch="wscantest")
    w.add_custom_alignment(64)
    w.add_tensor("a", np.arange(10, dtype=np.float32))
    w.add_tensor("b", np.arange(6, dtype=np.float16).reshape(2, 3))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # cross-check with the reference reader
    r = gguf.GGUFReader(os.path.join(OUT, "all_types.gguf"))
    assert len(r.tensors) == len(ref) + 1
    r = gguf.GGUFReader(os.path.join(OUT, "align64.gguf"))
    assert r.alignment == 64


if __name__ == "__main__":
    main()
