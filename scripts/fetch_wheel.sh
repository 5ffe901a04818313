#!/usr/bin/env bash
# Download a supported SGLang release's wheel (default: 0.5.8, the base our change was written
# against) into .cache/wheels/ and verify its sha256 (the pins are scripts/regen.py's RELEASES).
# The harness builds its pristine and patched trees from these files; regen.py reads them too.
#   bash scripts/fetch_wheel.sh [RELEASE]     prints the wheel's path
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
release=${1:-0.5.8}
py=${PYTHON:-python3}
sha=$("$py" -c 'import sys; sys.path.insert(0, sys.argv[1]); import regen; print(regen.RELEASES.get(sys.argv[2], ""))' \
    "$root/scripts" "$release")
[ -n "$sha" ] || { echo "fetch_wheel.sh: $release is not a supported release (scripts/regen.py RELEASES)" >&2; exit 2; }
dir="$root/.cache/wheels"
whl="$dir/sglang-$release-py3-none-any.whl"
if [ ! -f "$whl" ] || ! echo "$sha  $whl" | sha256sum -c --quiet - 2>/dev/null; then
    mkdir -p "$dir"
    "$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$dir" "sglang==$release"
fi
echo "$sha  $whl" | sha256sum -c --quiet - || { echo "wheel hash mismatch: $whl" >&2; exit 1; }
echo "$whl"
