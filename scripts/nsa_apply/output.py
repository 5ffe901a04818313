"""Log lines of apply.sh, safe against a closed pipe.

Output piped into `head` must not stop a run half way: SIGPIPE is ignored (see signals.py)
and a write that fails (EPIPE, ENOSPC on /dev/full, EIO, ...) switches that stream to
/dev/null for the rest of the run, which then finishes and exits with its own code. A stream
that was closed before the start (`>&-`: Python's sys.stdout is None) is /dev/null from the
start.
"""
from __future__ import annotations

import os
import sys

PREFIX = "[nsa-fastpath] "


class Log:
    def __init__(self, out=None, err=None, trace: bool = False):
        self.out = out if out is not None else sys.stdout or open(os.devnull, "w")
        self.err = err if err is not None else sys.stderr or open(os.devnull, "w")
        self.trace_on = trace
        self.lost = False  # some output went into a closed pipe

    def _write(self, stream_name: str, text: str) -> None:
        stream = getattr(self, stream_name)
        try:
            stream.write(text)
            stream.flush()
        except (ValueError, OSError, AttributeError):
            self.lost = True
            setattr(self, stream_name, _devnull_stream(stream))

    def say(self, msg: str) -> None:
        self._write("out", PREFIX + msg + "\n")

    def warn(self, msg: str) -> None:
        self._write("err", PREFIX + "WARNING: " + msg + "\n")

    def error(self, msg: str) -> None:
        self._write("err", PREFIX + "ERROR: " + msg + "\n")

    def raw(self, line: str) -> None:
        self._write("out", line + "\n")

    def raw_err(self, line: str) -> None:
        self._write("err", line + "\n")

    def trace(self, msg: str) -> None:
        if self.trace_on:
            self.say(msg)


def _devnull_stream(old):
    """/dev/null in place of a broken stream; the fd too, so Python's exit flush can't fail."""
    try:
        fd = old.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass
    return open(os.devnull, "w")
