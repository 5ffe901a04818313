#!/usr/bin/env bash
# README command 1: apply nsa-fastpath to a real SGLang (a release it has a set for) and print
# its status.
# Targets the SGLang of the active python ($PYTHON, default python3). If that python has no
# SGLang, it creates .venv -- this repository's CPU *test* environment (CPU torch, SGLang
# installed without its dependencies), which cannot serve models -- patches that, and says so.
# Extra arguments go to apply.sh (e.g. --target DIR, --dry-run, --allow-source-tree). An SGLang
# whose files git tracks (an editable or source install) is refused, pointing to apply.sh --git.
# Ends with the exact status and revert commands for what it patched.
# Exit status: apply.sh's (0 = patched; `apply.sh --help` lists the others), except 9 when
# everything worked but what it patched is .venv, the test environment, not a Python that
# serves (the last line then says so).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd -P)
py=${PYTHON:-python3}
if ! command -v "$py" >/dev/null 2>&1; then
    echo "[nsa-fastpath] ERROR: no Python at '$py': set PYTHON=/path/to/python of your SGLang environment" >&2
    exit 3
fi
used_venv=0
if ! "$py" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("sglang") is None)' 2>/dev/null; then
    what="$root/.venv, the CPU test environment (pinned sglang==0.5.8, CPU torch)"
    state=$(bash "$root/scripts/make_venv.sh" --state)
    case $state in
    ready) echo "[nsa-fastpath] $py has no SGLang: reusing $what, and patching that" >&2 ;;
    stale) echo "[nsa-fastpath] $py has no SGLang: updating $what to requirements-cpu.txt, and patching that" >&2 ;;
    *) echo "[nsa-fastpath] $py has no SGLang: creating $what, and patching that; this installs about 2.3 GB (CPU torch, Triton): minutes, depending on the network" >&2 ;;
    esac
    start=$SECONDS
    py=$(bash "$root/scripts/make_venv.sh")
    [ "$state" = ready ] || echo "[nsa-fastpath] .venv ready after $((SECONDS - start)) s" >&2
    used_venv=1
fi
PYTHON="$py" bash "$root/scripts/apply.sh" apply "$@"
rc=0
report=$(PYTHON="$py" bash "$root/scripts/apply.sh" status "$@") || rc=$?
printf '%s\n' "$report"

# What was patched, and the exact commands for it (the user's arguments, minus those of apply).
args=()
for a in "$@"; do case $a in -n | --dry-run | --allow-source-tree) ;; *) args+=("$a") ;; esac; done
cmd() { printf 'PYTHON=%q bash %q %s' "$py" "$root/scripts/apply.sh" "$1"; [ "${#args[@]}" -eq 0 ] || printf ' %q' "${args[@]}"; }
where=$(printf '%s\n' "$report" | sed -n 's/^\[nsa-fastpath\] target: \(.*\)$/\1/p' | head -n 1)
overall=$(printf '%s\n' "$report" | sed -n 's/^\[nsa-fastpath\] overall: \([a-z]*\).*/\1/p' | head -n 1)
echo "[nsa-fastpath] ---"
echo "[nsa-fastpath] setup: ${overall:-unknown}: the SGLang in ${where:-?}, the one $py imports"
echo "[nsa-fastpath] status: $(cmd status)"
echo "[nsa-fastpath] revert: $(cmd revert)"
if [ "$used_venv" = 1 ]; then
    [ "$rc" != 0 ] || rc=9
    echo "[nsa-fastpath] NOTE: exit $rc: no Python that serves was patched. $root/.venv is this repository's CPU test environment, used because ${PYTHON:-python3} has no SGLang: CPU-only torch, SGLang without its dependencies; it cannot serve models. To patch the SGLang you serve with: PYTHON=/path/to/its/python bash $root/scripts/setup.sh"
fi
exit "$rc"
