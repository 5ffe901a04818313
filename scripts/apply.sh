#!/usr/bin/env bash
# nsa-fastpath: install the patch set into an SGLang 0.5.8 installation, or roll it back.
# `bash scripts/apply.sh --help` lists commands, exit codes and the state-dir layout.
#
# This wrapper only finds a Python and hands over to scripts/nsa_apply/ (standard library only),
# which does the work under the target's own interpreter: $PYTHON (default python3), the one
# whose SGLang is patched by default.
set -u
py=${PYTHON:-python3}
if ! command -v "$py" >/dev/null 2>&1; then
    echo "[nsa-fastpath] ERROR: no Python at '$py' (PYTHON=${PYTHON-<unset>}): set PYTHON=/path/to/python of your SGLang environment (3.10 or newer). Nothing changed." >&2
    exit 3
fi
exec "$py" "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/nsa_apply/__main__.py" "$@"
