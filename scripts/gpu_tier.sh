#!/usr/bin/env bash
# GPU tier (docs/GPU_TIER.md): what only a GPU can run. From the repo root of a checkout that
# holds .whl/ and .cache/wheels/ (scripts/fetch_gpu_wheels.sh, scripts/fetch_wheel.sh; no network
# needed here):
#   bash scripts/gpu_tier.sh all     # tests, then multi, then bench
#   bash scripts/gpu_tier.sh tests|multi|bench|build [pytest or benchmark args]
#   bash scripts/gpu_tier.sh measure [bench_release.py args]   # SGLang's own fused replay
#       metadata (0.5.15 on) beside 0.5.14's own code and ours on it, one table
#       (NSA_FASTPATH_MEASURE_RELEASES, default 0.5.14,0.5.15; docs/GPU_TIER.md)
# `tests`: pre-builds the CUDA kernel with the operator's command (for this GPU), its build tests
# (test_cuda_build.py), the Triton kernel tests compiled for the GPU, then the gpu-marked tests
# but the multi-step ones (parity with CUDA-graph capture/replay, CUDA C++ kernel tests, first
# replay after capture). `multi`: the multi-step parity tests. `bench`: the side-by-side
# benchmarks. `build`: the CUDA kernel's build through apache-tvm-ffi: the operator's prebuild
# into an empty cache (cold, then again), the build tests that need a GPU (eight processes
# starting at once; the image's prebuild serving metadata.cuda from a process without nvcc and
# with another TORCH_CUDA_ARCH_LIST), status on this GPU and the serving image's steps, the
# CUDA-path kernel tests and single-backend parity, the capture cost
# (bench/bench_capture_cost.py) and the replay host cost beside the empty-launch floor.
# Each stage is sized to take under 10 minutes on an H200.
# The SGLang release: NSA_FASTPATH_TEST_RELEASE (default 0.5.8; its wheel in .cache/wheels), e.g.
#   NSA_FASTPATH_TEST_RELEASE=0.5.9 bash scripts/gpu_tier.sh tests
# Uses this machine's python3 with its CUDA torch, Triton and nvcc; SGLang and the pure-Python
# packages it imports are installed from .whl/ into /tmp/site. Logs go to $OUT
# (default /tmp/nsa-fastpath-gpu).
set -uo pipefail
stage=${1:-tests}
shift || true
case "$stage" in
tests | multi | bench | build | measure) ;;
all) [ $# -eq 0 ] || { echo "gpu_tier.sh all takes no extra arguments" >&2; exit 2; } ;;
*) echo "usage: gpu_tier.sh all|tests|multi|bench|build|measure [args]" >&2; exit 2 ;;
esac
out=${OUT:-/tmp/nsa-fastpath-gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
if [ -d .whl/release-deps ]; then  # httpcore, h11: huggingface-hub 1.x's (releases from 0.5.13)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/release-deps/httpcore-*.whl .whl/release-deps/h11-*.whl || exit 1
fi
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# a release's own packages (transformers 5.8.1 from 0.5.13), installed from these wheels by
# scripts/release_deps.sh into .cache/release-deps/ when the tests first build its trees
export NSA_FASTPATH_DEPS_WHEELS=$PWD/.whl/release-deps
export SGLANG_ENABLE_JIT_DEEPGEMM=0 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export NSA_FASTPATH_TEST_RELEASE=${NSA_FASTPATH_TEST_RELEASE:-0.5.8}
export NSA_FASTPATH_BENCH_RELEASE=${NSA_FASTPATH_BENCH_RELEASE:-$NSA_FASTPATH_TEST_RELEASE}
export NSA_FASTPATH_BUILD_DIR=${NSA_FASTPATH_BUILD_DIR:-/tmp/nsa-fastpath-build}
# per release: bench/common.py reuses the trees it finds there
export NSA_FASTPATH_BENCH_DIR=${NSA_FASTPATH_BENCH_DIR:-/tmp/nsa-fastpath-trees-$NSA_FASTPATH_BENCH_RELEASE}
{
    date -u +%Y-%m-%dT%H:%MZ
    echo "SGLang $NSA_FASTPATH_TEST_RELEASE (tests), $NSA_FASTPATH_BENCH_RELEASE (bench)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)'
    nvcc --version | tail -1
} 2>&1 | tee "$out/env_$stage.txt"
if [ "$stage" = measure ]; then  # each release's trees and own packages: bench_release.py
    start=$(date +%s)
    python3 bench/bench_release.py --release "${NSA_FASTPATH_MEASURE_RELEASES:-0.5.14,0.5.15}" \
        --out "$out" "$@" 2>&1 | tee "$out/bench_measure.log"
    status=${PIPESTATUS[0]}
    echo "gpu_tier.sh measure: $(( $(date +%s) - start )) s" | tee -a "$out/durations.txt"
    echo "gpu_tier.sh measure: $([ "$status" = 0 ] && echo passed || echo FAILED); logs in $out"
    exit "$status"
fi
# the release's own packages first on every process's path (the prebuild imports SGLang too)
deps=$(PYTHON=python3 bash scripts/release_deps.sh "$NSA_FASTPATH_TEST_RELEASE") || exit 1
[ -z "$deps" ] || export PYTHONPATH=$deps:$PYTHONPATH
trees=$(python3 bench/common.py) || exit 1  # pristine and patched trees (pip + apply.sh)
pristine=${trees%%$'\n'*}
patched=${trees#*$'\n'}
status=0

run_tests() {  # build, kernel tests, single-backend parity, first-replay check
    local start=$(date +%s)
    PYTHONPATH=$patched:tests/standins/gpu:tests/standins:$PYTHONPATH \
        python3 -m sglang.srt.layers.attention.nsa.cuda_metadata_wrapper --build 2>&1 \
        | tee "$out/cuda_build.log" || status=1
    echo "CUDA kernel build/load: $(( $(date +%s) - start )) s" | tee -a "$out/cuda_build.log"
    python3 -m pytest -p no:cacheprovider -q -rA tests/test_cuda_build.py 2>&1 \
        | tee -a "$out/cuda_build.log" || status=1
    NSA_FASTPATH_TEST_DEVICE=cuda python3 -m pytest -p no:cacheprovider -q -rA \
        tests/test_metadata_kernel.py -k triton 2>&1 | tee "$out/triton_kernel_tests.log" || status=1
    python3 -m pytest -p no:cacheprovider -m gpu -v -rA --durations=10 tests/ \
        -k "not multi_step" "$@" 2>&1 | tee "$out/gpu_tests.log" || status=1
    # the first-replay table: SGLang's own code in the pristine tree, then our paths, each
    # process from an empty Triton cache (the test above asserts; this records the numbers)
    local tree paths
    for tree in pristine patched; do
        paths=$([ $tree = pristine ] && echo sglang || echo cuda,triton,copy)
        TRITON_CACHE_DIR=$(mktemp -d) python3 tests/harness/first_replay.py \
            --tree "${!tree}" --paths $paths --out "$out/first_replay_$tree.json" 2>&1 \
            | grep -v "^{" | tee -a "$out/first_replay.log" || status=1
    done
}

run_multi() {  # multi-step parity (fused fill and batched copy)
    python3 -m pytest -p no:cacheprovider -m gpu -v -rA --durations=10 tests/ \
        -k "multi_step" "$@" 2>&1 | tee "$out/gpu_tests_multi.log" || status=1
}

run_bench() {
    # the release's own replay code beside ours through its runners (bench_release_<R>.json/.md)
    python3 bench/bench_release.py --release "$NSA_FASTPATH_BENCH_RELEASE" --out "$out" 2>&1 \
        | tee "$out/bench_release.log" || status=1
    python3 bench/bench_replay_metadata.py "$@" 2>&1 | tee "$out/bench_replay_metadata.log" || status=1
    python3 bench/bench_batched_copy.py "$@" 2>&1 | tee "$out/bench_batched_copy.log" || status=1
    python3 bench/bench_radix_match.py --device cuda --tree "$patched" 2>&1 \
        | tee "$out/bench_radix_match.log" || status=1
}

run_build() {  # the CUDA metadata kernel built through apache-tvm-ffi
    local NSA_FASTPATH_BUILD_DIR=$(mktemp -d /tmp/nsa-fastpath-build.XXXX)  # empty: a first start
    export NSA_FASTPATH_BUILD_DIR
    local wrapper=(python3 -m sglang.srt.layers.attention.nsa.cuda_metadata_wrapper --build)
    for run in cold again; do
        local start=$(date +%s%N)
        PYTHONPATH=$patched:$PYTHONPATH TORCH_CUDA_ARCH_LIST=9.0a "${wrapper[@]}" 2>&1 \
            | tee -a "$out/cuda_build.log" || status=1
        echo "prebuild ($run) for sm_90a: $(( ($(date +%s%N) - start) / 1000000 )) ms" \
            | tee -a "$out/cuda_build.log"
    done
    python3 -m pytest -p no:cacheprovider -q -rA -s tests/test_cuda_build.py \
        -k "eight_processes or prebuild or either_gpu" 2>&1 \
        | tee "$out/cuda_build_tests.log" || status=1  # the rest needs no GPU: the CPU tier's
    python3 -m pytest -p no:cacheprovider -q -rA tests/test_status_consistency.py \
        tests/test_serving_image.py 2>&1 | tee "$out/status_tests.log" || status=1
    python3 -m pytest -p no:cacheprovider -m gpu -q -rA tests/test_metadata_kernel.py -k cuda \
        2>&1 | tee "$out/cuda_kernel_tests.log" || status=1
    python3 -m pytest -p no:cacheprovider -m gpu -v -rA tests/test_parity_nsa.py \
        -k "gpu_single and flags-default" 2>&1 | tee "$out/cuda_parity.log" || status=1
    python3 bench/bench_capture_cost.py 2>&1 | tee "$out/capture_cost.log" || status=1
    python3 bench/bench_replay_metadata.py --iters 100 --bs 1,32,256 "$@" 2>&1 \
        | tee "$out/bench_replay_metadata.log" || status=1
}

for s in $([ "$stage" = all ] && echo tests multi bench || echo "$stage"); do
    start=$(date +%s)
    "run_$s" "$@"
    echo "gpu_tier.sh $s: $(( $(date +%s) - start )) s" | tee -a "$out/durations.txt"
done
echo "gpu_tier.sh $stage: $([ $status = 0 ] && echo passed || echo FAILED); logs in $out"
exit $status
