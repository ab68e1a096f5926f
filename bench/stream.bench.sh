#!/usr/bin/env bash
# Streamed analyses of a model file: time against reading it (cat), and peak anonymous memory (the process's own
# allocations; the mapped file's pages are page cache the kernel can reclaim). Uses run.sh's 1 GiB files.
cd "$(dirname "$0")/.."
BIN=.build/release/wscan
DIR=${WSCAN_BENCH_DIR:-.cache/bench}
echo "== streamed sparsity and saliency on the 1 GiB files vs cat (time) and peak anonymous memory"
for dt in BF16 F32; do
  f="$DIR/big_${dt}.safetensors"
  [ -s "$f" ] || { echo "$f missing: skipped"; continue; }
  python3 - "$BIN" "$f" "$DIR/bench.db" "$dt" <<'PY'
import os, subprocess, sys, time
binary, f, db, dt = sys.argv[1:5]
def run(args):
    """Wall time and peak RssAnon (MiB) of one run, /proc sampled every 10 ms."""
    t0 = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as s:
                for line in s:
                    if line.startswith("RssAnon:"): peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.01)
    t = time.perf_counter() - t0
    if p.returncode != 0: raise SystemExit(f"{args} exited {p.returncode}")
    return t, peak / 1024
def best(args, n=3):
    r = [run(args) for _ in range(n)]
    return min(x[0] for x in r), max(x[1] for x in r)
size = os.path.getsize(f) / 2**30
tc, _ = best(["sh", "-c", f"cat '{f}' > /dev/null"])
for name, extra in [("sparsity curve", ["analyze", "sparsity", f, "--no-refine"]),
                    ("magnitude saliency", ["analyze", "saliency", f])]:
    t, m = best([binary] + extra + ["--db", db])
    print(f"{dt:5s} {size:.2f} GiB  {name:18s} {t:6.2f} s = {t / tc:5.1f} x cat ({tc:.2f} s)  peak anonymous memory {m:6.0f} MiB")
PY
done
