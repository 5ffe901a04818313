#!/usr/bin/env bash
# README command 1: apply nsa-fastpath to a real SGLang 0.5.8 and print its status.
# Targets the SGLang of the active python ($PYTHON, default python3); if that python has no
# SGLang, creates .venv with the pinned SGLang and the CPU test dependencies, and patches that.
# Extra arguments go to apply.sh (e.g. --target DIR, --dry-run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
if ! "$py" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("sglang") is None)' 2>/dev/null; then
    echo "[nsa-fastpath] $py has no SGLang: creating $root/.venv with sglang==0.5.8" >&2
    py=$(bash "$root/scripts/make_venv.sh")
fi
PYTHON="$py" bash "$root/scripts/apply.sh" apply "$@"
PYTHON="$py" bash "$root/scripts/apply.sh" status "$@"
