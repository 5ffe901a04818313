"""Signal handling: a signal never leaves a tree half changed.

SIGINT, SIGTERM and SIGHUP raise Interrupted at once while nothing is being changed. While a
transaction runs they are deferred: the transaction checks for one after each step and, if one
came, rolls back and exits 5. During a rollback or after the commit point they are noted and
the work finishes. SIGPIPE is ignored explicitly: a closed output pipe only silences the output
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
        self._defer = 0
        self._old: dict = {}

    def install(self) -> None:
        self._old[signal.SIGPIPE] = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for sig in HANDLED:
            self._old[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handler(self, signum, frame) -> None:
        if self.pending is None:
            self.pending = signal.Signals(signum).name
        if self._defer == 0:
            raise Interrupted(self.pending)

    @contextlib.contextmanager
    def deferred(self):
        """Signals arriving inside are only noted (check() raises for them)."""
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1

    def check(self) -> None:
        if self.pending is not None:
            raise Interrupted(self.pending)
