#!/usr/bin/env bash
# Install the packages an SGLang release imports at another version than the shared CPU venv
# holds (tests/harness/releases.py RELEASE_DEPS; e.g. transformers 5.8.1 from 0.5.13) into
# .cache/release-deps/<range>/, --no-deps, for that release's test processes only (the harness
# puts the directory first on their sys.path). Idempotent: a directory whose .pins file lists
# the pins is kept. Installs into a temporary directory renamed into place, so an interrupted
# run leaves nothing half-written.
#   bash scripts/release_deps.sh RELEASE    prints the directory ('' when the release needs none)
# Installs with $PYTHON (default: .venv's, made if needed); from the wheels in
# $NSA_FASTPATH_DEPS_WHEELS without network when set (the GPU tier: scripts/fetch_gpu_wheels.sh
# puts them in .whl/release-deps/).
# NSA_FASTPATH_RELEASE_DEPS=python: the Python's own packages serve (prints '', installs nothing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
release=${1:?usage: release_deps.sh RELEASE}
[ "${NSA_FASTPATH_RELEASE_DEPS:-}" != python ] || { echo ""; exit 0; }
py=${PYTHON:-$(bash "$root/scripts/make_venv.sh")}
source=()
[ -z "${NSA_FASTPATH_DEPS_WHEELS:-}" ] || source=(--no-index --find-links "$NSA_FASTPATH_DEPS_WHEELS")
spec=$("$py" -c 'import sys; sys.path.insert(0, sys.argv[1]); import releases
deps = releases.release_deps(sys.argv[2])
print("" if deps is None else " ".join([str(deps[0]), *deps[1]]))' "$root/tests/harness" "$release")
[ -n "$spec" ] || { echo ""; exit 0; }
read -r dir pins <<< "$spec"
if [ -f "$dir/.pins" ] && [ "$(cat "$dir/.pins")" = "$pins" ]; then echo "$dir"; exit 0; fi
mkdir -p "$(dirname "$dir")"
tmp=$(mktemp -d "$dir.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086  # the pins are words
"$py" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
    ${source[@]+"${source[@]}"} --target "$tmp" $pins >&2
echo "$pins" > "$tmp/.pins"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "$dir"
