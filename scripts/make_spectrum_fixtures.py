#!/usr/bin/env python3
"""Spectral reference fixtures for wscan, produced with numpy and WeightWatcher 0.7.7.

Writes into Tests/Fixtures/:
  ww_minilm.json   WeightWatcher 0.7.7 analyze() with DEFAULT arguments on all-MiniLM-L6-v2
                   (the model directory is handed to WW as-is: WW reads model*.safetensors itself),
                   one record per analysed layer + the tensors WW skipped and why; plus, separately,
                   the extra MP-fit columns of a NON-default analyze(mp_fit=True) run.
  ww_corpus.json   the same (default analyze()) for every corpus/*.safetensors file and the sharded
                   corpus/mlp_seed1_sharded directory; fc3 (10x32) exercises WW's small-N (<20 evals) fit.
  svd_minilm.json  numpy.linalg.svd(W.astype(float64), compute_uv=False) of every floating 2-D tensor
                   of MiniLM, descending, 9 significant digits.
  svd_corpus.json  the same for every 2-D tensor of corpus/**/*.safetensors (keys: paths relative to corpus/).

Every WW number is also recomputed here by an independent numpy implementation of the spec
(see spec_layer below / the spec notes); the script fails if the two disagree.

Model location: $WSCAN_MINILM_DIR, else <repo>/.cache/minilm, else <main worktree>/.cache/minilm.
If no model is found, the MiniLM fixtures are left as they are and the script exits 0.
"""
import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
           "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_v] = "1"

import glob
import json
import logging
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "Tests", "Fixtures")
CORPUS = os.environ.get("WSCAN_CORPUS_DIR", os.path.join(ROOT, "corpus"))
SIG = 9  # significant digits stored for singular values / WW floats


