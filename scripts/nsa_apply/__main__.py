"""Entry point: scripts/apply.sh runs `$PYTHON scripts/nsa_apply/__main__.py ARGS`.

Kept importable by old Pythons so that they get a clear message instead of a SyntaxError.
"""
import os
import sys

if sys.version_info < (3, 10):
    sys.stderr.write("[nsa-fastpath] ERROR: apply.sh needs Python 3.10 or newer; %s is %s. "
                     "Set PYTHON=/path/to/python3.10+ (the Python of your SGLang environment). "
                     "Nothing changed.\n" % (sys.executable, sys.version.split()[0]))
    sys.exit(3)

if __package__ in (None, ""):
    # run as a file: make the package importable (scripts/ on sys.path, not scripts/nsa_apply/)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from nsa_apply.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
