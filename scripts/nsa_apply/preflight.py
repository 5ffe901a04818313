"""Checks before a site-packages run changes anything (each refusal: nothing changed)."""
from __future__ import annotations

import os
import shlex
import shutil
import stat
from pathlib import Path

from . import errors as E
from .context import Context, command
from .errors import Fail
from .lock import DirLock
from .manifest import Manifest
from .tree import (Scan, Target, distributions, journal_text, owner_of, read_created_dirs,
                   source_checkout, staged_leftovers)
from .txn import remove_path

BLOCK_MARGIN = 16  # blocks of slack on top of what apply writes


def announce_target(ctx: Context, t: Target) -> None:
    """Said first, before the lock is waited for: which tree this run is about."""
    ctx.say(f"target: {t.root} (sglang {t.version})")


def announce(ctx: Context, t: Target, m: Manifest) -> None:
    """The release set whose files the target holds (survey.py)."""
    ctx.say(f"nsa-fastpath set: {m.target_spec}")
    if t.version == "unknown" and not distributions(t.root):
        ctx.log.warn(f"no SGLang distribution is installed in {t.root} (no sglang-*.dist-info: "
                     "uninstalled?); its files are identified by sha256")
    elif t.version != m.version:
        ctx.log.warn(f"SGLang's version string says {t.version}, but its files are those of "
                     f"{m.target_spec} (identified by sha256): using that release's set")


def refuse_source_checkout(t: Target) -> None:
    """An SGLang whose files git tracks (an editable or source install) is changed by commits
    (--git), not in place: apply there would leave modified and untracked files in the work
    tree. --allow-source-tree skips this."""
    top = source_checkout(t)
    if top is None:
        return
    raise Fail(E.TARGET, f"{t / 'sglang'} is a source checkout: git tracks its files in the work "
                         f"tree {top} (an editable or source install of SGLang). apply would "
                         "change tracked files there and leave untracked ones beside them.",
               f"Apply the patch set as commits instead (`revert --git` takes them out again): "
               f"{command('apply', '--git', top)}",
               "To patch the files in place anyway, rerun with --allow-source-tree. Nothing "
               "changed.")


def lock_target(ctx: Context, t: Target) -> DirLock:
    lock = DirLock(t / "sglang", str(t.root))
    lock.acquire(ctx.lock_timeout, ctx.log)
    return lock


def foreign_lines(t: Target, m: Manifest, s: Scan, verb: str, then: str) -> list[str]:
    """Each file in the way, and the way out (way_out)."""
    out = []
    for row in m.rows:
        st = s.state[row.rel]
        if row.kind == "replace" and st == "missing":
            out.append(f"refusing to {verb}: {row.rel}: missing (SGLang {m.version} has it)")
        elif row.kind == "replace" and st == "foreign":
            out.append(f"refusing to {verb}: {row.rel}: sha256 {s.seen[row.rel]} is neither "
                       f"SGLang {m.version}'s ({row.pre}) nor nsa-fastpath's ({row.post})")
        elif row.kind == "add" and st == "foreign":
            out.append(f"refusing to {verb}: {row.rel}: nsa-fastpath's file (SGLang does not "
                       f"ship it) was changed since apply: sha256 {s.seen[row.rel]}, not "
                       f"nsa-fastpath's ({row.post})")
    return out + way_out(t, m, s, then) + ["Nothing changed."]


def way_out(t: Target, m: Manifest, s: Scan, then: str) -> list[str]:
    """The one way out for each kind of file in the way: an SGLang file changed since (pip
    restores it), one of our added files changed since (pip does not own it: delete it)."""
    theirs = [r for r in m.rows if r.kind == "replace" and s.state[r.rel] in ("foreign",
                                                                                "missing")]
    ours = [t / r.rel for r in m.rows if r.kind == "add" and s.state[r.rel] == "foreign"]
    out = []
    if theirs:
        out.append(f"What to do: restore SGLang's own files with `{pip_reinstall(t, m.version)}`"
                   f" (or undo your edits), {then}.")
    if ours:
        it = "it" if len(ours) == 1 else "them"
        out.append(f"pip does not own nsa-fastpath's added files: delete {it} (your changes to "
                   f"{it} go), {then}: rm -- " + " ".join(shlex.quote(str(p)) for p in ours))
    return out


def uninstalled_fail(t: Target, version: str | None, left: list[str], code: int) -> Fail:
    return Fail(code, f"SGLang is not installed in {t.root} any more (`pip uninstall sglang`?), "
                      f"but nsa-fastpath's files remain: {', '.join(left)}. Because of them "
                      "`import sglang` still succeeds, as an empty namespace package.",
                f"Remove them with: {command('revert', '--target', t.root)}",
                f"(then `pip install sglang{'==' + version if version else ''}` and apply "
                "again, if you want SGLang back)")


def check_writable(t: Target, rels) -> None:
    """Every directory the run may change -- those of the files in `rels`, their __pycache__,
    the state directory and everything in it (backups included), and the directories apply
    created -- is writable by us and on one filesystem: checked before the first change."""
    dirs = {t / "sglang"}
    for dirpath, dirnames, _ in os.walk(t.state):
        dirs.add(Path(dirpath))
    for rel in list(rels) + read_created_dirs(t):
        d = (t / rel).parent
        while not d.exists():
            d = d.parent
        dirs.add(d)
        for extra in (d / "__pycache__", t / rel, t / rel / "__pycache__"):
            if extra.is_dir() and not extra.is_symlink():
                dirs.add(extra)
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
    st = os.stat(d)
    mode = f"{stat.filemode(st.st_mode)} ({stat.S_IMODE(st.st_mode):04o})"
    if st.st_uid == os.geteuid():
        return (f"its mode is {mode}: you own it ({owner_of(d)}), but the mode gives its owner "
                f"no write permission. Give it: chmod u+w {shlex.quote(str(d))}, then rerun")
    if st.st_mode & stat.S_IWUSR:
        return (f"it is owned by {owner_of(d)}, and its mode {mode} lets only its owner write: "
                f"run as {owner_of(d)}")
    return (f"it is owned by {owner_of(d)}, and its mode {mode} lets no one write: as "
            f"{owner_of(d)}, chmod u+w {shlex.quote(str(d))}, then run as that user")


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

    todo = s.rows_in(m, "pristine", "stale")
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


def pip_reinstall(t: Target, version: str) -> str:
    """The pip command that puts SGLang's own files back: the installed release (never a
    downgrade; its version string, else `version`, the release whose files these are)."""
    known = t.version not in ("", "unknown") and "," not in t.version
    return f"pip install --force-reinstall --no-deps sglang=={t.version if known else version}"


def reinstall_advice(t: Target, m: Manifest, then: str) -> str:
    return (f"What to do: restore SGLang's own files with `{pip_reinstall(t, m.version)}` (or "
            f"undo your edits), {then}. Nothing changed.")
