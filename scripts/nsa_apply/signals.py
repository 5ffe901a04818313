"""Signal handling: a signal never leaves a tree half changed.

SIGINT, SIGTERM and SIGHUP raise Interrupted at once while nothing has been changed yet. From
the first deferred() block on they are only noted, for the rest of the run: a transaction checks
for one after each step and, if one came, rolls back and exits 5; during a rollback, after the
commit point (`committed`) and while the run winds down they are noted and the work finishes,
with the exit code it earned. SIGPIPE is ignored explicitly: a closed output pipe only silences the output
(see output.py). SIGKILL cannot be caught: rerunning apply or revert finishes the job.
"""
from __future__ import annotations

import contextlib
import signal

from .errors import Interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Signals:
    def __init__(self) -> None:
        self.pending: str | None = None
        self.held = False        # set by deferred(): no signal raises asynchronously any more
        self.committed = False   # the run's commit point has passed: check() raises no more
        self._old: dict = {}

    def install(self) -> None:
        self._old[signal.SIGPIPE] = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for sig in HANDLED:
            self._old[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        """Back to the handlers found at install() (for callers that run main() in-process;
        the apply.sh process keeps ours to the end, so that a late signal stays a note)."""
        self.held = True
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def note(self, signame: str) -> None:
        if self.pending is None:
            self.pending = signame

    def _handler(self, signum, frame) -> None:
        self.note(signal.Signals(signum).name)
        if not self.held and not _in_finalizer(frame):
            raise Interrupted(self.pending)

    @contextlib.contextmanager
    def deferred(self):
        """From here to the end of the run signals are only noted (check() raises for them
        until the commit point)."""
        self.held = True
        yield

    def hold(self) -> None:
        """The run is over: whatever arrives now is only noted."""
        self.held = True

    def check(self) -> None:
        if self.pending is not None and not self.committed:
            raise Interrupted(self.pending)


def _in_finalizer(frame) -> bool:
    """The handler interrupted a `__del__` (e.g. a finished subprocess.Popen's): Python would
    print an exception raised there as "Exception ignored ... Traceback" and drop it. There the
    signal stays noted; the next check() acts on it."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False
