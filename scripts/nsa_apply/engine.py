"""The transactions of a site-packages run: what apply and revert change, step by step.

apply: state dir + journal (in-progress) + recorded manifest -> what is left of another
release's set (our files it has and this one lacks, its backups) out -> the originals into
backup/ as hard links (+ pip's bytecode of them) -> [fsync: commit point] -> directories for
added files -> our files, replaced ones first, added ones last -> [fsync] -> journal (done):
the commit.
revert: our added files out (this set's, and any other set's left) -> the originals renamed
back (+ bytecode) -> directories apply created -> [fsync] -> commit; then the state directory
goes.
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


def do_apply(ctx: Context, t: Target, m: Manifest, s: Scan, txn, dry: bool = False,
             left: list[str] = (), old: str | None = None) -> None:
    """`left`: our files of another set to remove first; `old`: the release whose set is
    recorded, when the files are another release's (its backups go too)."""
    act = reporter(ctx, dry)
    S = t.state
    if not S.is_dir():
        txn.mkdir(S, stage=True)
        act("", f"would create the state directory {STATE_REL}")
    txn.stage = S
    recorded = file_state(S / "manifest.tsv")
    switching = recorded != m.sha256 and len(recorded) == 64
    # while the recorded manifest is another set's, the journal vouches for both (verify.py)
    txn.put(S / "journal", journal_text("apply", "in-progress", m.sha256,
                                        previous=recorded if switching else None))
    if recorded != m.sha256:
        txn.put(S / "manifest.tsv", m.data)
    # 0. what is left of another set: its files that this set lacks, its backups
    of = f" (left from the {old} set)" if old else " (left from another set)"
    for rel in left:
        remove_ours(ctx, t, rel, txn, act, of)
    prune_backup(ctx, t, m, s, txn, act, everything=old is not None)
    removed_dirs = remove_created_dirs(ctx, t, txn, act, keep=m) if left else []
    if left or old is not None:
        remove_emptied_dirs(t, txn, act, keep=m)
    # 1. the originals into backup/ (hard links: no copy, nothing to run out of space for)
    for row in s.rows_in(m, "pristine"):
        if row.kind != "replace":
            continue
        b = S / "backup" / row.rel
        if s.backup[row.rel] != "ok" or old is not None:
            txn.makedirs(b.parent)
            if os.path.lexists(b) and b not in txn.gone:
                txn.remove(b)
            txn.link(t / row.rel, b)
            act(f"backed up {row.rel}", f"would back up {row.rel} -> {STATE_REL}/backup/{row.rel}")
        for pyc in pyc_files(t / row.rel):   # pip's bytecode of the original: kept for revert
            dest = backup_pyc(t, pyc)
            kept = os.path.lexists(dest) and dest not in txn.gone
            # of two, the one that is bytecode of the original as it is now is kept
            if kept and (dry or not bytecode_matches(pyc, t / row.rel)):
                txn.remove(pyc)
            else:
                if kept:
                    txn.remove(dest)
                txn.makedirs(dest.parent)
                txn.move(pyc, dest)
            act(f"removed stale {t.rel(pyc)} (kept in the backup)",
                f"would remove stale {t.rel(pyc)} (kept in the backup)")
    txn.sync()  # commit point: the originals are durable before any SGLang file changes
    # 2. directories for added files, recorded before they are created
    todo = s.rows_in(m, "pristine", "stale")
    new_dirs: list[str] = []
    for row in todo:
        d = Path(row.rel).parent
        while not (t / d).exists() and d.as_posix() not in new_dirs:
            new_dirs.append(d.as_posix())
            d = d.parent
    recorded_dirs = read_created_dirs(t)
    listed = sorted((set(recorded_dirs) - set(removed_dirs)) | set(new_dirs))
    if listed != recorded_dirs:
        if listed:
            txn.put(S / "created_dirs", ("\n".join(listed) + "\n").encode())
        else:
            txn.remove(S / "created_dirs")
    for d in sorted(new_dirs):
        txn.mkdir(t / d)
        act(f"created directory {d}", f"would create directory {d}")
    # 3. our files: replaced ones first, added ones last (so a rollback removes those first)
    for row in sorted(todo, key=lambda r: r.kind == "add"):
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


def remove_ours(ctx: Context, t: Target, rel: str, txn, act, why: str = "") -> None:
    """One file of ours out of the tree (renamed into the staging area), with its bytecode."""
    txn.remove(t / rel)
    act(f"removed {rel}{why}", f"would remove {rel}{why}")
    for pyc in pyc_files(t / rel):
        txn.remove(pyc)
        act(f"removed stale {t.rel(pyc)}", f"would remove stale {t.rel(pyc)}")


def prune_backup(ctx: Context, t: Target, m: Manifest, s: Scan, txn, act,
                 everything: bool) -> None:
    """Backups this set cannot use go: those of paths it does not replace, an original that is
    not its release's, and the bytecode kept with such an original. `everything`: the backups
    are of another SGLang install (the release changed since): all of them."""
    top = t.state / "backup"
    if not top.is_dir():
        return
    keep: set[Path] = set()
    if not everything:
        for r in m.rows:
            if r.kind == "replace" and s.backup[r.rel] in ("ok", "missing"):
                keep.add(top / r.rel)
                keep.update(pyc_files(top / r.rel))

    def holds_kept(d: Path) -> bool:
        """Removes what under d is not kept (whole directories where it can); True if
        something under d is kept."""
        found = {}
        for name in sorted(os.listdir(d)):
            p = d / name
            found[p] = holds_kept(p) if p.is_dir() and not p.is_symlink() else p in keep
        if any(found.values()):
            for p, kept in found.items():
                if not kept:
                    txn.remove(p)
            return True
        return False

    if not holds_kept(top):
        txn.remove(top)
        act("removed the backups of another SGLang install", "would remove the backups of "
            f"another SGLang install ({STATE_REL}/backup)")


