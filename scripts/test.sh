#!/usr/bin/env bash
# README command 2 (and CI): CPU test tier. Creates .venv if needed, then runs pytest.
#   bash scripts/test.sh [pytest args]           every CPU-tier test
#   bash scripts/test.sh --quick [pytest args]   the smoke selection (tests marked `quick`)
# Triton kernels run under its interpreter (TRITON_INTERPRET=1) on CPU tensors; tests marked
# `gpu` are skipped without a GPU (docs/GPU_TIER.md: scripts/gpu_tier.sh runs them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
select=()
if [ "${1:-}" = --quick ]; then
    shift
    select=(-m quick)
fi
py=$(bash "$root/scripts/make_venv.sh")
cd "$root"
export TRITON_INTERPRET=1 PYTHONDONTWRITEBYTECODE=1
# --release R: test SGLang release R (tests/harness/releases.py; default 0.5.8)
if [ "${1:-}" = "--release" ]; then
    [ -n "${2:-}" ] || { echo "test.sh: --release needs a release, e.g. --release 0.5.9" >&2; exit 2; }
    export NSA_FASTPATH_TEST_RELEASE=$2
    shift 2
fi
exec "$py" -m pytest -p no:cacheprovider ${select[@]+"${select[@]}"} "$@"
