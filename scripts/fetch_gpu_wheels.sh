#!/usr/bin/env bash
# Download, into .whl/, the wheels scripts/gpu_tier.sh installs with `pip install --no-index` on
# a GPU machine (which then needs no network; docs/GPU_TIER.md): SGLang's pure-Python imports,
# pinned where newer releases break SGLang 0.5.8 (transformers 5.x, huggingface-hub 1.x), plus
# pytest and apache-tvm-ffi (the CUDA metadata kernel builds with it; 0.5.9's own fused metadata
# copy too). About 35 MB. Run it on any machine with network; the wheels are for the GPU
# machine's Python: GPU_PYTHON_VERSION (default 3.12), x86_64 Linux. The SGLang wheels themselves
# travel in .cache/wheels (scripts/fetch_wheel.sh RELEASE).
# --dsa: for the releases from 0.5.13 only (the GPU tier's `measure` stage), without 0.5.8's
# transformers 4.57.1 and huggingface-hub 0.36 (their own transformers 5.8.1 comes from
# .whl/release-deps), about 12 MB less, so that the wheels of two releases travel beside .whl/
# in one call of at most 64 MiB (docs/GPU_TIER.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dsa=
[ "${1:-}" != --dsa ] || dsa=1
mkdir -p "$root/.whl"
pkgs=(
    pybase64 ipython==9.18.1 decorator jedi parso matplotlib-inline pexpect ptyprocess
    prompt_toolkit wcwidth pygments stack_data executing asttokens pure_eval traitlets
    ipython_pygments_lexers pydantic==2.14.3 pydantic-core==2.50.4 annotated-types
    typing-inspection msgspec pyzmq orjson starlette tokenizers==0.22.1
    openai==2.6.1 distro jiter sniffio partial-json-parser dill
    compressed-tensors==0.15.0.1 gguf loguru pytest==8.4.2 pluggy iniconfig
    # SGLang requires it: the CUDA metadata kernel builds with it, and so does SGLang 0.5.9's own
    # fused metadata copy (sglang.jit_kernel), so the GPU tier of 0.5.9 runs upstream's copy
    apache-tvm-ffi==0.1.15.post2 typing-extensions
)
if [ -n "$dsa" ]; then
    rm -f "$root"/.whl/transformers-4.*.whl "$root"/.whl/huggingface_hub-0.*.whl
else
    pkgs+=(transformers==4.57.1 huggingface-hub==0.36.0)  # SGLang 0.5.7 to 0.5.12
fi
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do plat+=(--platform "$p"); done
for pkg in "${pkgs[@]}"; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version "${GPU_PYTHON_VERSION:-3.12}" \
        --implementation cp "${plat[@]}" -d "$root/.whl" "$pkg"
done
# The packages a release imports at other versions than those (transformers 5.8.1 from 0.5.13:
# tests/harness/releases.py RELEASE_DEPS), for scripts/release_deps.sh to install offline into
# that release's own directory; huggingface-hub 1.x imports httpx's httpcore and h11 too.
mapfile -t deps < <(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import releases
print("\n".join(sorted({p for _, pins in releases.RELEASE_DEPS for p in pins})))' \
    "$root/tests/harness")
for pkg in "${deps[@]}" httpcore h11; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version "${GPU_PYTHON_VERSION:-3.12}" \
        --implementation cp "${plat[@]}" -d "$root/.whl/release-deps" "$pkg"
done
du -sh "$root/.whl"
