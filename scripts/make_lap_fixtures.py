#!/usr/bin/env python3
"""Linear-assignment reference fixtures for wscan, produced with scipy.optimize.linear_sum_assignment.

Writes Tests/Fixtures/lap/<name>.json, one file per cost matrix:
  {"name", "rows", "cols", "cost": row-major list of float64 (repr round-trips exactly; "inf" for +inf),
   or "cost_u8_b64": base64 of row-major uint8 values (large integer matrices),
   "min": {"total", "row_ind", "col_ind"}, "max": {"total", "row_ind", "col_ind"},
   "scipy": version, "numpy": version}
Totals are sums of the original costs over scipy's assignment. Deterministic (numpy default_rng, fixed seeds).
"""
import base64
import json
import os
import sys

import numpy as np
import scipy
from scipy.optimize import linear_sum_assignment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "lap")


def cases():
    # Values are rounded to a few decimals (still exact float64 inputs for both solvers) to keep the JSON small.
    rng = np.random.default_rng(20240611)
    yield "square_8", rng.random((8, 8))
    yield "square_50", np.round(rng.normal(size=(50, 50)), 4)
    # 200x200: integers 0..255, stored as base64 bytes ("cost_u8_b64") to keep the file small; some ties.
    yield "square_200", rng.integers(0, 256, size=(200, 200)).astype(np.float64)
    yield "rect_30x50", np.round(rng.random((30, 50)), 4)
    yield "rect_50x30", np.round(rng.random((50, 30)), 4)
    # Many ties: integers 0..4 / 0..2.
    yield "int_ties_60", rng.integers(0, 5, size=(60, 60)).astype(np.float64)
    yield "int_ties_rect_40x70", rng.integers(0, 3, size=(40, 70)).astype(np.float64)
    # A maximisation-oriented case: profits with structure (low-rank signal plus noise).
    a, b = rng.random((40, 4)), rng.random((40, 4))
    yield "profit_40", np.round(a @ b.T * 10 + rng.random((40, 40)), 3)
    # Large dynamic range: magnitudes from 1e-6 to 1e6 (log-uniform, 5 significant digits) with random sign.
    mag = np.array([float(f"{x:.4e}") for x in (10.0 ** rng.uniform(-6, 6, size=32 * 32))]).reshape(32, 32)
    yield "dynamic_range_32", mag * rng.choice([-1.0, 1.0], size=(32, 32))
    # Forbidden pairs (+inf when minimising) that still leave a feasible assignment.
    c = np.round(rng.random((20, 20)), 4)
    c[rng.random((20, 20)) < 0.5] = np.inf
    np.fill_diagonal(c, np.round(rng.random(20), 4))
    yield "inf_forbidden_20", c


def literal(x):
    """Compact JSON value: integral floats as ints, +inf as the string "inf"."""
    if not np.isfinite(x):
        return "inf"
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)


def solve(cost, maximize):
    r, c = linear_sum_assignment(cost, maximize=maximize)
    return {"total": float(cost[r, c].sum()), "row_ind": r.tolist(), "col_ind": c.tolist()}


def main():
    os.makedirs(OUT, exist_ok=True)
    total_bytes = 0
    for name, cost in cases():
        cost = np.ascontiguousarray(cost, dtype=np.float64)
        rec = {"name": name, "rows": cost.shape[0], "cols": cost.shape[1]}
        if cost.size > 10_000 and np.all((cost >= 0) & (cost <= 255) & (cost == np.round(cost))):
            rec["cost_u8_b64"] = base64.b64encode(cost.astype(np.uint8).tobytes()).decode()
        else:
            rec["cost"] = [literal(x) for x in cost.ravel()]
        rec.update({"min": solve(cost, False), "scipy": scipy.__version__, "numpy": np.__version__})
        if np.isposinf(cost).any():
            rec["max"] = None   # +inf is unbounded when maximising: scipy (and wscan) reject it
        else:
            rec["max"] = solve(cost, True)
        path = os.path.join(OUT, name + ".json")
        with open(path, "w") as f:
            json.dump(rec, f, separators=(",", ":"))
            f.write("\n")
        total_bytes += os.path.getsize(path)
        print(f"{name}: {cost.shape[0]}x{cost.shape[1]} min {rec['min']['total']!r}"
              + (f" max {rec['max']['total']!r}" if rec["max"] else ""))
    print(f"{total_bytes} bytes in {OUT}")
    if total_bytes > 200_000:
        sys.exit("fixtures exceed 200 KB")


if __name__ == "__main__":
    main()
