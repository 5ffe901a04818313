"""apply / revert / status of a site-packages tree (the default mode of apply.sh).

State directory (inside the target; removed by a successful revert), STATE = sglang/.nsa_fastpath:
  STATE/journal        op=apply, state=in-progress|done, sha256 of the manifest applied
  STATE/manifest.tsv   the manifest that was applied (revert uses it)
  STATE/created_dirs   directories apply created for added files
  STATE/backup/<path>  the original of each replaced file: a hard link to the very inode pip
                       installed (no copy), plus pip's bytecode of it (__pycache__/)
  STATE/tmp-*          staging area of a running apply/revert (whatever it displaced)

Every run goes: check our inputs -> find the target -> lock it -> scan every file by sha256 ->
refuse (exit 3/4/6, nothing changed) or plan -> check permissions, filesystem and free space ->
one transaction (txn.py) -> commit -> remove the staging entries -> scan again.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from . import errors as E
from .context import ROOT, Context, command
from .errors import Fail, Interrupted
from .lock import DirLock, held_by_other
from .manifest import STATE_REL, Manifest, check_overlay, file_state, load
from .tree import (Scan, Target, backup_pyc, journal_text, owner_of, pyc_files,
                   read_created_dirs, read_journal, require_readable, require_state_readable,
                   resolve, scan, sglang_uninstalled, staged_leftovers, state_unreadable)
from .txn import Txn, fsync_dir, remove_path

BLOCK_MARGIN = 16  # blocks of slack on top of what apply writes


# ---------------------------------------------------------------- shared pieces
def announce(ctx: Context, t: Target, m: Manifest) -> None:
    ctx.say(f"target: {t.root} (sglang {t.version}); nsa-fastpath targets {m.target_spec}")
    if t.version != m.version:
        ctx.log.warn(f"SGLang version found is {t.version}, nsa-fastpath targets "
                     f"{m.target_spec}: files are checked by hash")


def lock_target(ctx: Context, t: Target) -> DirLock:
    lock = DirLock(t / "sglang", str(t.root))
    lock.acquire(ctx.lock_timeout, ctx.log)
    return lock


def recorded_manifest(ctx: Context, t: Target, m: Manifest, op: str) -> Manifest:
    """revert/status use the manifest recorded at apply time when ours differs."""
    rec = t.state / "manifest.tsv"
    if not rec.is_file() or file_state(rec) == m.sha256:
        return m
    if op != "apply":
        ctx.say(f"using the manifest recorded at apply time: {STATE_REL}/manifest.tsv")
        return load(rec)
    raise Fail(E.REFUSED, f"another nsa-fastpath version is applied to {t.root} "
                          f"({STATE_REL}/manifest.tsv differs from {m.path}). Run "
                          f"`{command('revert', '--target', t.root)}` first (it uses the recorded "
                          "manifest and backups), then apply. Nothing changed.")


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
            why = "read-only filesystem" if _readonly_fs(d) else f"owned by {owner_of(d)}"
            raise Fail(E.TARGET, f"no write permission on {d} ({why}): run as the owner of "
                                 "this SGLang install. Nothing changed.")
    dev = os.stat(t / "sglang").st_dev
    for d in sorted(dirs):
        if d.exists() and os.stat(d).st_dev != dev:
            raise Fail(E.TARGET, f"{d} is on another filesystem than {t / 'sglang'} (a mount "
                                 "inside SGLang's tree?). apply.sh keeps backups as hard links on "
                                 "the same filesystem so that a rollback needs no free space; it "
                                 "cannot do that here. Nothing changed.")


def _readonly_fs(d: Path) -> bool:
    try:
        return bool(os.statvfs(d).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_space(t: Target, m: Manifest, s: Scan, ctx: Context) -> None:
    """Free space for everything apply writes, checked before its first write."""
    st = os.statvfs(t / "sglang")
    bsize = st.f_frsize or 4096

    def blocks(n: int) -> int:
        return -(-n // bsize) + 1

    todo = s.rows_in(m, "pristine")
    need = sum(blocks(os.path.getsize(ctx.overlay / r.rel)) for r in todo)
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


class DryTxn:
    """Stands in for Txn in --dry-run: changes nothing, remembers what would be gone."""

    def __init__(self):
        self.gone: set[Path] = set()
        self.stage = None
        self.steps = 0

    def mkdir(self, path, mode=0o755, stage=False):
        pass

    def makedirs(self, path):
        pass

    def put(self, dest, data, mode=0o644):
        pass

    def link(self, src, dst):
        pass

    def move(self, src, dst):
        self.gone.add(src)

    def move_over(self, src, dst):
        self.gone.add(src)

    def remove(self, path):
        self.gone.add(path)

    def sync(self):
        pass


def run_txn(ctx: Context, t: Target, op: str, goal: str, body) -> Txn:
    """Runs body(txn) as one transaction; on any failure or signal rolls it back (exit 5).
    The caller holds ctx.signals.deferred(): a signal is noted, and the transaction raises
    it after its next step; after the commit nothing raises it any more."""
    txn = Txn(ctx.log, ctx.hook, ctx.signals)
    try:
        body(txn)
        txn.commit()
    except Exception as e:  # noqa: BLE001 -- any failure means: roll back
        failed = txn.rollback()
        raise _stopped(op, goal, t, txn, e, failed) from None
    return txn


def _stopped(op: str, goal: str, t: Target, txn: Txn, e: Exception, failed: list[str]) -> Fail:
    if isinstance(e, Interrupted):
        reason = e.signame
    elif isinstance(e, OSError):
        reason = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    else:
        reason = str(e)
    if failed:
        return Fail(E.MANUAL, f"{op} stopped after {txn.steps} step(s) ({reason}), and the "
                              "rollback failed too:", *("  " + f for f in failed),
                    f"What to do: fix the cause, then rerun `{command(op, '--target', t.root)}` "
                    "(apply and revert each finish from any interrupted state); if that fails: "
                    "pip install --force-reinstall --no-deps sglang==<version>, then revert.")
    stopped = "interrupted by" if isinstance(e, Interrupted) else "failed:"
    hint = (" Free some space, then rerun." if isinstance(e, OSError) and e.errno == errno.ENOSPC
            else "")
    return Fail(E.ROLLED_BACK, f"{op} {stopped} {reason} (after {txn.steps} step(s))",
                f"rolled back: {t.root} is {goal} again, exactly as before this run.{hint}")


def finish_apply(t: Target) -> None:
    """After the commit: the staging entries go (forward only; a failure needs a rerun)."""
    try:
        for p in sorted(t.state.glob("tmp-*")):
            remove_path(p)
        fsync_dir(t.state)
    except OSError as e:
        raise Fail(E.MANUAL, f"apply is complete, but removing its temp files failed "
                             f"({e.strerror}: {e.filename}). Rerun "
                             f"`{command('apply', '--target', t.root)}` to remove them.")


def finish_revert(t: Target, uninstalled: bool) -> None:
    """After the commit: the state directory goes (and, if SGLang was uninstalled, the
    directories our files kept alive)."""
    try:
        remove_path(t.state)
        fsync_dir(t / "sglang")
        if uninstalled:
            prune_empty_dirs(t / "sglang")
    except OSError as e:
        raise Fail(E.MANUAL, f"revert is complete, but removing {STATE_REL} failed "
                             f"({e.strerror}: {e.filename}): rerun "
                             f"`{command('revert', '--target', t.root)}`")


def note_late_signal(ctx: Context) -> None:
    if ctx.signals.pending:
        ctx.say(f"({ctx.signals.pending} arrived after the commit point: the run finished)")


# ---------------------------------------------------------------- apply
def cmd_apply(ctx: Context, target: str | None, dry: bool) -> int:
    m = ctx.manifest()
    check_overlay(m, ctx.overlay)
    t = resolve(target, ctx.log)
    announce(ctx, t, m)
    lock = lock_target(ctx, t)
    try:
        return _apply_locked(ctx, t, m, dry)
    finally:
        lock.release()


def _apply_locked(ctx: Context, t: Target, m: Manifest, dry: bool) -> int:
    require_state_readable(t)
    recorded_manifest(ctx, t, m, "apply")
    s = scan(t, m)
    require_readable(s, t)
    left = sglang_uninstalled(t, m, s)
    if left:
        raise uninstalled_fail(t, m, left, E.TARGET)
    if s.foreign:
        raise Fail(E.REFUSED, *foreign_lines(t, m, s, "apply"),
                   f"SGLang found in {t.root}: version {t.version}; nsa-fastpath targets "
                   f"{m.target_spec} only.",
                   f"What to do: install it (pip install --force-reinstall --no-deps "
                   f"{m.target_spec}), or undo local edits to the file(s) above, then rerun. "
                   "Nothing changed.")
    n = len(m.rows)
    no_backup = [r.rel for r in s.rows_in(m, "patched") if r.kind == "replace"
                 and s.backup[r.rel] != "ok"]
    if no_backup:
        if s.count("patched") == n and not t.state.exists():
            ctx.say(f"already applied: all {n} files are nsa-fastpath's; nothing to do")
            ctx.log.warn(f"but there is no backup ({STATE_REL} is missing): `apply.sh revert` "
                         "cannot restore the originals; to go back: pip install "
                         f"--force-reinstall --no-deps {m.target_spec}")
            return E.OK
        raise Fail(E.MANUAL, f"patched file(s) without a valid backup: {' '.join(no_backup)} "
                             f"(in {STATE_REL}/backup). Nothing changed. To get back to stock "
                             f"SGLang: pip install --force-reinstall --no-deps {m.target_spec}, "
                             f"then `{command('revert', '--target', t.root)}` removes our "
                             "leftovers.")
    j = read_journal(t)
    leftovers = staged_leftovers(t, m)
    done = j.get("op") == "apply" and j.get("state") == "done"
    if s.count("patched") == n and done and (t.state / "manifest.tsv").is_file() \
            and not leftovers:
        ctx.say(f"already applied: all {n} files are nsa-fastpath's; nothing to do")
        return E.OK
    if t.state.exists() and not (done and s.count("patched") == n):
        ctx.say("an interrupted run was found: completing the apply")
    if dry:
        ctx.say("dry run: nothing will be changed")
        do_apply(ctx, t, m, s, DryTxn(), dry=True)
        ctx.say("dry run: done (nothing changed)")
        return E.OK
    check_writable(t, m)
    check_space(t, m, s, ctx)
    with ctx.signals.deferred():  # from here on a signal can only roll back, or wait
        clean_leftovers(ctx, t, m)
        txn = run_txn(ctx, t, "apply", "pristine" if s.count("pristine") == n else "as it was",
                      lambda txn: do_apply(ctx, t, m, s, txn))
        finish_apply(t)
        after = scan(t, m)
        if after.count("patched") != n:
            raise Fail(E.MANUAL, f"after apply, {n - after.count('patched')} file(s) are not "
                                 f"nsa-fastpath's (changed by something else meanwhile?): run "
                                 f"`{command('status', '--target', t.root)}`")
        ctx.say(f"applied: {n} files are nsa-fastpath's ({txn.steps} steps); originals in "
                f"{STATE_REL}/backup; undo with: {command('revert', '--target', t.root)}")
        note_late_signal(ctx)
    return E.OK


def do_apply(ctx: Context, t: Target, m: Manifest, s: Scan, txn, dry: bool = False) -> None:
    def act(done: str, would: str) -> None:
        ctx.say(would if dry else done)

    S = t.state
    if not S.is_dir():
        txn.mkdir(S, stage=True)
        if dry:
            act("", f"would create the state directory {STATE_REL}")
    txn.stage = S
    txn.put(S / "journal", journal_text("apply", "in-progress", m.sha256))
    if file_state(S / "manifest.tsv") != m.sha256:
        txn.put(S / "manifest.tsv", m.data)
    # 1. the originals into backup/ (hard links: no copy, nothing to run out of space for)
    for row in s.rows_in(m, "pristine"):
        if row.kind != "replace":
            continue
        b = S / "backup" / row.rel
        if s.backup[row.rel] != "ok":
            txn.makedirs(b.parent)
            if os.path.lexists(b):
                txn.remove(b)
            txn.link(t / row.rel, b)
            act(f"backed up {row.rel}", f"would back up {row.rel} -> {STATE_REL}/backup/{row.rel}")
        for pyc in pyc_files(t / row.rel):   # pip's bytecode of the original: kept for revert
            dest = backup_pyc(t, pyc)
            if os.path.lexists(dest):
                txn.remove(pyc)
            else:
                txn.makedirs(dest.parent)
                txn.move(pyc, dest)
            act(f"removed stale {t.rel(pyc)} (kept in the backup)",
                f"would remove stale {t.rel(pyc)} (kept in the backup)")
    txn.sync()  # commit point: the originals are durable before any SGLang file changes
    # 2. directories for added files, recorded before they are created
    new_dirs: list[str] = []
    for row in s.rows_in(m, "pristine"):
        d = Path(row.rel).parent
        while not (t / d).exists() and d.as_posix() not in new_dirs:
            new_dirs.append(d.as_posix())
            d = d.parent
    if new_dirs:
        new_dirs.sort()
        listed = sorted(set(read_created_dirs(t)) | set(new_dirs))
        txn.put(S / "created_dirs", ("\n".join(listed) + "\n").encode())
        for d in new_dirs:
            txn.mkdir(t / d)
            act(f"created directory {d}", f"would create directory {d}")
    # 3. our files: replaced ones first, added ones last (so a rollback removes those first)
    for row in sorted(s.rows_in(m, "pristine"), key=lambda r: r.kind == "add"):
        dest = t / row.rel
        verb = ("added", "would add") if row.kind == "add" else ("patched", "would patch")
        if dry:
            act("", f"{verb[1]} {row.rel}")
            continue
        data = (ctx.overlay / row.rel).read_bytes()
        if _sha(data) != row.post:
            raise Fail(E.TARGET, f"overlay/{row.rel} changed while apply.sh was running")
        mode = stat.S_IMODE(os.stat(dest).st_mode) if dest.exists() else 0o644
        txn.put(dest, data, mode)
        act(f"{verb[0]} {row.rel}", "")
        if row.kind == "add":
            for pyc in pyc_files(dest):
                txn.remove(pyc)
                act(f"removed stale {t.rel(pyc)}", "")
    txn.sync()
    txn.put(S / "journal", journal_text("apply", "done", m.sha256))  # the commit record


def _sha(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- revert
def cmd_revert(ctx: Context, target: str | None, dry: bool) -> int:
    m = ctx.manifest()
    t = resolve(target, ctx.log)
    announce(ctx, t, m)
    lock = lock_target(ctx, t)
    try:
        require_state_readable(t)
        return _revert_locked(ctx, t, recorded_manifest(ctx, t, m, "revert"), dry)
    finally:
        lock.release()


def _revert_locked(ctx: Context, t: Target, m: Manifest, dry: bool) -> int:
    s = scan(t, m)
    require_readable(s, t)
    n = len(m.rows)
    left = sglang_uninstalled(t, m, s)
    if left:
        ctx.say("SGLang itself was uninstalled here; removing nsa-fastpath's leftovers: "
                + ", ".join(left))
    elif s.foreign:
        keep = [r.rel for r in m.rows if r.kind == "add" and s.state[r.rel] == "patched"]
        if t.state.exists():
            keep.append(STATE_REL + "/")
        raise Fail(E.REFUSED, *foreign_lines(t, m, s, "revert"),
                   "apply.sh only overwrites files that are SGLang's or its own (was the file "
                   "edited after apply, or SGLang upgraded?).",
                   f"What to do: pip install --force-reinstall --no-deps {m.target_spec} "
                   f"(restores SGLang's files), then rerun `{command('revert', '--target', t.root)}`"
                   " to remove nsa-fastpath's leftovers. Nothing changed.",
                   *([f"(If you upgraded SGLang on purpose, delete nsa-fastpath's leftovers in "
                      f"{t.root} by hand instead: {' '.join(keep)})"] if keep else []))
    if not left:
        bad = [(r.rel, s.backup[r.rel]) for r in s.rows_in(m, "patched")
               if r.kind == "replace" and s.backup[r.rel] != "ok"]
        if bad:
            raise Fail(E.MANUAL, "cannot revert: the backup of " + ", ".join(
                f"{rel} is {how}" for rel, how in bad) + f" ({STATE_REL}/backup). Nothing "
                f"changed. What to do: pip install --force-reinstall --no-deps {m.target_spec}, "
                f"then rerun `{command('revert', '--target', t.root)}` to remove nsa-fastpath's "
                "leftovers.")
        if s.count("pristine") == n and not t.state.exists() and not staged_leftovers(t, m):
            ctx.say(f"already pristine: all {n} files are SGLang's own; nothing to revert")
            return E.OK
        j = read_journal(t)
        if t.state.exists() and not (j.get("op") == "apply" and j.get("state") == "done"):
            ctx.say("an interrupted run was found: completing the revert")
    if dry:
        ctx.say("dry run: nothing will be changed")
        do_revert(ctx, t, m, s, DryTxn(), dry=True)
        ctx.say("dry run: done (nothing changed)")
        return E.OK
    check_writable(t, m)
    with ctx.signals.deferred():  # from here on a signal can only roll back, or wait
        clean_leftovers(ctx, t, m)
        goal = "patched" if s.count("patched") == n else "as it was"
        run_txn(ctx, t, "revert", goal, lambda txn: do_revert(ctx, t, m, s, txn))
        finish_revert(t, bool(left))
        if left:
            ctx.say(f"removed nsa-fastpath's leftovers; {t.root} holds no SGLang "
                    f"(pip install sglang=={m.version} to reinstall it)")
        else:
            after = scan(t, m)
            if after.count("pristine") != n:
                raise Fail(E.MANUAL, f"after revert, {n - after.count('pristine')} file(s) are "
                                     "not SGLang's (changed by something else meanwhile?): run "
                                     f"`{command('status', '--target', t.root)}`")
            ctx.say(f"reverted: all {n} files are SGLang {m.version}'s originals again; state "
                    "dir removed")
        note_late_signal(ctx)
    return E.OK


def do_revert(ctx: Context, t: Target, m: Manifest, s: Scan, txn, dry: bool = False) -> None:
    def act(done: str, would: str) -> None:
        ctx.say(would if dry else done)

    S = t.state
    if not S.is_dir():
        txn.mkdir(S, stage=True)
    txn.stage = S
    # 1. our added files out first (renamed into the staging area; nothing is copied)
    for row in m.rows:
        if row.kind != "add":
            continue
        if s.state[row.rel] == "patched":
            txn.remove(t / row.rel)
            act(f"removed {row.rel}", f"would remove {row.rel}")
        for pyc in pyc_files(t / row.rel):
            txn.remove(pyc)
            act(f"removed stale {t.rel(pyc)}", f"would remove stale {t.rel(pyc)}")
    # 2. the originals back: renamed from backup/, with pip's bytecode of them (for a row
    #    that is already SGLang's -- an interrupted apply, a pip reinstall -- only into free
    #    slots: bytecode pip wrote since is newer)
    for row in m.rows:
        if row.kind != "replace" or s.state[row.rel] not in ("patched", "pristine"):
            continue
        if s.state[row.rel] == "patched":
            txn.move_over(S / "backup" / row.rel, t / row.rel)
            act(f"restored {row.rel}", f"would restore {row.rel} from the backup")
            for pyc in pyc_files(t / row.rel):
                txn.remove(pyc)
                act(f"removed stale {t.rel(pyc)}", f"would remove stale {t.rel(pyc)}")
        for kept in pyc_files(S / "backup" / row.rel):
            dest = t / os.path.relpath(kept, S / "backup")
            if os.path.lexists(dest) and dest not in txn.gone:
                continue
            txn.makedirs(dest.parent)
            txn.move(kept, dest)
            act(f"restored {t.rel(dest)}", f"would restore {t.rel(dest)}")
    # 3. directories apply created, deepest first, once nothing (but an empty __pycache__) is left
    for d in reversed(read_created_dirs(t, ctx.log)):
        p = t / d
        if p.is_symlink() or not p.is_dir():
            continue
        rest = [e for e in os.listdir(p) if p / e not in txn.gone]
        if rest == ["__pycache__"] and not [e for e in os.listdir(p / "__pycache__")
                                            if p / "__pycache__" / e not in txn.gone]:
            rest = []
        if rest:
            ctx.log.warn(f"directory {d} (created by apply) is not empty: left in place")
            continue
        txn.remove(p)
        act(f"removed directory {d}", f"would remove directory {d}")
    if dry:
        act("", f"would remove the state directory {STATE_REL}")
    txn.sync()


def prune_empty_dirs(top: Path) -> None:
    """Remove empty directories under top, and top itself if it ends empty (after an uninstall)."""
    for dirpath, dirnames, filenames in os.walk(top, topdown=False):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


# ---------------------------------------------------------------- status
def cmd_status(ctx: Context, target: str | None) -> int:
    m0 = ctx.manifest()
    t = resolve(target, ctx.log)
    announce(ctx, t, m0)
    blocked = state_unreadable(t)
    m = m0 if blocked else recorded_manifest(ctx, t, m0, "status")
    s = scan(t, m)
    for row in m.rows:
        st = s.state[row.rel]
        note = {"foreign": f" (sha256 {s.seen[row.rel]})",
                "pristine": " (absent, as in SGLang)" if row.kind == "add" else ""}.get(st, "")
        if s.seen[row.rel] == "unreadable":
            st, note = "unknown", " (unreadable by this user)"
        ctx.say(f"  {st:<9} {row.rel}{note}")
    j = read_journal(t)
    if t.state.exists():
        ctx.say(f"state dir: {STATE_REL} (journal: op={j.get('op', '?')} "
                f"state={j.get('state', '?')})")
    try:
        leftovers = staged_leftovers(t, m)
    except OSError:
        leftovers = []
    if leftovers:
        ctx.say("leftover temp files of an interrupted run are present (apply or revert "
                "removes them)")
    if held_by_other(t / "sglang"):
        ctx.say("note: another apply.sh run on this target is in progress right now")
    overall, code, note = _overall(t, m, s, j, leftovers, blocked)
    ctx.say(f"overall: {overall} -- {note}")
    environ = str(t / "sglang/srt/environ.py") if s.state.get("sglang/srt/environ.py") == \
        "patched" else ""
    if ctx.status_kernels:
        kernel_report(ctx, environ, t.state / "backup/sglang/srt/environ.py")
    return code


def _overall(t: Target, m: Manifest, s: Scan, j: dict, leftovers: list,
             blocked: Path | None) -> tuple[str, int, str]:
    n = len(m.rows)
    revert = command("revert", "--target", t.root)
    if blocked or s.unreadable:
        what = t.rel(blocked) if blocked else ", ".join(s.unreadable)
        return ("unknown", E.TARGET, f"cannot read {what}: permission denied (the files may be "
                f"fine). Run status as the owner of this install ({owner_of(t / 'sglang')})")
    left = sglang_uninstalled(t, m, s)
    if left:
        return ("uninstalled", E.PARTIAL, "SGLang was uninstalled from here, but nsa-fastpath's "
                f"files remain ({', '.join(left)}); `import sglang` still succeeds as an empty "
                f"namespace package. Remove them with: {revert}")
    if s.foreign:
        return ("foreign", E.REFUSED, f"file(s) above are neither SGLang {m.target_spec}'s nor "
                f"nsa-fastpath's: pip install --force-reinstall --no-deps {m.target_spec}, then "
                f"{revert}")
    done = j.get("op") == "apply" and j.get("state") == "done"
    bad_backup = [r for r in s.rows_in(m, "patched") if r.kind == "replace"
                  and s.backup[r.rel] != "ok"]
    if (t.state.exists() and not done) or leftovers:
        return ("partial", E.PARTIAL, f"an interrupted {j.get('op', 'run')} (crash, kill -9, "
                "power loss): rerun `apply.sh apply` or `apply.sh revert`; either finishes")
    if s.count("pristine") == n and not t.state.exists():
        return ("pristine", E.OK, "SGLang's own code; nsa-fastpath not installed")
    if s.count("patched") == n and t.state.exists() and not bad_backup:
        return ("patched", E.OK, f"undo with: {revert}")
    if s.count("patched") == n:
        return ("patched", E.MANUAL, f"but the backup of {len(bad_backup)} original(s) is "
                "missing or corrupt: `apply.sh revert` cannot restore them; to go back: pip "
                f"install --force-reinstall --no-deps {m.target_spec}, then {revert}")
    return ("partial", E.PARTIAL, f"{s.count('patched')} of {n} files are nsa-fastpath's "
            "(interrupted run, or SGLang reinstalled over a patched tree): rerun `apply.sh "
            "apply` or `apply.sh revert`")


def kernel_report(ctx: Context, environ: str, pristine_environ: Path) -> None:
    """scripts/status.py, run by this (the target's) Python: Triton, CUDA extension, flags."""
    try:
        p = subprocess.run([sys.executable, str(ROOT / "scripts" / "status.py"),
                            "--environ", environ, "--pristine-environ", str(pristine_environ)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace", stdin=subprocess.DEVNULL)
    except OSError as e:
        ctx.log.warn(f"could not run scripts/status.py with {sys.executable}: {e}")
        return
    for line in p.stdout.splitlines():
        ctx.log.raw(line)
    if p.returncode != 0:
        ctx.log.warn(f"scripts/status.py exited {p.returncode}")
