#!/usr/bin/env bash
# GPU timing of whole sampling jobs on real-architecture UNets (bench/gpu.ts says what is measured).
#
#   bench/gpu.sh              on a machine with an NVIDIA GPU (driver, CUDA 12, cuDNN 9)
#   bench/gpu.sh --dry-run    the same run end to end on the CPU with tiny widths (CI)
#   bench/gpu.sh --family svd one job only
#
# Opt-ins: CIL_BENCH_CUDA_GRAPH=1 (CUDA graph capture), CIL_BENCH_TENSORRT=1 (TensorRT provider,
# engine cache in .cache/bench-gpu/tensorrt). DynamiCrafter is built from the authors' code:
# CIL_REFERENCE_REPO (a thu-ml/cond-image-leakage checkout; cloned into .cache when unset and the
# network allows), otherwise its entry says it was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0
for a in "$@"; do [ "$a" = "--dry-run" ] && dry=1; done
[ "${CIL_GPU_BENCH_DRY_RUN:-0}" = "1" ] && dry=1

# What it needs, installed where missing: Node modules (npm ci), the Python environment
# (scripts/setup-python.sh), and on a GPU onnxruntime-node's CUDA 12 provider (as gpu-worker/Dockerfile).
[ -d node_modules/onnxruntime-node ] || npm ci --no-audit --no-fund
[ -x "${CIL_VENV:-.venv}/bin/python" ] || bash scripts/setup-python.sh
if [ "$dry" = "0" ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "gpu.sh: nvidia-smi not found" >&2
  lib=node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so
  [ -f "$lib" ] || ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js
  if [ -z "${CIL_REFERENCE_REPO:-}" ]; then
    ref=.cache/cil-ref
    [ -d "$ref/examples/DynamiCrafter" ] || git clone -q --depth 1 https://github.com/thu-ml/cond-image-leakage "$ref" 2>/dev/null || echo "gpu.sh: no CIL_REFERENCE_REPO and no clone: DynamiCrafter is skipped" >&2
    [ -d "$ref/examples/DynamiCrafter" ] && export CIL_REFERENCE_REPO="$PWD/$ref"
  fi
  export CIL_EXECUTION_PROVIDER=cuda
fi
# The project's pinned Node (node_modules/.bin/node) runs the TypeScript directly.
export PATH="$PWD/node_modules/.bin:$PATH"
exec node bench/gpu.ts "$@"
