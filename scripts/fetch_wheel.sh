#!/usr/bin/env bash
# Download a pinned SGLang release's wheel (default: 0.5.8, the base our change was written
# against) into .cache/wheels/ and verify its sha256 (the pins are scripts/regen.py's WHEELS).
# The harness builds its pristine and patched trees from these files; regen.py reads them too.
#   bash scripts/fetch_wheel.sh [RELEASE]     prints the wheel's path
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
release=${1:-0.5.8}
py=${PYTHON:-python3}
# the wheel for $py's CPython (from 0.5.11 SGLang ships one per CPython) and its pinned sha256
read -r name sha < <("$py" -c 'import sys; sys.path.insert(0, sys.argv[1]); import regen
r = sys.argv[2]
if r in regen.WHEELS:
    n = regen.wheel_name(r); print(n, regen.wheel_names(r)[n])' "$root/scripts" "$release") || true
[ -n "${sha:-}" ] || { echo "fetch_wheel.sh: no pinned wheel for SGLang $release (scripts/regen.py WHEELS)" >&2; exit 2; }
dir="$root/.cache/wheels"
whl="$dir/$name"
if [ ! -f "$whl" ] || ! echo "$sha  $whl" | sha256sum -c --quiet - 2>/dev/null; then
    mkdir -p "$dir"
    "$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$dir" "sglang==$release"
fi
echo "$sha  $whl" | sha256sum -c --quiet - || { echo "wheel hash mismatch: $whl" >&2; exit 1; }
echo "$whl"
