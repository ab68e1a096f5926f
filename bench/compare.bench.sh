#!/usr/bin/env bash
# wscan compare (with alignment) of two MiniLM-size checkpoints vs reading both files once.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.build/release/wscan
M=.cache/minilm
echo "== compare two MiniLM-size checkpoints (with alignment) vs reading both files"
if [ ! -s "$M/model.safetensors" ]; then echo "MiniLM not fetched: skipped"; exit 0; fi
D=.cache/bench/minilm_b
mkdir -p "$D"
if [ ! -s "$D/model.safetensors" ]; then
  python3 - "$M/model.safetensors" "$D/model.safetensors" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file, save_file
a = load_file(sys.argv[1]); rng = np.random.default_rng(5)
b = {k: (v + rng.standard_normal(v.shape).astype(v.dtype) * 0.01 * v.std() if v.dtype == np.float32 and v.ndim == 2 else v) for k, v in a.items()}
save_file(b, sys.argv[2])
PY
  cp "$M/config.json" "$D/config.json"
fi
db=$(mktemp -d)/c.db
$BIN index "$M/model.safetensors" "$D/model.safetensors" --db "$db" >/dev/null
cat "$M/model.safetensors" "$D/model.safetensors" > /dev/null
t() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local e=$(date +%s.%N); python3 -c "print($e - $s)"; }
tc=$(t sh -c "cat '$M/model.safetensors' '$D/model.safetensors' > /dev/null")
tr=$(t sh -c "python3 -c \"from safetensors.numpy import load_file; load_file('$M/model.safetensors'); load_file('$D/model.safetensors')\"")
tw=$(t $BIN compare "$M/model.safetensors" "$D/model.safetensors" --db "$db" --align)
python3 - "$tc" "$tr" "$tw" <<'PY'
import sys
tc, tr, tw = map(float, sys.argv[1:])
print(f"cat both files {tc:.3f} s; numpy/safetensors load of both {tr:.3f} s; wscan compare --align {tw:.2f} s")
print(f"ratio compare / cat = {tw/tc:.1f}x   compare / safetensors load = {tw/tr:.1f}x")
PY
