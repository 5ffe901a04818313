"""The transactions of a site-packages run: what apply and revert change, step by step.

apply: state dir + journal (in-progress) + recorded manifest -> the originals into backup/ as
hard links (+ pip's bytecode of them) -> [fsync: commit point] -> directories for added files
-> our files, replaced ones first, added ones last -> [fsync] -> journal (done): the commit.
revert: our added files out -> the originals renamed back (+ bytecode) -> directories apply
created -> [fsync] -> commit; then the state directory goes.
Whatever a step displaces goes into the staging area (STATE/tmp-*), so that a rollback only
renames, links and removes (txn.py), and the next run can always finish after a crash.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from . import errors as E
from .context import Context, command
from .errors import Fail, Interrupted
from .manifest import STATE_REL, Manifest, file_state
from .tree import Scan, Target, backup_pyc, journal_text, pyc_files, read_created_dirs
from .txn import Txn, fsync_dir, remove_path
from .verify import bytecode_matches


class DryTxn:
    """Stands in for Txn in --dry-run: changes nothing, remembers what would be gone."""

    def __init__(self):
        self.gone: set[Path] = set()
        self.stage = None
        self.steps = 0

    def mkdir(self, path, stage=False):
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
    ctx.signals.committed = True  # a signal from now on neither stops the run nor changes its code
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
        # the recorded manifest before the journal that verifies it, then the rest: a run
        # killed in between leaves nothing that reads as damaged (verify.py)
        for name in ("manifest.tsv", "journal"):
            remove_path(t.state / name)
            fsync_dir(t.state)
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


def reporter(ctx: Context, dry: bool):
    """act(done, would): say what happened or, in a dry run, what would (empty: say nothing)."""
    def act(done: str, would: str) -> None:
        msg = would if dry else done
        if msg:
            ctx.say(msg)
    return act


def do_apply(ctx: Context, t: Target, m: Manifest, s: Scan, txn, dry: bool = False) -> None:
    act = reporter(ctx, dry)
    S = t.state
    if not S.is_dir():
        txn.mkdir(S, stage=True)
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
        data = ctx.release.data(row.rel, t)  # sha256-checked against the manifest
        mode = stat.S_IMODE(os.stat(dest).st_mode) if dest.exists() else 0o644
        txn.put(dest, data, mode)
        act(f"{verb[0]} {row.rel}", "")
        if row.kind == "add":
            for pyc in pyc_files(dest):
                txn.remove(pyc)
                act(f"removed stale {t.rel(pyc)}", "")
    txn.sync()
    txn.put(S / "journal", journal_text("apply", "done", m.sha256))  # the commit record


def do_revert(ctx: Context, t: Target, m: Manifest, s: Scan, txn, dry: bool = False) -> None:
    act = reporter(ctx, dry)
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
        # the original the bytecode must match: back in place by now, or (dry run) still in
        # backup/; for a row that is SGLang's already, the file pip (re)installed
        source = S / "backup" / row.rel
        if s.state[row.rel] == "pristine" or not os.path.lexists(source):
            source = t / row.rel
        for kept in pyc_files(S / "backup" / row.rel):
            dest = t / os.path.relpath(kept, S / "backup")
            if os.path.lexists(dest) and dest not in txn.gone:
                continue
            if not bytecode_matches(kept, source):
                ctx.log.warn(f"{STATE_REL}/backup/{t.rel(dest)} is not valid bytecode of "
                             f"{row.rel} (damaged, or of another Python): not restored; Python "
                             "writes it anew on the next import")
                continue
            if not dest.parent.is_dir():  # __pycache__ deleted since: creating it needs space
                act(f"not restoring {t.rel(dest)}: {t.rel(dest.parent)} was removed (Python "
                    "writes it anew)", f"would not restore {t.rel(dest)} ({t.rel(dest.parent)} "
                    "was removed)")
                continue
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
    act("", f"would remove the state directory {STATE_REL}")
    txn.sync()


def prune_empty_dirs(top: Path) -> None:
    """Remove empty directories under top, and top itself if it ends empty (after an uninstall)."""
    for dirpath, _, _ in os.walk(top, topdown=False):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def reverted_summary(m: Manifest) -> str:
    """What a completed revert did, in counts that say which files are where."""
    n_rep = sum(1 for r in m.rows if r.kind == "replace")
    n_add = len(m.rows) - n_rep
    parts = []
    if n_rep:
        parts.append(f"{n_rep} file(s) are SGLang {m.version}'s originals again")
    if n_add:
        parts.append(f"the {n_add} file(s) nsa-fastpath added are removed")
    return " and ".join(parts)
