#!/usr/bin/env bash
# GPU call 1: SGLang 0.5.8 (the prebuild serving from a process without nvcc, status on a GPU),
# then 0.5.12.post1 (smoke on CUDA, parity through its runners with CUDA graphs, bench_release).
set -uo pipefail
cd "$(dirname "$0")/.."
O=${OUT:-/tmp/out}; mkdir -p "$O"
t0=$SECONDS
stamp() { echo "[$((SECONDS - t0)) s] $*" | tee -a "$O/timeline.txt"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site SGLANG_ENABLE_JIT_DEEPGEMM=0 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export NSA_FASTPATH_BUILD_DIR=/tmp/nsa-build
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)'
  nvcc --version | tail -1; date -u; } > "$O/env.txt" 2>&1
stamp setup done
for r in 0.5.8 0.5.12.post1; do
    NSA_FASTPATH_TEST_RELEASE=$r timeout 150 python3 tests/harness/smoke.py --device cuda \
        > "$O/smoke_$r.log" 2>&1; stamp "smoke $r rc=$?"
done
NSA_FASTPATH_TEST_RELEASE=0.5.8 timeout 200 python3 -m pytest -p no:cacheprovider -m gpu -v -rA \
    tests/test_cuda_build.py tests/test_status_consistency.py -k "prebuild_serves or says_one_thing" \
    > "$O/issue21_gpu.log" 2>&1; stamp "issue21 gpu tests rc=$?"
export NSA_FASTPATH_TEST_RELEASE=0.5.12.post1
timeout 240 python3 -m pytest -p no:cacheprovider -m gpu -v -rA --durations=10 tests/test_parity_nsa.py \
    -k "gpu_single and (flags-default or cuda-off) or gpu_multi and flags-default" \
    > "$O/parity_0.5.12.post1.log" 2>&1; stamp "parity 0.5.12.post1 rc=$?"
timeout 200 python3 bench/bench_release.py --release 0.5.12.post1 --out "$O" \
    > "$O/bench_release_0.5.12.post1.log" 2>&1; stamp "bench 0.5.12.post1 rc=$?"