def remove_created_dirs(ctx: Context, t: Target, txn, act, keep: Manifest | None = None
                        ) -> list[str]:
    """Directories apply created, deepest first, once nothing (but an empty __pycache__) is
    left in them and no file of `keep` belongs there. Returns those removed."""
    removed = []
    needed = {str(Path(r.rel).parent) for r in keep.rows} if keep else set()
    for d in reversed(read_created_dirs(t, ctx.log)):
        p = t / d
        if p.is_symlink() or not p.is_dir() or any(n == d or n.startswith(d + "/")
                                                   for n in needed):
            continue
        rest = [e for e in os.listdir(p) if p / e not in txn.gone]
        if rest == ["__pycache__"] and not [e for e in os.listdir(p / "__pycache__")
                                            if p / "__pycache__" / e not in txn.gone]:
            rest = []
        if rest:
            ctx.log.warn(f"directory {d} (created by apply) is not empty: left in place")
            continue
        txn.remove(p)
        removed.append(d)
        act(f"removed directory {d}", f"would remove directory {d}")
    return removed


def do_revert(ctx: Context, t: Target, m: Manifest, s: Scan, txn, dry: bool = False,
              left: list[str] = (), old: str | None = None) -> None:
    """`left`: our files of another set, removed too; `old`: the release whose set is recorded,
    when the files are another release's (its backups are then of files pip has replaced)."""
    act = reporter(ctx, dry)
    S = t.state
    if not S.is_dir():
        txn.mkdir(S, stage=True)
    txn.stage = S
    # 1. our added files out first (renamed into the staging area; nothing is copied)
    of = f" (left from the {old} set)" if old else ""
    for row in m.rows:
        if row.kind != "add":
            continue
        if s.state[row.rel] in ("patched", "stale"):
            remove_ours(ctx, t, row.rel, txn, act, of)
        else:
            for pyc in pyc_files(t / row.rel):
                txn.remove(pyc)
                act(f"removed stale {t.rel(pyc)}", f"would remove stale {t.rel(pyc)}")
    for rel in left:
        remove_ours(ctx, t, rel, txn, act, f" (left from the {old} set)" if old
                    else " (left from another set)")
    if left or old is not None:
        remove_emptied_dirs(t, txn, act, keep=m)
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
        elif old is not None or s.backup[row.rel] == "corrupt":
            continue  # SGLang's own file, and the backup is of another install's: not its bytecode
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
                             f"{row.rel} as it is now (damaged, another Python's, or of an "
                             "earlier install of the file): not restored; Python writes it anew "
                             "on the next import")
                continue
            if not dest.parent.is_dir():  # __pycache__ deleted since: creating it needs space
                act(f"not restoring {t.rel(dest)}: {t.rel(dest.parent)} was removed (Python "
                    "writes it anew)", f"would not restore {t.rel(dest)} ({t.rel(dest.parent)} "
                    "was removed)")
                continue
            txn.move(kept, dest)
            act(f"restored {t.rel(dest)}", f"would restore {t.rel(dest)}")
    # 3. directories apply created, deepest first, once nothing (but an empty __pycache__) is left
    remove_created_dirs(ctx, t, txn, act)
    act("", f"would remove the state directory {STATE_REL}")
    txn.sync()


def remove_emptied_dirs(t: Target, txn, act, keep: Manifest) -> None:
    """Empty directories in SGLang's tree after another release's files went (pip's uninstall
    of that release, our files of its set). pip moves a directory away whole only when every
    file under it is in its record; our files under sglang/ are not, so pip removes the old
    release's files one directory at a time and leaves the directories that held them. A wheel
    has no empty directory: a clean install of this release has none of them. A directory a
    file of `keep` goes in stays (with its __pycache__); the state directory is not looked in."""
    needed = {str(Path(r.rel).parent) for r in keep.rows}

    def prune(p: Path) -> bool:
        """True if p is gone (removed now, or by this transaction before)."""
        rest = []
        for name in sorted(os.listdir(p)):
            c = p / name
            if c in txn.gone or (c != t.state and c.is_dir() and not c.is_symlink()
                                 and prune(c)):
                continue
            rest.append(c)
        d = t.rel(p)
        of = d[:-len("/__pycache__")] if d.endswith("/__pycache__") else d  # kept with its dir
        if rest or p == t / "sglang" or any(n == of or n.startswith(d + "/") for n in needed):
            return False
        txn.remove(p)
        act(f"removed the empty directory {d}", f"would remove the empty directory {d}")
        return True

    if (t / "sglang").is_dir():
        prune(t / "sglang")


def prune_empty_dirs(top: Path) -> None:
    """Remove empty directories under top, and top itself if it ends empty (after an uninstall)."""
    for dirpath, _, _ in os.walk(top, topdown=False):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def reverted_summary(m: Manifest, s: Scan | None = None, left: list[str] = ()) -> str:
    """What a completed revert did, in counts that say which files are where (`s`: the scan
    before it; without one, every row of m counts)."""
    n_rep = sum(1 for r in m.rows if r.kind == "replace" and (s is None
                                                              or s.state[r.rel] == "patched"))
    n_add = len(left) + sum(1 for r in m.rows if r.kind == "add" and (
        s is None or s.state[r.rel] in ("patched", "stale")))
    parts = []
    if n_rep:
        parts.append(f"{n_rep} file(s) are SGLang {m.version}'s originals again")
    if n_add:
        parts.append(f"the {n_add} file(s) nsa-fastpath added are removed")
    return " and ".join(parts) or "no file of nsa-fastpath's was left"
