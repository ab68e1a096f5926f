#!/usr/bin/env bash
# Dense linear assignment: wscan's LinearAssignment vs scipy.optimize.linear_sum_assignment on identical
# uniform [0,1) float64 cost matrices (seeded numpy, cached in .cache/bench/lap_N.f64). Best of 3 each.
# Assumes .build/release/wscan exists (swift build -c release); builds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
WSCAN=.build/release/wscan
[ -x "$WSCAN" ] || { echo "missing $WSCAN: run swift build -c release" >&2; exit 1; }
mkdir -p .cache/bench
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
echo "== linear assignment (min), uniform [0,1) costs, best of 3"
printf "%6s %10s %10s %7s  %s\n" n "scipy s" "wscan s" ratio "totals equal"
for n in 1024 4096; do
  f=.cache/bench/lap_$n.f64
  py=$(python3 - "$n" "$f" <<'PY'
import os, sys, time
import numpy as np
from scipy.optimize import linear_sum_assignment
n, path = int(sys.argv[1]), sys.argv[2]
if not (os.path.exists(path) and os.path.getsize(path) == n * n * 8):
    np.random.default_rng(1000 + n).random((n, n)).astype("<f8").tofile(path)
c = np.fromfile(path, dtype="<f8").reshape(n, n)
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter(); r, k = linear_sum_assignment(c); best = min(best, time.perf_counter() - t0)
print(f"{best:.6f} {c[r, k].sum():.17g}")
PY
)
  read -r ts tot_s <<<"$py"
  read -r _ _ _ tw _ tot_w <<<"$("$WSCAN" _bench lap --elements 16 --size "$n" --file "$f")"
  python3 - "$n" "$ts" "$tw" "$tot_s" "$tot_w" <<'PY'
import sys
n, ts, tw, a, b = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
eq = "yes" if abs(a - b) <= 1e-9 * max(1.0, abs(a)) else f"NO ({a!r} vs {b!r})"
print(f"{n:>6} {ts:10.4f} {tw:10.4f} {tw / ts:7.2f}  {eq} ({a:.12g})")
PY
done
