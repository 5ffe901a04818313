#!/usr/bin/env bash
# nsa-fastpath: install the patch set into an SGLang installation, or roll it back.
# `bash scripts/apply.sh --help` lists commands, exit codes and the state-dir layout.
#
# This wrapper only finds a Python and hands over to scripts/nsa_apply/ (standard library only),
# which does the work under the target's own interpreter: $PYTHON (default python3), the one
# whose SGLang is patched by default.
set -u
py=${PYTHON:-python3}
bad_python() {
    echo "[nsa-fastpath] ERROR: $1 (PYTHON=${PYTHON-<unset>}): set PYTHON=/path/to/python of your SGLang environment (3.10 or newer). Nothing changed." >&2
    exit 3
}
command -v "$py" >/dev/null 2>&1 || bad_python "no Python at '$py'"
# It must really be a Python 3.10+: a program that exits 0 without running us (PYTHON=/bin/true)
# would otherwise look like success.
ver=$("$py" -S -c 'import sys; print("nsa-fastpath-python %d %d" % sys.version_info[:2])' 2>/dev/null </dev/null)
case $ver in
    "nsa-fastpath-python 3 "[0-9]*) minor=${ver##* } ;;
    *) bad_python "'$py' is not a Python interpreter (it did not run a Python one-liner)" ;;
esac
[ "$minor" -ge 10 ] || bad_python "'$py' is Python 3.$minor; apply.sh needs 3.10 or newer"
# Ignored from here until Python's first statement installs apply.sh's own handlers: a signal
# in those milliseconds of interpreter start-up would otherwise be a KeyboardInterrupt
# traceback (or "Fatal Python error"); it is dropped, and the run goes on, its exit code true.
trap '' INT TERM HUP
exec "$py" -S "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/nsa_apply/__main__.py" "$@"
