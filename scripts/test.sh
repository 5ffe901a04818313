#!/usr/bin/env bash
# README command 2 (and CI): CPU test tier. Creates .venv if needed, then runs pytest.
#   bash scripts/test.sh [pytest args]           every CPU-tier test
#   bash scripts/test.sh --quick [pytest args]   the smoke selection (tests marked `quick`)
#   bash scripts/test.sh --release R ...         against SGLang release R (default 0.5.8)
#   bash scripts/test.sh --release R --smoke     the harness on R's pristine and patched trees,
#                                                small configs, every problem listed (porting)
# Triton kernels run under its interpreter (TRITON_INTERPRET=1) on CPU tensors; tests marked
# `gpu` are skipped without a GPU (docs/GPU_TIER.md: scripts/gpu_tier.sh runs them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
select=()
smoke=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) select=(-m quick); shift ;;
        --smoke) smoke=1; shift ;;
        --release)  # tests/harness/releases.py
            [ -n "${2:-}" ] || { echo "test.sh: --release needs a release, e.g. --release 0.5.9" >&2; exit 2; }
            export NSA_FASTPATH_TEST_RELEASE=$2
            shift 2 ;;
        *) break ;;
    esac
done
py=$(bash "$root/scripts/make_venv.sh")
cd "$root"
export TRITON_INTERPRET=1 PYTHONDONTWRITEBYTECODE=1
if [ -n "$smoke" ]; then
    exec "$py" tests/harness/smoke.py "$@"
fi
exec "$py" -m pytest -p no:cacheprovider ${select[@]+"${select[@]}"} "$@"
