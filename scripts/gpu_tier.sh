#!/usr/bin/env bash
# GPU tier: the CUDA-marked tests (parity with CUDA-graph capture/replay) on the device machine.
# Through the device tool, from the repo root (docs/GPU_TIER.md says how to prepare .whl/):
#   run(command="bash scripts/gpu_tier.sh", carry=[".whl", ".cache/wheels"])
# The image's own torch, Triton and nvcc are used; SGLang 0.5.8 and the pure-Python packages it
# imports travel as wheels in .whl/, installed to /tmp/site. Logs go to $OUT.
set -uo pipefail
out=${OUT:-/tmp/nsa-fastpath-gpu}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export SGLANG_ENABLE_JIT_DEEPGEMM=0 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
{
    date -u +%Y-%m-%dT%H:%MZ
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)'
    nvcc --version | tail -1
} 2>&1 | tee "$out/env.txt"
status=0
python3 -m pytest -p no:cacheprovider -m gpu -v -rA tests/ "$@" 2>&1 | tee "$out/gpu_tests.log" || status=1
exit $status
