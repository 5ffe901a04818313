"""One lock per installed tree: flock on a directory of the tree itself.

Every route to a tree -- another TMPDIR, a symlinked path, a bind mount, another container
sharing the volume -- reaches the same directory inode, so they all meet at the same lock.
Nothing is created for it (no lock file to go stale or belong to another user), and the
kernel releases it when the process dies, even by SIGKILL.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from .errors import BUSY, Fail, TARGET


class DirLock:
    def __init__(self, path: Path, what: str):
        self.path, self.what = path, what
        self.fd: int | None = None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Fail(TARGET, f"{self.path} disappeared (removed by another run?): rerun. "
                               "Nothing changed.")
        except PermissionError:
            raise Fail(TARGET, f"cannot open {self.path} to lock it: permission denied. Run as "
                               "a user who can read this SGLang install. Nothing changed.")

    def acquire(self, timeout: float, log) -> None:
        """Wait up to `timeout` seconds; the directory must still be the one at `path`."""
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            fd = self._open()
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        os.close(fd)
                        raise Fail(TARGET, f"cannot lock {self.path}: {e.strerror}. "
                                           "Nothing changed.")
                if not waited:
                    log.say(f"waiting for another apply.sh run on {self.what} "
                            f"(it holds the lock on {self.path})")
                    waited = True
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise Fail(BUSY, f"another apply.sh run on {self.what} still holds the lock "
                                     f"on {self.path} after {timeout:g} s. Nothing changed. Wait "
                                     "for it to finish and rerun (NSA_FASTPATH_LOCK_TIMEOUT sets "
                                     "the wait in seconds; `apply.sh status` shows the state).")
                time.sleep(0.02)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)  # the directory was replaced while we waited: lock the new one

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def held_by_other(path: Path) -> bool:
    """True if another process holds the lock on `path` right now (status)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
