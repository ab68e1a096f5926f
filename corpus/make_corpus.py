#!/usr/bin/env python3
"""Builds wscan's corpus: small real checkpoints with known relationships.

Deterministic (seeded numpy, fixed hyper-parameters). Trains 64-64-32-10 ReLU MLPs on scikit-learn's digits
(offline), then derives checkpoints from the seed-0 model with known ground truth, written with the real
`safetensors` and `numpy` libraries. Everything it writes, and every number a test checks, is recorded in
corpus/MANIFEST.json.

    python3 corpus/make_corpus.py [OUTDIR]
"""
import json
import os
import sys

# Single-threaded BLAS: multi-threaded reductions are not bit-reproducible from run to run.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np
from safetensors.numpy import save_file as _save_file


def save_file(tensors, path, metadata=None):
    """safetensors.numpy writes an array's raw buffer as if it were C-ordered: make every array contiguous
    first (fancy column indexing yields Fortran-ordered arrays)."""
    _save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path, metadata=metadata)
from sklearn.datasets import load_digits

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
SIZES = [64, 64, 32, 10]
NAMES = ["fc1", "fc2", "fc3"]


def data():
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(1234)
    idx = rng.permutation(len(x))
    x, y = x[idx], y[idx]
    n_test = 360
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def init(seed):
    rng = np.random.default_rng(seed)
    p = {}
    for i, n in enumerate(NAMES):
        fan_in, fan_out = SIZES[i], SIZES[i + 1]
        p[f"{n}.weight"] = (rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        p[f"{n}.bias"] = np.zeros(fan_out, dtype=np.float32)
    return p


def forward(p, x):
    """Returns logits and the activations needed for backprop. PyTorch Linear convention: y = x W^T + b."""
    acts = [x]
    h = x
    for i, n in enumerate(NAMES):
        z = h @ p[f"{n}.weight"].T + p[f"{n}.bias"]
        h = np.maximum(z, 0) if i < len(NAMES) - 1 else z
        acts.append(h)
    return h, acts


def loss_acc(p, x, y):
    logits, _ = forward({k: v.astype(np.float64) for k, v in p.items()}, x.astype(np.float64))
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    loss = float(np.mean(lse - logits[np.arange(len(y)), y]))
    acc = float(np.mean(logits.argmax(axis=1) == y))
    return loss, acc


def grads(p, x, y):
    logits, acts = forward(p, x)
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    prob = e / e.sum(axis=1, keepdims=True)
    prob[np.arange(len(y)), y] -= 1
    g = prob / len(y)
    out = {}
    for i in reversed(range(len(NAMES))):
        n = NAMES[i]
        out[f"{n}.weight"] = g.T @ acts[i]
        out[f"{n}.bias"] = g.sum(axis=0)
        if i > 0:
            g = (g @ p[f"{n}.weight"]) * (acts[i] > 0)
    return out


def train(p, x, y, steps, lr, seed, state=None):
    """Adam, mini-batches of 128. Returns params and Adam state (exp_avg, exp_avg_sq, step)."""
    rng = np.random.default_rng(seed)
    # float64 arithmetic, float32 results: keeps the output bit-stable across processes (float32 BLAS
    # kernels round differently with the arrays' memory alignment).
    p = {k: v.astype(np.float64).copy() for k, v in p.items()}
    x = x.astype(np.float64)
    st = state or {"m": {k: np.zeros_like(v) for k, v in p.items()}, "v": {k: np.zeros_like(v) for k, v in p.items()}, "t": 0}
    st = {"m": {k: v.astype(np.float64) for k, v in st["m"].items()}, "v": {k: v.astype(np.float64) for k, v in st["v"].items()}, "t": st["t"]}
    b1, b2, eps = 0.9, 0.999, 1e-8
    for _ in range(steps):
        idx = rng.choice(len(x), 128, replace=False)
        g = grads(p, x[idx], y[idx])
        st["t"] += 1
        t = st["t"]
        for k in p:
            st["m"][k] = b1 * st["m"][k] + (1 - b1) * g[k]
            st["v"][k] = b2 * st["v"][k] + (1 - b2) * g[k] ** 2
            mh = st["m"][k] / (1 - b1 ** t)
            vh = st["v"][k] / (1 - b2 ** t)
            p[k] = p[k] - lr * mh / (np.sqrt(vh) + eps)
    out = {k: v.astype(np.float32) for k, v in p.items()}
    st["m"] = {k: v.astype(np.float32) for k, v in st["m"].items()}
    st["v"] = {k: v.astype(np.float32) for k, v in st["v"].items()}
    return out, st


def interp_barrier(pa, pb, x, y, n=25):
    lam = np.linspace(0, 1, n)
    losses = []
    accs = []
    for l in lam:
        q = {k: ((1 - l) * pa[k].astype(np.float64) + l * pb[k].astype(np.float64)) for k in pa}
        lo, ac = loss_acc(q, x, y)
        losses.append(lo)
        accs.append(ac)
    barrier = max(losses) - 0.5 * (losses[0] + losses[-1])
    return float(barrier), [float(v) for v in losses], [float(v) for v in accs]


def weight_matching(pa, pb, seed=0, iters=100):
    """Git Re-Basin weight matching for the MLP (reference for wscan's own solver), with scipy's LAP."""
    from scipy.optimize import linear_sum_assignment
    rng = np.random.default_rng(seed)
    perms = {0: np.arange(SIZES[1]), 1: np.arange(SIZES[2])}

    def permuted_b():
        q = {k: v.copy() for k, v in pb.items()}
        for i in (0, 1):
            P = perms[i]
            n, nn = NAMES[i], NAMES[i + 1]
            q[f"{n}.weight"] = q[f"{n}.weight"][P]
            q[f"{n}.bias"] = q[f"{n}.bias"][P]
            q[f"{nn}.weight"] = q[f"{nn}.weight"][:, P]
        return q

    for _ in range(iters):
        changed = False
        for i in rng.permutation(2):
            n, nn = NAMES[i], NAMES[i + 1]
            # B with the *other* permutation applied, this one left free
            saved = perms[i]
            perms[i] = np.arange(len(saved))
            q = permuted_b()
            perms[i] = saved
            a_w, a_b, a_next = pa[f"{n}.weight"].astype(np.float64), pa[f"{n}.bias"].astype(np.float64), pa[f"{nn}.weight"].astype(np.float64)
            b_w, b_b, b_next = q[f"{n}.weight"].astype(np.float64), q[f"{n}.bias"].astype(np.float64), q[f"{nn}.weight"].astype(np.float64)
            cost = a_w @ b_w.T + np.outer(a_b, b_b) + a_next.T @ b_next
            _, col = linear_sum_assignment(cost, maximize=True)
            old = cost[np.arange(len(saved)), saved].sum()
            new = cost[np.arange(len(col)), col].sum()
            if new > old + 1e-12:
                perms[i] = col
                changed = True
        if not changed:
            break
    return permuted_b(), {str(k): v.tolist() for k, v in perms.items()}


def main():
    xtr, ytr, xte, yte = data()
    os.makedirs(OUT, exist_ok=True)
    np.savez(os.path.join(OUT, "digits_test.npz"), x=xte, y=yte)
    manifest = {"generator": "corpus/make_corpus.py", "task": "sklearn digits, 64-64-32-10 ReLU MLP, test split of 360",
                "dataset": "digits_test.npz", "models": {}, "relationships": []}

    def record(name, fname, p, extra=None):
        lo, ac = loss_acc(p, xte, yte)
        entry = {"file": fname, "test_loss": lo, "test_accuracy": ac}
        entry.update(extra or {})
        manifest["models"][name] = entry

    models = {}
    states = {}
    for seed in (0, 1, 2):
        p, st = train(init(seed), xtr, ytr, steps=600, lr=3e-3, seed=100 + seed)
        models[f"mlp_seed{seed}"] = p
        states[f"mlp_seed{seed}"] = st
        save_file(p, os.path.join(OUT, f"mlp_seed{seed}.safetensors"), metadata={"description": f"digits MLP, seed {seed}"})  # one key: map order is random
        record(f"mlp_seed{seed}", f"mlp_seed{seed}.safetensors", p, {"seed": seed})
    base = models["mlp_seed0"]

    # Independent models
    for s in (1, 2):
        manifest["relationships"].append({"a": "mlp_seed0", "b": f"mlp_seed{s}", "relation": "independent"})

    # Fine-tuned: continue training on digits 0-4 only, smaller learning rate
    mask = ytr < 5
    ft, _ = train(base, xtr[mask], ytr[mask], steps=150, lr=1e-3, seed=7)
    save_file(ft, os.path.join(OUT, "mlp_seed0_finetuned.safetensors"), metadata={"derived_from": "mlp_seed0"})
    record("mlp_seed0_finetuned", "mlp_seed0_finetuned.safetensors", ft)
    manifest["relationships"].append({"a": "mlp_seed0", "b": "mlp_seed0_finetuned", "relation": "finetuned",
                                      "detail": "150 Adam steps, lr 1e-3, on digits 0-4"})

    # Re-encoded: float16 and bfloat16-like copies; the same weights in npz
    f16 = {k: v.astype(np.float16) for k, v in base.items()}
    save_file(f16, os.path.join(OUT, "mlp_seed0_f16.safetensors"))
    record("mlp_seed0_f16", "mlp_seed0_f16.safetensors", {k: v.astype(np.float32) for k, v in f16.items()})
    manifest["relationships"].append({"a": "mlp_seed0", "b": "mlp_seed0_f16", "relation": "reencoded", "dtype": "F16"})
    np.savez(os.path.join(OUT, "mlp_seed0_copy.npz"), **base)
    record("mlp_seed0_copy", "mlp_seed0_copy.npz", base)
    manifest["relationships"].append({"a": "mlp_seed0", "b": "mlp_seed0_copy", "relation": "identical", "detail": "same float32 values in .npz"})

    # 50% global magnitude pruning of the weight matrices (biases kept)
    ws = np.concatenate([np.abs(base[f"{n}.weight"]).ravel() for n in NAMES])
    k = len(ws) // 2
    thr = np.partition(ws, k)[k]
    pruned = {}
    for key, v in base.items():
        pruned[key] = np.where(np.abs(v) < thr, 0, v).astype(np.float32) if key.endswith("weight") else v.copy()
    save_file(pruned, os.path.join(OUT, "mlp_seed0_pruned50.safetensors"))
    record("mlp_seed0_pruned50", "mlp_seed0_pruned50.safetensors", pruned)
    manifest["relationships"].append({"a": "mlp_seed0", "b": "mlp_seed0_pruned50", "relation": "pruned",
                                      "sparsity": 0.5, "pattern": "unstructured", "scope": "global"})

    # Hidden units permuted (functionally identical)
    rng = np.random.default_rng(99)
    P1, P2 = rng.permutation(SIZES[1]), rng.permutation(SIZES[2])
    perm = {k: v.copy() for k, v in base.items()}
    perm["fc1.weight"], perm["fc1.bias"] = base["fc1.weight"][P1], base["fc1.bias"][P1]
    perm["fc2.weight"] = base["fc2.weight"][P2][:, P1]
    perm["fc2.bias"] = base["fc2.bias"][P2]
    perm["fc3.weight"] = base["fc3.weight"][:, P2]
    save_file(perm, os.path.join(OUT, "mlp_seed0_permuted.safetensors"))
    record("mlp_seed0_permuted", "mlp_seed0_permuted.safetensors", perm)
    manifest["relationships"].append({"a": "mlp_seed0", "b": "mlp_seed0_permuted", "relation": "permuted",
                                      "perm": {"fc1": P1.tolist(), "fc2": P2.tolist()},
                                      "detail": "B.fc1 rows = A.fc1 rows[perm.fc1]; B.fc2 = A.fc2[perm.fc2][:, perm.fc1]"})

    # Rank-4 delta added to fc1 and fc2 (a merged LoRA)
    rng = np.random.default_rng(4)
    lora = {k: v.copy() for k, v in base.items()}
    for n in ("fc1", "fc2"):
        out_f, in_f = base[f"{n}.weight"].shape
        B = rng.standard_normal((out_f, 4)).astype(np.float32) * 0.05
        A = rng.standard_normal((4, in_f)).astype(np.float32) * 0.05
        lora[f"{n}.weight"] = (base[f"{n}.weight"] + B @ A).astype(np.float32)
    save_file(lora, os.path.join(OUT, "mlp_seed0_lora4.safetensors"))
    record("mlp_seed0_lora4", "mlp_seed0_lora4.safetensors", lora)
    manifest["relationships"].append({"a": "mlp_seed0", "b": "mlp_seed0_lora4", "relation": "lora_merged", "rank": 4,
                                      "modules": ["fc1.weight", "fc2.weight"]})

    # Sharded copy of seed 1: two shards and an index
    sdir = os.path.join(OUT, "mlp_seed1_sharded")
    os.makedirs(sdir, exist_ok=True)
    p1 = models["mlp_seed1"]
    shard_of = {k: ("model-00001-of-00002.safetensors" if k.startswith("fc1") else "model-00002-of-00002.safetensors") for k in p1}
    for shard in sorted(set(shard_of.values())):
        save_file({k: v for k, v in p1.items() if shard_of[k] == shard}, os.path.join(sdir, shard))
    with open(os.path.join(sdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": int(sum(v.nbytes for v in p1.values()))}, "weight_map": dict(sorted(shard_of.items()))}, f, indent=2)
    record("mlp_seed1_sharded", "mlp_seed1_sharded/model.safetensors.index.json", p1)
    manifest["relationships"].append({"a": "mlp_seed1", "b": "mlp_seed1_sharded", "relation": "identical", "detail": "same tensors in two shards"})

    # Linear-mode connectivity references (numpy): seed0 vs seed1 before and after weight matching
    b_before, losses_before, accs_before = interp_barrier(base, models["mlp_seed1"], xte, yte)
    aligned, perms = weight_matching(base, models["mlp_seed1"])
    b_after, losses_after, accs_after = interp_barrier(base, aligned, xte, yte)
    manifest["connectivity"] = {"a": "mlp_seed0", "b": "mlp_seed1", "grid": 25,
                                "barrier_before": b_before, "barrier_after": b_after,
                                "loss_before": losses_before, "loss_after": losses_after,
                                "accuracy_before": accs_before, "accuracy_after": accs_after,
                                "method": "Git Re-Basin weight matching with scipy.optimize.linear_sum_assignment, seed 0"}

    # Adam state of seed 0 for Fisher-proxy saliency (npz: exp_avg_sq per parameter)
    st = states["mlp_seed0"]
    np.savez(os.path.join(OUT, "mlp_seed0_adam_state.npz"), **{f"exp_avg_sq.{k}": v for k, v in st["v"].items()})
    manifest["optimizer_state"] = {"file": "mlp_seed0_adam_state.npz", "for": "mlp_seed0", "steps": st["t"]}

    # Layer inputs of seed 0 on the test split (for data-driven utilization) and numpy reference ranks.
    _, acts = forward({k: v.astype(np.float64) for k, v in base.items()}, xte.astype(np.float64))
    act = {f"{n}.weight": acts[i].astype(np.float32) for i, n in enumerate(NAMES)}
    np.savez(os.path.join(OUT, "mlp_seed0_activations.npz"), **act)

    def erank(sv, e):
        en = sv ** 2
        c = np.cumsum(en)
        return int(np.searchsorted(c, e * en.sum() * (1 - 1e-12)) + 1)

    util = {}
    for n in NAMES:
        X = act[f"{n}.weight"].astype(np.float64)
        C = X.T @ X / len(X)
        w_, V = np.linalg.eigh(C)
        w_, V = w_[::-1], V[:, ::-1]
        k = erank(np.sqrt(np.maximum(w_, 0)), 0.95)
        W = base[f"{n}.weight"].astype(np.float64)
        util[f"{n}.weight"] = {"input_rank": k,
                               "utilized_rank": erank(np.linalg.svd(W @ V[:, :k], compute_uv=False), 0.95),
                               "data_free_rank": erank(np.linalg.svd(W, compute_uv=False), 0.95)}
    manifest["activations"] = {"file": "mlp_seed0_activations.npz", "for": "mlp_seed0", "energy": 0.95, "layers": util}

    with open(os.path.join(OUT, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    for k, v in manifest["models"].items():
        print(f"{k:24s} acc={v['test_accuracy']:.4f} loss={v['test_loss']:.4f}")
    print(f"barrier before={b_before:.4f} after={b_after:.4f}")


if __name__ == "__main__":
    main()
