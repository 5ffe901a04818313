#!/usr/bin/env bash
# GPU tier on the device machine (docs/GPU_TIER.md). From the repo root, through the device tool:
#   run(command="bash scripts/gpu_tier.sh tests", carry=[".whl", ".cache/wheels"])
#   run(command="bash scripts/gpu_tier.sh multi", carry=[".whl", ".cache/wheels"])
#   run(command="bash scripts/gpu_tier.sh bench", carry=[".whl", ".cache/wheels"])
#   run(command="bash scripts/gpu_tier.sh build", carry=[".whl", ".cache/wheels"])
# `tests`: pre-builds the CUDA kernel with the operator's command, builds it for sm_90a + sm_100a
# and checks its cache and failures (test_cuda_build.py), the Triton kernel tests compiled for the
# GPU, then the gpu-marked tests but the multi-step ones (parity with CUDA-graph capture/replay, CUDA
# C++ kernel tests, first replay after capture). `multi`: the multi-step parity tests.
# `bench`: the side-by-side benchmarks. `build`: the CUDA metadata kernel's build through
# apache-tvm-ffi (issue 14): the operator's prebuild into an empty cache (cold, then again), the
# gpu-marked kernel and build tests and single-backend parity on the CUDA path, the capture cost
# (0.5.8 / CUDA path / Triton path, empty and warm caches), eight processes starting at once, and
# the replay host cost beside the tvm-ffi empty-launch floor (about 7 minutes).
# Each stage fits the device tool's 10-minute limit.
# The SGLang release: NSA_FASTPATH_TEST_RELEASE (default 0.5.8; its wheel in .cache/wheels), e.g.
#   run(command="NSA_FASTPATH_TEST_RELEASE=0.5.9 bash scripts/gpu_tier.sh tests", carry=[...])
# Uses the image's torch, Triton and nvcc; SGLang 0.5.8 and the pure-Python packages it imports
# travel as wheels in .whl/ (scripts/fetch_gpu_wheels.sh). Logs go to $OUT.
set -uo pipefail
stage=${1:-tests}
shift || true
out=${OUT:-/tmp/nsa-fastpath-gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
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
trees=$(python3 bench/common.py) || exit 1  # pristine and patched trees (pip + apply.sh)
patched=${trees#*$'\n'}
status=0
case "$stage" in
tests)  # build, kernel tests, single-backend parity, first-replay check
    start=$(date +%s)
    PYTHONPATH=$patched:tests/standins/gpu:tests/standins:$PYTHONPATH \
        python3 -m sglang.srt.layers.attention.nsa.cuda_metadata_wrapper --build 2>&1 \
        | tee "$out/cuda_build.log" || status=1
    echo "CUDA extension build/load: $(( $(date +%s) - start )) s" | tee -a "$out/cuda_build.log"
    python3 -m pytest -p no:cacheprovider -q -rA tests/test_cuda_build.py 2>&1 \
        | tee -a "$out/cuda_build.log" || status=1
    NSA_FASTPATH_TEST_DEVICE=cuda python3 -m pytest -p no:cacheprovider -q -rA \
        tests/test_metadata_kernel.py -k triton 2>&1 | tee "$out/triton_kernel_tests.log" || status=1
    python3 -m pytest -p no:cacheprovider -m gpu -v -rA --durations=10 tests/ \
        -k "not multi_step" "$@" 2>&1 | tee "$out/gpu_tests.log" || status=1
    ;;
multi)  # multi-step parity (fused fill and batched copy)
    python3 -m pytest -p no:cacheprovider -m gpu -v -rA --durations=10 tests/ \
        -k "multi_step" "$@" 2>&1 | tee "$out/gpu_tests_multi.log" || status=1
    ;;
bench)
    python3 bench/bench_replay_metadata.py "$@" 2>&1 | tee "$out/bench_replay_metadata.log" || status=1
    python3 bench/bench_batched_copy.py "$@" 2>&1 | tee "$out/bench_batched_copy.log" || status=1
    if [ -f bench/bench_radix_match.py ]; then
        python3 bench/bench_radix_match.py --device cuda --tree "$patched" 2>&1 \
            | tee "$out/bench_radix_match.log" || status=1
    fi
    ;;
build)  # the CUDA metadata kernel built through apache-tvm-ffi (issue 14)
    export NSA_FASTPATH_BUILD_DIR=$(mktemp -d /tmp/nsa-fastpath-build.XXXX)  # empty: a first start
    wrapper=(python3 -m sglang.srt.layers.attention.nsa.cuda_metadata_wrapper --build)
    for run in cold again; do
        start=$(date +%s%N)
        PYTHONPATH=$patched:$PYTHONPATH TORCH_CUDA_ARCH_LIST=9.0a "${wrapper[@]}" 2>&1 \
            | tee -a "$out/cuda_build.log" || status=1
        echo "prebuild ($run) for sm_90a: $(( ($(date +%s%N) - start) / 1000000 )) ms" \
            | tee -a "$out/cuda_build.log"
    done
    python3 -m pytest -p no:cacheprovider -q -rA -s tests/test_cuda_build.py \
        -k "eight_processes or prebuild or either_gpu" 2>&1 \
        | tee "$out/cuda_build_tests.log" || status=1  # the rest is CI's (no GPU needed)
    python3 -m pytest -p no:cacheprovider -m gpu -q -rA tests/test_metadata_kernel.py -k cuda \
        2>&1 | tee "$out/cuda_kernel_tests.log" || status=1
    python3 -m pytest -p no:cacheprovider -m gpu -v -rA tests/test_parity_nsa.py \
        -k "gpu_single and flags-default" 2>&1 | tee "$out/cuda_parity.log" || status=1
    python3 bench/bench_capture_cost.py 2>&1 | tee "$out/capture_cost.log" || status=1
    python3 bench/bench_replay_metadata.py --iters 100 --bs 1,32,256 "$@" 2>&1 \
        | tee "$out/bench_replay_metadata.log" || status=1
    ;;
*) echo "usage: gpu_tier.sh tests|multi|bench|build [args]" >&2; exit 2 ;;
esac
exit $status
