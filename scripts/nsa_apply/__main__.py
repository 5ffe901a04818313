"""Entry point: scripts/apply.sh runs `$PYTHON -S scripts/nsa_apply/__main__.py ARGS`.

Kept importable by old Pythons so that they get a clear message instead of a SyntaxError.
-S: site is imported here, after a SIGINT/SIGTERM/SIGHUP is already only noted, so that a
signal while Python starts up ends the run cleanly (exit 5, nothing changed) instead of a
KeyboardInterrupt traceback.
"""
try:  # the first statement: from here a signal is only noted (the C module: no imports)
    import _signal
    _early = []

    def _note_early(signum, frame):
        _early.append(signum)

    for _sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(_sig, _note_early)
except KeyboardInterrupt:  # in the microseconds before that
    import posix
    posix.write(2, b"[nsa-fastpath] ERROR: interrupted by SIGINT before any change: "
                   b"nothing changed\n")
    posix._exit(5)

import os  # noqa: E402
import sys  # noqa: E402

# A closed stdin/stdout/stderr (`apply.sh ... >&-`) becomes /dev/null: no file we open may
# take its number, and output to it is simply lost (output.py).
for _fd in (0, 1, 2):
    try:
        os.fstat(_fd)
    except OSError:
        _null = os.open(os.devnull, os.O_RDWR)
        if _null != _fd:
            os.dup2(_null, _fd)
            os.close(_null)

if sys.version_info < (3, 10):
    sys.stderr.write("[nsa-fastpath] ERROR: apply.sh needs Python 3.10 or newer; %s is %s. "
                     "Set PYTHON=/path/to/python3.10+ (the Python of your SGLang environment). "
                     "Nothing changed.\n" % (sys.executable, sys.version.split()[0]))
    sys.exit(3)

if sys.flags.no_site:
    import site  # noqa: E402
    site.main()

if __package__ in (None, ""):
    # run as a file: make the package importable (scripts/ on sys.path, not scripts/nsa_apply/)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from nsa_apply.cli import main  # noqa: E402

_code = main(sys.argv[1:], early=_early, standalone=True)
# os._exit, not sys.exit: interpreter shutdown puts the default SIGINT/SIGTERM handlers back,
# and a signal then would end the process by that signal after the run had finished.
for _stream in (sys.stdout, sys.stderr):
    try:
        _stream.flush()
    except (AttributeError, OSError, ValueError):
        pass
os._exit(_code)
