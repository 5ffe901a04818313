#!/usr/bin/env bash
# GPU call 3: SGLang 0.5.14 parity through its own runners (CUDA graphs; CUDA and Triton paths,
# multi-step), then bench_release.py for 0.5.14 (its own code, ours) beside 0.5.15's own.
set -uo pipefail
cd "$(dirname "$0")/.."
O=${OUT:-/tmp/out}; mkdir -p "$O"
t0=$SECONDS
stamp() { echo "[$((SECONDS - t0)) s] $*" | tee -a "$O/timeline.txt"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl .whl/release-deps/httpcore-*.whl .whl/release-deps/h11-*.whl || exit 1
export PYTHONPATH=/tmp/site SGLANG_ENABLE_JIT_DEEPGEMM=0 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export NSA_FASTPATH_BUILD_DIR=/tmp/nsa-build NSA_FASTPATH_DEPS_WHEELS=$PWD/.whl/release-deps
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)'
  nvcc --version | tail -1; date -u; } > "$O/env.txt" 2>&1
stamp setup done
t() {  # name, limit, pytest args...
    local name=$1 limit=$2; shift 2
    timeout "$limit" python3 -m pytest -p no:cacheprovider -m gpu -v -rA --tb=short "$@" \
        > "$O/$name.log" 2>&1; stamp "$name rc=$?"
}
export NSA_FASTPATH_TEST_RELEASE=0.5.14
t p14_single_cuda 120 tests/test_parity_nsa.py -k "gpu_single and flags-default"
t p14_single_triton 100 tests/test_parity_nsa.py -k "gpu_single and cuda-off"
t p14_multi_cuda 150 tests/test_parity_nsa.py -k "gpu_multi and flags-default-precompute-on"
for r in 0.5.14 0.5.15; do
    timeout 170 python3 bench/bench_release.py --release $r --bs 1,32,128 --iters 200 \
        --out "$O" > "$O/bench_release_$r.log" 2>&1; stamp "bench $r rc=$?"
done
