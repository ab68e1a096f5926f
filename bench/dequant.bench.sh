#!/usr/bin/env bash
# GGUF dequantization throughput (single thread, output floats/s) next to a plain F32 read of the same count.
cd "$(dirname "$0")/.."
echo "== GGUF dequantization (Q8_0, Q4_K) vs plain F32 read, one core"
.build/release/wscan _bench dequant --elements $((1 << 24))
