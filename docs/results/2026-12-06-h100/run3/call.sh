#!/usr/bin/env bash
# GPU call 2: what call 1 found, again: the prebuild serving without nvcc (0.5.8), 0.5.12.post1's
# Triton-path and precompute-off parity (each test on its own, with its own time limit), its bench.
set -uo pipefail
cd "$(dirname "$0")/.."
O=${OUT:-/tmp/out}; mkdir -p "$O"
t0=$SECONDS
stamp() { echo "[$((SECONDS - t0)) s] $*" | tee -a "$O/timeline.txt"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site SGLANG_ENABLE_JIT_DEEPGEMM=0 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export NSA_FASTPATH_BUILD_DIR=/tmp/nsa-build
stamp setup done
t() {  # name, limit, pytest args...
    local name=$1 limit=$2; shift 2
    timeout "$limit" python3 -m pytest -p no:cacheprovider -m gpu -v -rA --tb=short "$@" \
        > "$O/$name.log" 2>&1; stamp "$name rc=$?"
}
NSA_FASTPATH_TEST_RELEASE=0.5.8 t issue21_serve 200 tests/test_cuda_build.py -k prebuild_serves
export NSA_FASTPATH_TEST_RELEASE=0.5.12.post1
t p12_single_triton 120 tests/test_parity_nsa.py -k "gpu_single and cuda-off"
t p12_multi_off 200 tests/test_parity_nsa.py -k "gpu_multi and flags-default-precompute-off"
timeout 150 python3 bench/bench_release.py --release 0.5.12.post1 --bs 1,32,128 --iters 200 \
    --out "$O" > "$O/bench_release_0.5.12.post1.log" 2>&1; stamp "bench 0.5.12.post1 rc=$?"
