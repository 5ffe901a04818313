#!/usr/bin/env bash
# Download the pinned SGLang 0.5.8 wheel into .cache/wheels/ and verify its sha256.
# The harness builds its pristine and patched trees from this file; regen.py reads it too.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.cache/wheels"
whl="$dir/sglang-0.5.8-py3-none-any.whl"
sha=b7fbd890f6edd87f46c6e3ce72d592316af316f183c9bd999c3cc44b20fa2451
py=${PYTHON:-python3}
if [ ! -f "$whl" ] || ! echo "$sha  $whl" | sha256sum -c --quiet - 2>/dev/null; then
    mkdir -p "$dir"
    "$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$dir" sglang==0.5.8
fi
echo "$sha  $whl" | sha256sum -c --quiet - || { echo "wheel hash mismatch: $whl" >&2; exit 1; }
echo "$whl"
