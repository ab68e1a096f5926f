#!/usr/bin/env bash
# Essential-sparsity curve cost on MiniLM, as a multiple of one statistics pass over the same weights (in process).
cd "$(dirname "$0")/.."
echo "== 20-point global sparsity curve on MiniLM (data-free) vs one statistics pass"
if [ -s .cache/minilm/model.safetensors ]; then
  .build/release/wscan _bench sparsity --elements 16 --file .cache/minilm/model.safetensors
else echo "MiniLM not fetched: skipped"; fi
