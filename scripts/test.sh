#!/usr/bin/env bash
# README command 2 (and CI): CPU test tier. Creates .venv if needed, then runs pytest.
# Triton kernels run under its interpreter (TRITON_INTERPRET=1) on CPU tensors; tests marked
# `gpu` are skipped without a GPU (docs/GPU_TIER.md: scripts/gpu_tier.sh runs them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=$(bash "$root/scripts/make_venv.sh")
cd "$root"
export TRITON_INTERPRET=1 PYTHONDONTWRITEBYTECODE=1
exec "$py" -m pytest -p no:cacheprovider "$@"
