"""A transaction over a file tree: numbered steps, each with an undo that needs no free space.

Forward steps write new files (into a staging area, fsync'd, then renamed into place), make
hard links, rename and create directories. Nothing is ever deleted or overwritten in place:
whatever a step displaces is renamed into the staging area (same filesystem), so every undo
is a rename, a link, an unlink or an rmdir. A rollback therefore works on a full disk, and
after a SIGKILL every path still holds either its old or its new content, whole.

`commit()` fsyncs every touched directory and forgets the undo log; the caller then removes
the staging area. `sync()` is an intermediate commit point (durability only).
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .faults import FaultHook


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def remove_path(path: Path) -> None:
    """rm -rf for one of our own paths (never follows symlinks)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


class Txn:
    def __init__(self, log, hook: FaultHook, signals, stage: Path | None = None):
        self.log, self.hook, self.signals = log, hook, signals
        self.stage = stage           # a directory of ours on the target's filesystem
        self.steps = 0
        self.undo: list[tuple[str, callable]] = []
        self.touched: set[Path] = set()       # directories changed since the last sync()
        self.all_touched: set[Path] = set()
        self.gone: set[Path] = set()  # paths this transaction moved away
        self._n = 0

    # ------------------------------------------------------------ bookkeeping
    def _begin(self, kind: str, what: str) -> None:
        self.hook.before(self.steps + 1, kind, what)

    def _done(self, what: str, undo_desc: str, undo, *dirs: Path) -> None:
        self.undo.append((undo_desc, undo))
        self.touched.update(dirs)
        self.all_touched.update(dirs)
        self.steps += 1
        self.log.trace(f"step {self.steps}: {what}")
        self.hook.after(self.steps, what)
        self.signals.check()

    def staged(self, base: str) -> Path:
        assert self.stage is not None, "no staging directory yet"
        self._n += 1
        return self.stage / f"tmp-{os.getpid()}-{self._n}.{base}"

    # ------------------------------------------------------------ forward steps
    def mkdir(self, path: Path, stage: bool = False) -> None:
        """A directory with its parent's permissions (not the umask's: a umask of 077 must
        not hide our modules from the user who serves). stage=True: the staging area itself
        (its undo removes it with what it holds)."""
        self._begin("mkdir", f"mkdir {path}")
        mode = stat.S_IMODE(os.stat(path.parent).st_mode)
        os.mkdir(path, mode)
        os.chmod(path, mode)
        undo = (lambda: remove_path(path)) if stage else (lambda: os.rmdir(path))
        self._done(f"mkdir {path}", f"rmdir {path}", undo, path.parent)

    def makedirs(self, path: Path) -> None:
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            self.mkdir(d)

    def _write_staged(self, data: bytes, mode: int, base: str) -> Path:
        tmp = self.staged(base)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            half = len(data) // 2
            _write_all(fd, data[:half])
            self._begin("write", f"write {tmp}")  # an injected full disk strikes mid-file
            _write_all(fd, data[half:])
            os.fchmod(fd, mode)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        self._done(f"wrote {tmp}", f"rm {tmp}", lambda: remove_path(tmp), tmp.parent)
        return tmp

    def put(self, dest: Path, data: bytes, mode: int = 0o644) -> None:
        """dest gets `data` atomically; a file it replaces is kept for the undo."""
        tmp = self._write_staged(data, mode, dest.name)
        if os.path.lexists(dest):
            self.move_over(tmp, dest)
        else:
            self.move(tmp, dest)

    def link(self, src: Path, dst: Path) -> None:
        """A second name for src's inode (no data is copied)."""
        self._begin("link", f"link {src} -> {dst}")
        os.link(src, dst, follow_symlinks=False)
        self._done(f"linked {src} -> {dst}", f"rm {dst}", lambda: remove_path(dst), dst.parent)

    def move(self, src: Path, dst: Path) -> None:
        """rename src to dst, which must not exist."""
        if os.path.lexists(dst):
            raise FileExistsError(f"{dst} exists")
        self._begin("rename", f"rename {src} -> {dst}")
        os.rename(src, dst)
        self.gone.add(src)
        self.gone.discard(dst)

        def undo():
            os.rename(dst, src)
        self._done(f"renamed {src} -> {dst}", f"rename {dst} -> {src}", undo,
                   src.parent, dst.parent)

    def move_over(self, src: Path, dst: Path) -> None:
        """rename src over dst atomically; dst's old inode is first linked into the stage."""
        keep = self.staged(dst.name + ".old")
        self.link(dst, keep)
        self._begin("rename", f"rename {src} -> {dst}")
        os.replace(src, dst)
        self.gone.add(src)

        def undo():
            if not os.path.lexists(src):
                os.link(dst, src, follow_symlinks=False)  # the moved inode back at src
            os.replace(keep, dst)                           # the old one back at dst, atomically
        self._done(f"renamed {src} -> {dst}", f"restore {dst}", undo, src.parent, dst.parent)

    def remove(self, path: Path) -> None:
        """Take path (file or directory) out of the tree: renamed into the stage."""
        self.move(path, self.staged(path.name))

    # ------------------------------------------------------------ commit / rollback
    def sync(self) -> None:
        """A commit point: the directory entries changed since the last one are durable."""
        for d in sorted(self.touched):
            fsync_dir(d)
        self.touched.clear()

    def commit(self) -> None:
        self.sync()
        self.undo.clear()

    def rollback(self) -> list[str]:
        """Undo every step, newest first. Returns the undos that failed (empty: rolled back)."""
        self.hook.disarm()
        failed = []
        for desc, fn in reversed(self.undo):
            try:
                fn()
            except OSError as e:
                failed.append(f"{desc}: {e}")
        self.undo.clear()
        self.touched = set(self.all_touched)
        self.sync()
        return failed