def find_minilm():
    cands = []
    if os.environ.get("WSCAN_MINILM_DIR"):
        cands.append(os.environ["WSCAN_MINILM_DIR"])
    cands.append(os.path.join(ROOT, ".cache", "minilm"))
    try:  # a git worktree: look in the main worktree too
        common = subprocess.run(["git", "-C", ROOT, "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                capture_output=True, text=True, check=True).stdout.strip()
        cands.append(os.path.join(os.path.dirname(common), ".cache", "minilm"))
    except Exception:
        pass
    for c in cands:
        if os.path.isfile(os.path.join(c, "model.safetensors")):
            return c
    return None


def r(x, sig=SIG):
    """float -> float rounded to `sig` significant digits (JSON-safe; NaN/Inf -> None)."""
    x = float(x)
    if not np.isfinite(x):
        return None
    return float(f"{x:.{sig}g}")


def load_tensors(path):
    """name -> (numpy array as float32 if floating, dtype string, shape). Uses torch for f16/bf16."""
    from safetensors import safe_open
    import torch
    out = {}
    with safe_open(path, framework="pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            dt = str(t.dtype).replace("torch.", "")
            if t.is_floating_point():
                a = t.float().numpy()  # exactly what WW does (torch_T_to_np = T.float().numpy())
            else:
                a = t.numpy()
            out[k] = (a, dt, list(t.shape))
    return out


# --------------------------------------------------------------------------------------------
# SVD fixtures
# --------------------------------------------------------------------------------------------

def svd_entry(a, dt, shape):
    sv = np.linalg.svd(a.astype(np.float64), compute_uv=False)  # descending
    return {"shape": shape, "dtype": dt, "sv": [r(x) for x in sv]}


def svd_fixture(files, base):
    out = {}
    skipped = {}
    for p in files:
        rel = os.path.relpath(p, base)
        ents = {}
        for k, (a, dt, shape) in load_tensors(p).items():
            if a.ndim != 2:
                continue
            if not np.issubdtype(a.dtype, np.floating):
                skipped.setdefault(rel, {})[k] = f"non-floating 2-D tensor ({dt}), not decomposed"
                continue
            ents[k] = svd_entry(a, dt, shape)
        out[rel] = ents
    return out, skipped


def svd_header():
    return {
        "generator": "scripts/make_spectrum_fixtures.py",
        "numpy_version": np.__version__,
        "method": "numpy.linalg.svd(W.astype(numpy.float64), compute_uv=False) on the tensor as stored "
                  "(row-major [out, in]; f16/bf16 first widened to float32 via torch, F32 used as is)",
        "order": "descending",
        "precision": f"float64 rounded to {SIG} significant digits (relative rounding error <= 5e-{SIG})",
        "truncated": False,
        "note": "complete spectra (min(rows, cols) values per tensor). Singular values that are tiny relative to "
                "sv[0] (rank-deficient tensors) are at the LAPACK noise level (~1e-16 * sv[0] * max(shape)); "
                "compare those with an absolute tolerance relative to sv[0], the rest with a relative one.",
    }


# --------------------------------------------------------------------------------------------
# Independent re-implementation of WeightWatcher 0.7.7 analyze() defaults (the spec, as code)
# --------------------------------------------------------------------------------------------

EVALS_THRESH = 1e-5          # constants.py:190
EPSILON = 1e-10              # constants.py:191
WEAK_RANK_LOSS_TOL = 1e-6    # constants.py:162
SMALL_N_CUTOFF = 20          # WW_powerlaw.py:26


def ww_fit(data):
    """WW_powerlaw.WWFit(data) with xmin=None, xmax=None. Returns (alpha, xmin, xmax, D, sigma)."""
    x = np.sort(np.asarray(data, dtype=np.float64))
    n_all = len(x)
    if n_all < 2:
        raise ValueError("need >= 2 eigenvalues above 1e-5")
    logx = np.log(x)
    m = n_all - 1  # candidate xmins = x[:-1]
    alphas = np.zeros(m)
    Ds = np.ones(m)
    if n_all >= SMALL_N_CUTOFF:
        for i in range(m):
            n = float(n_all - i)
            a = 1 + n / (np.sum(logx[i:]) - n * logx[i])
            alphas[i] = a
            if a > 1:
                Ds[i] = np.max(np.abs(1 - (x[i:] / x[i]) ** (-a + 1) - np.arange(n) / n))
        sigmas = (alphas - 1) / np.sqrt(n_all - np.arange(m))
    else:  # fit_powerlaw_smallN(k_min=8, lambda_prior=0)
        Js = np.full(m, np.inf)
        for i in range(m):
            nt = n_all - i
            if nt < 8:
                continue
            n = float(nt)
            s = np.sum(logx[i:]) - n * logx[i]
            if s <= 1e-12:
                continue
            a = 1.0 + (n - 1.0) / s
            alphas[i] = a
            if a <= 1.0:
                continue
            Dk = float(np.max(np.abs(np.arange(nt) / n - (1.0 - (x[i:] / x[i]) ** (1.0 - a)))))
            Ds[i] = Dk
            Js[i] = Dk - 0.868 / np.sqrt(n)
        sigmas = (alphas - 1.0) / np.sqrt(n_all - np.arange(m))  # before the fallback below (as in WW)
        if not np.isfinite(Js).any():  # no candidate with a tail >= 8: whole sample as tail (i = 0)
            n = float(n_all)
            s = np.sum(logx) - n * logx[0]
            if s > 1e-12:
                a = 1.0 + (n - 1.0) / s
                alphas[0] = a
                Ds[0] = float(np.max(np.abs(np.arange(n_all) / n - (1.0 - (x / x[0]) ** (1.0 - a)))))
        # NB: fit_powerlaw_smallN picks xmin by J = D - 0.868/sqrt(n), but WWFit.__init__ (WW_powerlaw.py:56-60)
        # then OVERRIDES that choice with argmin(Ds), exactly as for the standard path.
    i = int(np.argmin(Ds))
    return alphas[i], x[i], x[-1], Ds[i], sigmas[i]


def spec_layer(W):
    """All default-analyze() numeric columns for one 2-D weight (float32 array as stored)."""
    W = np.asarray(W, dtype=np.float32).astype(np.float64)
    N, M = max(W.shape), min(W.shape)
    import scipy.linalg
    sv = np.sort(scipy.linalg.svd(W, compute_uv=False))[-M:]
    evals = np.sort(sv * sv)
    tol = np.max(sv) * N * np.finfo(np.float64).eps
    rank_from_sv = int(np.count_nonzero(sv > tol))
    out = {"N": N, "M": M, "Q": N / M, "rf": 1, "num_evals": len(evals), "sv_max": float(np.max(sv)),
           "sv_min": float(max(0.0, np.min(sv))), "rank_loss": len(sv) - rank_from_sv,
           "weak_rank_loss": int(np.sum(evals < WEAK_RANK_LOSS_TOL)), "lambda_max": float(np.max(evals))}
    try:
        alpha, xmin, xmax, D, sigma = ww_fit(evals[evals > EVALS_THRESH])
        num_pl_spikes = int(np.sum(evals >= xmin))
        status = "success"
    except ValueError:
        alpha, xmin, xmax, D, sigma, num_pl_spikes, status = -1, -1, None, -1, -1, -1, "failed"
    out.update(alpha=alpha, xmin=xmin, xmax=xmax, D=D, sigma=sigma, num_pl_spikes=num_pl_spikes, status=status,
               warning="over-trained" if alpha < 2.0 else ("under-trained" if alpha > 6.0 else ""))
    norm = float(np.sum(evals))
    spectral = float(np.max(evals))
    s = np.sqrt(evals)
    hard_rank = int(np.count_nonzero(s > np.max(s) * N * np.finfo(np.float64).eps))
    p = (s * s) / np.sum(s * s) + EPSILON
    out.update(norm=norm, log_norm=np.log10(norm), spectral_norm=spectral, log_spectral_norm=np.log10(spectral),
               alpha_weighted=alpha * np.log10(spectral), log_alpha_norm=np.log10(np.sum(evals ** alpha)),
               stable_rank=norm / spectral, matrix_rank=hard_rank,
               entropy=float(-np.sum(p * np.log(p)) / np.log(hard_rank + EPSILON)))
    return out


def check_against_ww(rec, mine, where):
    bad = []
    for k, v in mine.items():
        w = rec.get(k)
        if isinstance(v, str) or v is None or w is None:
            if v != w and not (v is None and w is None):
                bad.append(f"{k}: ww={w!r} spec={v!r}")
            continue
        if not np.isclose(float(w), float(v), rtol=1e-7, atol=1e-9):
            bad.append(f"{k}: ww={w!r} spec={v!r}")
    if bad:
        raise SystemExit(f"spec re-implementation disagrees with WeightWatcher on {where}:\n  " + "\n  ".join(bad))


# --------------------------------------------------------------------------------------------
# WeightWatcher runs
# --------------------------------------------------------------------------------------------

NUMERIC_SKIP = {"layer_id", "name", "longname", "layer_type", "status", "warning", "has_esd"}


def ww_records(df, tensors, where):
    recs = []
    for _, row in df.iterrows():
        rec = {}
        for c in df.columns:
            v = row[c]
            if c in NUMERIC_SKIP:
                rec[c] = v if isinstance(v, str) else (bool(v) if c == "has_esd" else int(v))
            elif v is None or (isinstance(v, float) and np.isnan(v)):
                rec[c] = None
            elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                rec[c] = int(v)
            else:
                rec[c] = r(v, 12)
        tname = row["name"] + ".weight"
        a, dt, shape = tensors[tname]
        rec["tensor"] = tname
        rec["shape"] = shape
        rec["dtype"] = dt
        check_against_ww(rec, spec_layer(a), f"{where}:{tname}")
        recs.append(rec)
    return recs


def skipped_tensors(tensors, analysed):
    """Why WW 0.7.7 (defaults, state-dict/safetensors path) did not analyse a tensor."""
    out = {}
    for k, (a, dt, shape) in tensors.items():
        if k in analysed:
            continue
        if not k.endswith(".weight"):
            why = "not a '*.weight' key: never visited (biases and buffers are never analysed)"
        elif a.ndim not in (2, 4):
            why = f"{a.ndim}-D weight -> layer type UNKNOWN (e.g. LayerNorm), not supported"
        elif a.ndim == 2 and min(a.shape) < 8:
            why = f"M=min(shape)={min(a.shape)} < min_evals=8"
        elif a.ndim == 2 and min(a.shape) > 15000:
            why = "M > max_evals=15000"
        elif a.ndim == 2 and max(a.shape) > 50000:
            why = "N > max_N=50000"
        else:
            why = "skipped (unexpected)"
        out[k] = why
    return out


WW_ARGS_NOTE = ("analyze() with no arguments: min_evals=8, max_evals=15000, max_N=50000, glorot_fix=False, "
                "conv2d_norm=True, pool=True, randomize=False, mp_fit=False, vectors=False, detX=False, "
                "fix_fingers=False, fit='PL', svd_method='fast' (== scipy.linalg.svd without CUDA), "
                "tolerance=1e-6, start_ids=0, pl_package='ww', xmax=None")


def run_ww(model, analyze_kwargs=None):
    import weightwatcher as ww
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    w = ww.WeightWatcher(model=model)
    return w.analyze(**(analyze_kwargs or {}))


def ww_minilm(mdir):
    import weightwatcher as ww
    import pandas as pd
    tensors = load_tensors(os.path.join(mdir, "model.safetensors"))
    df = run_ww(mdir)
    recs = ww_records(df, tensors, "minilm")
    analysed = {x["tensor"] for x in recs}
    mp = run_ww(mdir, {"mp_fit": True})
    mp_cols = ["num_spikes", "sigma_mp", "mp_softrank", "bulk_max", "bulk_min", "W_scale"]
    mp_recs = []
    for _, row in mp.iterrows():
        mp_recs.append({"tensor": row["name"] + ".weight", **{c: r(row[c], 12) for c in mp_cols}})
    return {
        "generator": "scripts/make_spectrum_fixtures.py",
        "weightwatcher_version": ww.__version__,
        "numpy_version": np.__version__,
        "pandas_version": pd.__version__,
        "model": "sentence-transformers/all-MiniLM-L6-v2 (model.safetensors)",
        "invocation": "weightwatcher.WeightWatcher(model=<dir containing model.safetensors>).analyze()  "
                      "[framework inferred: pystatedict_dir; keys visited in safetensors (sorted) order; "
                      "layer_id counts every '*.weight' key from 0, analysed or not]",
        "arguments": {},
        "arguments_note": WW_ARGS_NOTE,
        "columns": list(df.columns),
        "float_precision": "12 significant digits",
        "layers": recs,
        "skipped": skipped_tensors(tensors, analysed),
        "mp_fit_nondefault": {
            "arguments": {"mp_fit": True},
            "note": "extra columns added by analyze(mp_fit=True); all other columns identical to 'layers'. "
                    "Deterministic (sklearn KernelDensity + scipy.optimize.brute/fmin), but NOT part of the defaults.",
            "layers": mp_recs,
        },
    }


def ww_corpus():
    import torch
    import weightwatcher as ww
    out = {}
    files = sorted(glob.glob(os.path.join(CORPUS, "*.safetensors")))
    for p in files:
        tensors = load_tensors(p)
        sd = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, (a, dt, s) in tensors.items()}
        df = run_ww(sd)
        recs = ww_records(df, tensors, os.path.basename(p))
        out[os.path.relpath(p, CORPUS)] = {
            "invocation": "WeightWatcher(model=<state_dict of torch float32 tensors>).analyze()",
            "layers": recs, "skipped": skipped_tensors(tensors, {x["tensor"] for x in recs})}
    for d in sorted(glob.glob(os.path.join(CORPUS, "*"))):
        if os.path.isdir(d) and glob.glob(os.path.join(d, "model*.safetensors")):
            tensors = {}
            for p in sorted(glob.glob(os.path.join(d, "model*.safetensors"))):
                tensors.update(load_tensors(p))
            df = run_ww(d)
            recs = ww_records(df, tensors, os.path.basename(d))
            out[os.path.relpath(d, CORPUS) + "/"] = {
                "invocation": "WeightWatcher(model=<directory>).analyze()  [sharded; order from model.safetensors.index.json]",
                "layers": recs, "skipped": skipped_tensors(tensors, {x["tensor"] for x in recs})}
    return {"generator": "scripts/make_spectrum_fixtures.py", "weightwatcher_version": ww.__version__,
            "arguments": {}, "arguments_note": WW_ARGS_NOTE,
            "note": "fc3 (10x32: 10 eigenvalues < 20) goes through WW_powerlaw.fit_powerlaw_smallN",
            "float_precision": "12 significant digits", "files": out}


def ww_degenerate():
    """Spectra whose top eigenvalues repeat (to rounding): a tail of equal values has no power law (alpha = 1 + n/0,
    or ~1e15 from rounding noise). Written as spectrum_degenerate.safetensors (deterministic), with WeightWatcher's
    default analyze() of it. Not re-checked against spec_layer: WW's large-N fit also scores the degenerate tails,
    and whether one of them wins there depends on rounding noise (it does not for these matrices)."""
    import torch
    import weightwatcher as ww
    from safetensors.numpy import save_file
    rng = np.random.default_rng(5)
    d = np.r_[5.0, 5.0, np.sort(rng.uniform(0.1, 3, 78))[::-1]]
    a = rng.standard_normal((50, 50)).astype(np.float32)
    z = np.zeros((50, 50), np.float32)
    mats = {"topdup.weight": np.diag(d).astype(np.float32),                      # the top eigenvalue twice
            "blockdiag.weight": np.block([[a, z], [z, a]]),                        # every eigenvalue twice
            "twovals.weight": np.diag(np.r_[np.full(40, 3.0), np.full(40, 1.0)]).astype(np.float32)}
    path = os.path.join(FIX, "spectrum_degenerate.safetensors")
    save_file(mats, path)
    tensors = load_tensors(path)
    df = run_ww({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in mats.items()})
    recs = []
    for _, row in df.iterrows():
        rec = {c: (row[c] if isinstance(row[c], str) else None if row[c] is None or (isinstance(row[c], float) and np.isnan(row[c]))
                   else int(row[c]) if isinstance(row[c], (int, np.integer)) else r(row[c], 12))
               for c in df.columns if c not in ("has_esd",)}
        rec["tensor"] = row["name"] + ".weight"
        rec["shape"] = tensors[rec["tensor"]][2]
        recs.append(rec)
    return {"generator": "scripts/make_spectrum_fixtures.py", "weightwatcher_version": ww.__version__,
            "file": "spectrum_degenerate.safetensors", "arguments": {}, "arguments_note": WW_ARGS_NOTE,
            "float_precision": "12 significant digits", "layers": recs}


def dump(obj, name):
    path = os.path.join(FIX, name)
    with open(path, "w") as f:
        json.dump(obj, f, indent=None, separators=(",", ":"), sort_keys=False)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


def main():
    os.makedirs(FIX, exist_ok=True)
    cfiles = sorted(glob.glob(os.path.join(CORPUS, "**", "*.safetensors"), recursive=True))
    ent, skipped = svd_fixture(cfiles, CORPUS)
    dump({**svd_header(), "skipped": skipped, "files": ent}, "svd_corpus.json")
    dump(ww_corpus(), "ww_corpus.json")
    dump(ww_degenerate(), "ww_degenerate.json")

    mdir = find_minilm()
    if mdir is None:
        print("MiniLM not found (make minilm, or set WSCAN_MINILM_DIR); svd_minilm.json / ww_minilm.json left as is")
        return 0
    ent, skipped = svd_fixture([os.path.join(mdir, "model.safetensors")], mdir)
    dump({**svd_header(), "skipped": skipped, "files": ent}, "svd_minilm.json")
    dump(ww_minilm(mdir), "ww_minilm.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
