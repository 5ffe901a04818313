#!/usr/bin/env bash
# README command 2 (and CI): CPU test tier. Creates .venv if needed, then runs pytest.
# Triton kernels run under its interpreter (TRITON_INTERPRET=1) on CPU tensors; tests marked
# `gpu` are skipped without a GPU (scripts/gpu_tier.sh runs them on the device).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=$(bash "$root/scripts/make_venv.sh")
cd "$root"
export TRITON_INTERPRET=1 PYTHONDONTWRITEBYTECODE=1
# --release R: test SGLang release R (tests/harness/releases.py; default 0.5.8)
if [ "${1:-}" = "--release" ]; then
    [ -n "${2:-}" ] || { echo "test.sh: --release needs a release, e.g. --release 0.5.9" >&2; exit 2; }
    export NSA_FASTPATH_TEST_RELEASE=$2
    shift 2
fi
exec "$py" -m pytest -p no:cacheprovider "$@"
