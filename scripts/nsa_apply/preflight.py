"""Checks before a site-packages run changes anything (each refusal: nothing changed)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import errors as E
from .context import Context, command
from .errors import Fail
from .lock import DirLock
from .manifest import Manifest
from .tree import Scan, Target, distributions, journal_text, owner_of, staged_leftovers
from .txn import remove_path

BLOCK_MARGIN = 16  # blocks of slack on top of what apply writes


def announce_target(ctx: Context, t: Target) -> None:
    """Said first, before the lock is waited for: which tree this run is about."""
    ctx.say(f"target: {t.root} (sglang {t.version})")


def announce(ctx: Context, t: Target, m: Manifest) -> None:
    """The release set chosen for the target (releases.choose)."""
    ctx.say(f"nsa-fastpath set: {m.target_spec}")
    if t.version == "unknown" and not distributions(t.root):
        ctx.log.warn(f"no SGLang distribution is installed in {t.root} (no sglang-*.dist-info: "
                     "uninstalled?); its files are identified by sha256")
    elif t.version != m.version:
        ctx.log.warn(f"SGLang's version string says {t.version}, but its files are those of "
                     f"{m.target_spec} (identified by sha256): using that release's set")


def lock_target(ctx: Context, t: Target) -> DirLock:
    lock = DirLock(t / "sglang", str(t.root))
    lock.acquire(ctx.lock_timeout, ctx.log)
    return lock


def foreign_lines(t: Target, m: Manifest, s: Scan, verb: str) -> list[str]:
    out = []
    for row in m.rows:
        if s.state[row.rel] == "missing":
            out.append(f"refusing to {verb}: {row.rel}: missing (SGLang {m.version} has it)")
        elif s.state[row.rel] == "foreign":
            theirs = f"SGLang {m.version}'s ({row.pre})" if row.pre else "absent (as in SGLang)"
            out.append(f"refusing to {verb}: {row.rel}: sha256 {s.seen[row.rel]} is neither "
                       f"{theirs} nor nsa-fastpath's ({row.post})")
    return out


def uninstalled_fail(t: Target, m: Manifest, left: list[str], code: int) -> Fail:
    return Fail(code, f"SGLang is not installed in {t.root} any more (`pip uninstall sglang`?), "
                      f"but nsa-fastpath's files remain: {', '.join(left)}. Because of them "
                      "`import sglang` still succeeds, as an empty namespace package.",
                f"Remove them with: {command('revert', '--target', t.root)}",
                f"(then `pip install sglang=={m.version}` and apply again, if you want SGLang back)")


def check_writable(t: Target, m: Manifest) -> None:
    """Every directory apply/revert changes: writable by us, and on one filesystem."""
    dirs = {t / "sglang"}
    if t.state.is_dir():
        dirs.add(t.state)
    for row in m.rows:
        d = (t / row.rel).parent
        while not d.exists():
            d = d.parent
        dirs.add(d)
        if (d / "__pycache__").is_dir():
            dirs.add(d / "__pycache__")
    for d in sorted(dirs):
        if d.exists() and not os.access(d, os.W_OK | os.X_OK):
            raise Fail(E.TARGET, f"no write permission on {d}: {why_not_writable(d)}. "
                                 "Nothing changed.")
    dev = os.stat(t / "sglang").st_dev
    for d in sorted(dirs):
        if d.exists() and os.stat(d).st_dev != dev:
            raise Fail(E.TARGET, f"{d} is on another filesystem than {t / 'sglang'} (a mount "
                                 "inside SGLang's tree?). apply.sh keeps backups as hard links on "
                                 "the same filesystem so that a rollback needs no free space; it "
                                 "cannot do that here. Nothing changed.")


FS_IOC_GETFLAGS = 0x80086601          # linux/fs.h, as on every 64-bit Linux
FS_IMMUTABLE_FL, FS_APPEND_FL = 0x10, 0x20


def why_not_writable(d: Path) -> str:
    """Why this user cannot change directory d, in words that point at the way out."""
    try:
        if os.statvfs(d).f_flag & os.ST_RDONLY:
            return ("it is on a read-only file system (Read-only file system): remount it "
                    "read-write, or apply to a writable copy of this environment")
    except OSError:
        pass
    flags = inode_flags(d)
    if flags & (FS_IMMUTABLE_FL | FS_APPEND_FL):
        kind = "immutable" if flags & FS_IMMUTABLE_FL else "append-only"
        return (f"the directory is {kind} (chattr +{'i' if kind == 'immutable' else 'a'}; "
                f"lsattr -d shows it): as root, chattr -{'i' if kind == 'immutable' else 'a'} "
                f"{d}, then rerun")
    return (f"permission denied (owned by {owner_of(d)}): run as the owner of this SGLang "
            "install")


def inode_flags(d: Path) -> int:
    """The inode flags of d (chattr), 0 where the filesystem does not say."""
    import array
    import fcntl
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return 0
    try:
        buf = array.array("l", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        return buf[0]
    except OSError:
        return 0
    finally:
        os.close(fd)


def check_space(t: Target, m: Manifest, s: Scan, ctx: Context) -> None:
    """Free space for everything apply writes, checked before its first write."""
    st = os.statvfs(t / "sglang")
    bsize = st.f_frsize or 4096

    def blocks(n: int) -> int:
        return -(-n // bsize) + 1

    todo = s.rows_in(m, "pristine")
    need = sum(blocks(len(ctx.release.data(r.rel, t))) for r in todo)
    need += blocks(len(m.data)) + 3 * blocks(len(journal_text("apply", "in-progress", m.sha256)))
    need += BLOCK_MARGIN
    free = shutil.disk_usage(t / "sglang").free // bsize
    if free < need:
        raise Fail(E.TARGET, f"not enough free space on the filesystem of {t.root}: apply needs "
                             f"about {need * bsize // 1024} KiB, {free * bsize // 1024} KiB are "
                             "free. Free some space, then rerun. Nothing changed.")
    inodes_needed = 4 * len(todo) + 16
    if st.f_files and st.f_favail < inodes_needed:
        raise Fail(E.TARGET, f"no free inodes on the filesystem of {t.root} ({st.f_favail} "
                             f"free, apply needs about {inodes_needed}). Nothing changed.")


def clean_leftovers(ctx: Context, t: Target, m: Manifest) -> None:
    """Remove the staging entries of an interrupted run (they are never needed to finish)."""
    for p in staged_leftovers(t, m):
        remove_path(p)
        ctx.say(f"removed leftover temp file {t.rel(p)}")


def reinstall_advice(t: Target, m: Manifest, then: str) -> str:
    """How to get SGLang's own files back: reinstall the release that is installed (never a
    downgrade); for another release than the patch set's, also how to port the patch set."""
    same = t.version == m.version
    known = t.version not in ("", "unknown") and "," not in t.version
    pip = (f"pip install --force-reinstall --no-deps sglang=={t.version if known else m.version}"
           if same or known else "pip install --force-reinstall --no-deps sglang==<the version "
           "you serve>")
    port = ("" if same else
            f" SGLang {t.version} is installed here and this patch set is for {m.target_spec} "
            "(README lists the supported releases)"
            + (f"; to port the patch set to it: python3 scripts/regen.py --release {t.version} "
               "--port."
               if known else "."))
    return (f"What to do: restore SGLang's own files with `{pip}` (or undo local edits), "
            f"{then}.{port} Nothing changed.")
