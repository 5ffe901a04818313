"""Exit codes of apply.sh and the exceptions that carry them (documented in cli.USAGE)."""
from __future__ import annotations

OK = 0
UNEXPECTED = 1   # a bug, before any change
USAGE = 2        # bad command line or environment variable
TARGET = 3       # cannot work on this target / our own inputs are inconsistent
REFUSED = 4      # a foreign file, uncommitted changes, another version recorded
ROLLED_BACK = 5  # stopped (failure or signal) and rolled back: the tree is as before the run
MANUAL = 6       # needs manual action; the message says what to do
PARTIAL = 7      # status only: unfinished (interrupted run, or leftovers after pip uninstall)
BUSY = 8         # another run holds the target's lock (or git's index.lock exists)
BUILD_FAILED = 10  # apply --build: applied, but the CUDA metadata kernel did not build


class Fail(Exception):
    """Ends the run with `code`; `lines` are printed as ERROR lines."""

    def __init__(self, code: int, *lines: str):
        super().__init__("\n".join(lines))
        self.code = code
        self.lines = list(lines)


class Interrupted(Exception):
    """A handled signal (SIGINT, SIGTERM, SIGHUP) arrived; raised at the next safe point."""

    def __init__(self, signame: str):
        super().__init__(f"interrupted by {signame}")
        self.signame = signame


class InjectedFault(Exception):
    """Raised by the test fault hook (NSA_FASTPATH_FAULT_MODE=error)."""
