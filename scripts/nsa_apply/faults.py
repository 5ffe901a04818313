"""Test-only fault injection, driven by NSA_FASTPATH_FAULT_AT / _MODE / _FILL.

Every mutating step of a transaction (write, rename, link, mkdir, move) is numbered. With
NSA_FASTPATH_FAULT_AT=N the N-th step is disturbed according to NSA_FASTPATH_FAULT_MODE:
  error    after step N: raise an error (the run rolls back, exit 5)
  kill     after step N: SIGKILL this process (no cleanup: the next run must finish the job)
  enospc   step N fails with ENOSPC (a write after writing half its data), and every later
           write fails the same way: the disk stays full during the rollback
  sigint, sigterm, sighup   after step N: send that signal to this process
  sigpipe  after step N: stdout and stderr become pipes without a reader
  fill     after step N: fill the filesystem of NSA_FASTPATH_FAULT_FILL (a file to create
           there) until it is full; later writes get a real ENOSPC from the kernel
  slow     after step N and every later step: sleep 20 ms (a slow disk), so that a test can
           send real signals into the middle of a run
"""
from __future__ import annotations

import errno
import os
import signal
import time

from .errors import Fail, InjectedFault, USAGE

MODES = ("error", "kill", "enospc", "sigint", "sigterm", "sighup", "sigpipe", "fill", "slow")


def enospc(what: str) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected)", what)


class FaultHook:
    def __init__(self, at: int = 0, mode: str = "error", fill: str = "", crash=None,
                 break_output=None):
        self.at, self.mode, self.fill = at, mode, fill
        self.crash = crash or (lambda: os.kill(os.getpid(), signal.SIGKILL))
        self.break_output = break_output or _break_stdio
        self.disk_full = False

    @classmethod
    def from_env(cls, env) -> "FaultHook":
        raw = env.get("NSA_FASTPATH_FAULT_AT", "") or "0"
        if not raw.isdigit():
            raise Fail(USAGE, f"NSA_FASTPATH_FAULT_AT must be a step number (got {raw!r}); "
                              "it is for tests: unset it. Nothing changed.")
        mode = env.get("NSA_FASTPATH_FAULT_MODE", "") or "error"
        if mode not in MODES:
            raise Fail(USAGE, f"NSA_FASTPATH_FAULT_MODE must be one of {', '.join(MODES)} "
                              f"(got {mode!r}); it is for tests: unset it. Nothing changed.")
        fill = env.get("NSA_FASTPATH_FAULT_FILL", "")
        if mode == "fill" and not fill:
            raise Fail(USAGE, "NSA_FASTPATH_FAULT_MODE=fill needs NSA_FASTPATH_FAULT_FILL=FILE. "
                              "Nothing changed.")
        return cls(int(raw), mode, fill)

    def disarm(self) -> None:
        """No more injected faults (a rollback is running); a full disk stays full."""
        self.at = 0

    def before(self, n: int, kind: str, what: str) -> None:
        """Called before step n does anything; may fail it with ENOSPC."""
        if kind == "write" and self.disk_full:
            raise enospc(what)
        if self.mode == "enospc" and n == self.at:
            self.disk_full = True
            raise enospc(what)

    def after(self, n: int, what: str) -> None:
        if self.mode == "slow" and self.at and n >= self.at:
            time.sleep(0.02)
        if n != self.at or self.mode in ("enospc", "slow"):
            return
        if self.mode == "error":
            raise InjectedFault(f"injected fault (NSA_FASTPATH_FAULT_AT={n}) after step {n}: {what}")
        if self.mode == "kill":
            self.crash()
        elif self.mode.startswith("sig") and self.mode != "sigpipe":
            os.kill(os.getpid(), getattr(signal, self.mode.upper()))
        elif self.mode == "sigpipe":
            self.break_output()
        elif self.mode == "fill":
            fill_filesystem(self.fill)


def _break_stdio() -> None:
    r, w = os.pipe()
    os.close(r)
    os.dup2(w, 1)
    os.dup2(w, 2)
    os.close(w)


def fill_filesystem(path: str) -> None:
    """Append to `path` until the filesystem holding it refuses even one more byte."""
    chunk = 1 << 20
    with open(path, "ab", buffering=0) as fh:
        while chunk:
            try:
                fh.write(b"\0" * chunk)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                chunk //= 2
