#!/usr/bin/env bash
# `make bench`: release-build throughput as ratios against a reference run on the same machine and files.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.build/release/wscan
DIR=${WSCAN_BENCH_DIR:-.cache/bench}
GIB=${WSCAN_BENCH_GIB:-1}
mkdir -p "$DIR"
export WSCAN_NO_PROGRESS=1

best() { # best wall time (s) of N runs of a command
  local n=$1; shift; local b=999999
  for _ in $(seq "$n"); do
    local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local e=$(date +%s.%N)
    b=$(python3 -c "print(min($b, $e - $s))")
  done
  echo "$b"
}

echo "== index throughput vs cat (page-cached file, statistics + XXH3 content hash, $(nproc) cores)"
for dt in BF16 F32; do
  f="$DIR/big_${dt}.safetensors"
  [ -s "$f" ] || python3 bench/make_big.py "$f" "$dt" "$GIB"
  cat "$f" > /dev/null
  size=$(stat -c %s "$f")
  tc=$(best 3 sh -c "cat '$f' > /dev/null")
  tw=$(best 3 "$BIN" index "$f" --db "$DIR/bench.db" --force)
  python3 - "$dt" "$size" "$tc" "$tw" <<'PY'
import sys
dt, size, tc, tw = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
gb = size / 2**30
print(f"{dt:5s} {gb:.2f} GiB  cat {gb/tc:6.2f} GiB/s  wscan index {gb/tw:6.2f} GiB/s  ratio wscan/cat = {tc/tw:.2f}  (goal >= 0.8)")
PY
done

for extra in bench/*.bench.sh; do
  [ -e "$extra" ] && bash "$extra"
done
exit 0
