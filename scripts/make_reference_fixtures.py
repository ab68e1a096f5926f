#!/usr/bin/env python3
"""Reference fixtures for wscan's tests, produced with the real libraries (numpy, safetensors, torch).

Writes into Tests/Fixtures/:
  formats/   small files in every dtype/layout the foundation readers handle (npy v1/v2/v3, Fortran order,
             big-endian, object arrays, deflated npz, safetensors in BF16/F8/F64/ints)
  stats_formats.json  numpy float64 statistics of every tensor in formats/
  stats_corpus.json   numpy float64 statistics of every tensor in corpus/
  stats_minilm.json   the same for all-MiniLM-L6-v2 (when .cache/minilm/model.safetensors exists)

Statistics: NaN/Inf excluded from mean/std/min/max/l2 (wscan counts them separately); std is population (ddof=0).
"""
import json
import os
import sys

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_v] = "1"
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "Tests", "Fixtures")


def stats(a):
    a = np.asarray(a)
    if a.dtype == object:
        return None
    if np.iscomplexobj(a):
        a = np.stack([a.real, a.imag], axis=-1)
    x = a.astype(np.float64).ravel()
    fin = np.isfinite(x)
    f = x[fin]
    return {
        "count": int(a.size),
        "mean": float(f.mean()) if f.size else None,
        "std": float(f.std()) if f.size else None,
        "min": float(f.min()) if f.size else None,
        "max": float(f.max()) if f.size else None,
        "l2": float(np.sqrt((f * f).sum())),
        "zeros": int((x == 0).sum()),
        "nans": int(np.isnan(x).sum()),
        "infs": int(np.isinf(x).sum()),
    }


def load_any(path):
    """Tensors of a file as numpy arrays (float32 for bf16/f8 via torch)."""
    if path.endswith(".npy"):
        return {os.path.basename(path)[:-4]: np.load(path, allow_pickle=False)}
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if path.endswith(".index.json"):
        idx = json.load(open(path))
        out = {}
        for shard in sorted(set(idx["weight_map"].values())):
            out.update(load_any(os.path.join(os.path.dirname(path), shard)))
        return out
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        import torch
        out = {}
        with safe_open(path, framework="pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                out[k] = t.float().numpy() if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2, torch.float16) else t.numpy()
        return out
    raise ValueError(path)


def make_formats(d):
    import torch
    from safetensors.torch import save_file as st_save
    from safetensors.numpy import save_file as np_save
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 19)).astype(np.float32)
    np.save(os.path.join(d, "c_order_f32.npy"), a)
    np.save(os.path.join(d, "fortran_f64.npy"), np.asfortranarray(rng.standard_normal((13, 7, 3))))
    np.save(os.path.join(d, "bigendian_f4.npy"), rng.standard_normal((50,)).astype(">f4"))
    np.save(os.path.join(d, "int16.npy"), rng.integers(-3000, 3000, size=(64, 3)).astype(np.int16))
    np.save(os.path.join(d, "bool.npy"), rng.random((100,)) > 0.3)
    np.save(os.path.join(d, "half.npy"), rng.standard_normal((33, 5)).astype(np.float16))
    np.save(os.path.join(d, "complex64.npy"), (rng.standard_normal(20) + 1j * rng.standard_normal(20)).astype(np.complex64))
    with_nan = rng.standard_normal(300).astype(np.float32)
    with_nan[[3, 77]] = np.nan
    with_nan[[5]] = np.inf
    with_nan[[9, 10, 11]] = 0
    np.save(os.path.join(d, "nan_inf_f32.npy"), with_nan)
    # version 2.0 and 3.0 headers
    with open(os.path.join(d, "v2_header.npy"), "wb") as f:
        np.lib.format.write_array(f, rng.standard_normal((4, 5)).astype(np.float32), version=(2, 0))
    with open(os.path.join(d, "v3_header.npy"), "wb") as f:
        np.lib.format.write_array(f, rng.standard_normal((6,)).astype(np.float32), version=(3, 0))
    np.save(os.path.join(d, "object_array.npy"), np.array([{"a": 1}, "text", 3], dtype=object), allow_pickle=True)
    np.savez_compressed(os.path.join(d, "deflated.npz"), w=rng.standard_normal((40, 40)).astype(np.float32),
                        b=np.arange(40, dtype=np.int64), h=rng.standard_normal((8, 8)).astype(np.float16))
    np.savez(os.path.join(d, "stored.npz"), w=rng.standard_normal((16, 12)).astype(np.float64))
    t = {
        "bf16": torch.from_numpy(rng.standard_normal((64, 48)).astype(np.float32)).to(torch.bfloat16),
        "f8_e4m3": torch.from_numpy(rng.standard_normal((32, 16)).astype(np.float32)).to(torch.float8_e4m3fn),
        "f8_e5m2": torch.from_numpy(rng.standard_normal((32, 16)).astype(np.float32)).to(torch.float8_e5m2),
        "f16": torch.from_numpy(rng.standard_normal((20, 20)).astype(np.float32)).to(torch.float16),
        "f64": torch.from_numpy(rng.standard_normal((9, 9))),
        "i32": torch.from_numpy(rng.integers(-100000, 100000, size=(50,)).astype(np.int32)),
        "u8": torch.from_numpy(rng.integers(0, 255, size=(70,)).astype(np.uint8)),
        "i64": torch.from_numpy(rng.integers(-2**40, 2**40, size=(10,)).astype(np.int64)),
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "empty": torch.zeros((0, 4), dtype=torch.float32),
    }
    st_save(t, os.path.join(d, "mixed_dtypes.safetensors"), metadata={"format": "pt"})


def collect(files, base):
    out = {}
    for p in files:
        rel = os.path.relpath(p, base)
        out[rel] = {k: stats(v) for k, v in sorted(load_any(p).items())}
    return out


def main():
    fmt = os.path.join(FIX, "formats")
    make_formats(fmt)
    files = sorted(os.path.join(fmt, f) for f in os.listdir(fmt) if f != "object_array.npy")
    json.dump(collect(files, fmt), open(os.path.join(FIX, "stats_formats.json"), "w"), indent=1, sort_keys=True)
    corpus = os.path.join(ROOT, "corpus")
    cfiles = []
    for dp, _, fs in os.walk(corpus):
        for f in fs:
            if f.endswith((".safetensors", ".npz", ".index.json")) and "sharded" not in dp or f.endswith(".index.json"):
                cfiles.append(os.path.join(dp, f))
    json.dump(collect(sorted(cfiles), corpus), open(os.path.join(FIX, "stats_corpus.json"), "w"), indent=1, sort_keys=True)
    mini = os.path.join(ROOT, ".cache", "minilm", "model.safetensors")
    if os.path.exists(mini):
        json.dump(collect([mini], os.path.dirname(mini)), open(os.path.join(FIX, "stats_minilm.json"), "w"), indent=1, sort_keys=True)
    else:
        print("MiniLM not fetched (make minilm); stats_minilm.json left as is", file=sys.stderr)


if __name__ == "__main__":
    main()
