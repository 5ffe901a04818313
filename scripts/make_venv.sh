#!/usr/bin/env bash
# Create (or refresh) .venv: CPU torch, Triton (interpreter), pytest, SGLang 0.5.8 --no-deps and
# the pure-Python packages its modules import (requirements-cpu.txt). Idempotent: a stamp holding
# the requirements' hash skips the work when nothing changed. Prints the venv's python.
# `make_venv.sh --state` only prints what a run would do: ready (reuse), stale (update), absent
# (create: installs CPU torch, Triton and the rest, about 2.3 GB).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
py=${PYTHON:-python3}
stamp="$venv/.nsa-fastpath-stamp"
want=$(cat "$root/requirements-cpu.txt" "$0" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
    state=ready
elif [ -x "$venv/bin/python" ]; then
    state=stale
else
    state=absent
fi
if [ "${1:-}" = --state ]; then echo "$state"; exit 0; fi
if [ "$state" = ready ]; then echo "$venv/bin/python"; exit 0; fi
whl=$(PYTHON="$py" bash "$root/scripts/fetch_wheel.sh")
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/requirements-cpu.txt" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$whl" >&2
echo "$want" > "$stamp"
echo "$venv/bin/python"
