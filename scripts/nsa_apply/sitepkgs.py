"""apply and revert of a site-packages tree (the default mode of apply.sh): the flow.

State directory (inside the target; removed by a successful revert), STATE = sglang/.nsa_fastpath:
  STATE/journal        op=apply, state=in-progress|done, sha256 of the manifest applied
  STATE/manifest.tsv   the manifest that was applied (revert uses it)
  STATE/created_dirs   directories apply created for added files
  STATE/backup/<path>  the original of each replaced file: a hard link to the very inode pip
                       installed (no copy), plus pip's bytecode of it (__pycache__/)
  STATE/tmp-*          staging area of a running apply/revert (whatever it displaced)

Every run goes: check our inputs -> find the target -> lock it -> scan every file by sha256 ->
refuse (exit 3/4/6, nothing changed) or plan -> check permissions, filesystem and free space ->
one transaction (engine.py, txn.py) -> commit -> remove the staging entries -> scan again.
"""
from __future__ import annotations

from . import errors as E
from .context import Context, command
from .engine import (DryTxn, do_apply, do_revert, finish_apply, finish_revert, note_late_signal,
                     reverted_summary, run_txn)
from .errors import Fail
from .manifest import STATE_REL, Manifest
from .releases import choose
from .preflight import (announce, announce_target, check_space, check_writable, clean_leftovers,
                        foreign_lines, lock_target, reinstall_advice, uninstalled_fail)
from .tree import (Target, read_journal, require_readable, require_state_readable, resolve,
                   scan, sglang_uninstalled, staged_leftovers)
from .verify import recorded_manifest, refuse_foreign_state


def cmd_apply(ctx: Context, target: str | None, dry: bool) -> int:
    sets = ctx.release_sets()
    t = resolve(target, ctx.log)
    announce_target(ctx, t)
    lock = lock_target(ctx, t)
    try:
        require_state_readable(t)
        m = ctx.use(choose(sets, t, "apply", ctx.say), t)
        announce(ctx, t, m)
        return _apply_locked(ctx, t, m, dry)
    finally:
        lock.release()


def _apply_locked(ctx: Context, t: Target, m: Manifest, dry: bool) -> int:
    recorded_manifest(ctx, t, m, "apply")
    s = scan(t, m)
    require_readable(s, t)
    left = sglang_uninstalled(t, m, s)
    if left:
        raise uninstalled_fail(t, m, left, E.TARGET)
    if s.foreign:
        raise Fail(E.REFUSED, *foreign_lines(t, m, s, "apply"),
                   f"SGLang found in {t.root}: version {t.version}; this patch set is for "
                   f"{m.target_spec}.", reinstall_advice(t, m, "then rerun apply"))
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
        if done:
            ctx.say(f"the journal says apply completed, but {n - s.count('patched')} of {n} "
                    "files are not nsa-fastpath's now (SGLang reinstalled over the patch?): "
                    "applying them again")
        else:
            ctx.say("an interrupted apply was found (journal: in-progress): completing it")
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


def cmd_revert(ctx: Context, target: str | None, dry: bool, forget: bool = False) -> int:
    sets = ctx.release_sets()
    t = resolve(target, ctx.log)
    announce_target(ctx, t)
    lock = lock_target(ctx, t)
    try:
        require_state_readable(t)
        m = ctx.use(choose(sets, t, "revert", ctx.say))
        announce(ctx, t, m)
        if forget:
            # the recorded journal and manifest are not read: this checkout's manifest is
            # used, and every file and backup is still checked by sha256 (scan)
            refuse_foreign_state(t)
            ctx.say(f"--forget-state: ignoring {STATE_REL}/journal and manifest.tsv; working "
                    f"from {m.path}")
        else:
            m = recorded_manifest(ctx, t, m, "revert")
        return _revert_locked(ctx, t, m, dry)
    finally:
        lock.release()


def _revert_locked(ctx: Context, t: Target, m: Manifest, dry: bool) -> int:
    s = scan(t, m)
    require_readable(s, t)
    n = len(m.rows)
    if dry:
        ctx.say("dry run: nothing will be changed")
    left = sglang_uninstalled(t, m, s)
    if left:
        ctx.say("SGLang itself was uninstalled here; "
                + ("would remove" if dry else "removing") + " nsa-fastpath's leftovers: "
                + ", ".join(left))
    elif s.foreign:
        keep = [r.rel for r in m.rows if r.kind == "add" and s.state[r.rel] == "patched"]
        if t.state.exists():
            keep.append(STATE_REL + "/")
        raise Fail(E.REFUSED, *foreign_lines(t, m, s, "revert"),
                   "apply.sh only overwrites files that are SGLang's or its own (was the file "
                   "edited after apply, or SGLang upgraded?).",
                   reinstall_advice(t, m, f"then rerun `{command('revert', '--target', t.root)}`"
                                    " to remove nsa-fastpath's leftovers"),
                   *([f"(If you upgraded SGLang on purpose, delete nsa-fastpath's leftovers in "
                      f"{t.root} by hand instead: {' '.join(keep)})"] if keep else []))
    if not left:
        bad = [(r.rel, s.backup[r.rel]) for r in s.rows_in(m, "patched")
               if r.kind == "replace" and s.backup[r.rel] != "ok"]
        if bad:
            raise Fail(E.MANUAL, "cannot revert: the backup of " + ", ".join(
                f"{rel} is {how}" for rel, how in bad) + f" ({STATE_REL}/backup; checked "
                f"against the sha256 of SGLang {m.version}'s file).",
                reinstall_advice(t, m, f"then rerun `{command('revert', '--target', t.root)}` "
                                 "to remove nsa-fastpath's leftovers"))
        if s.count("pristine") == n and not t.state.exists() and not staged_leftovers(t, m):
            ctx.say(f"already pristine: all {n} files are SGLang's own; nothing to revert")
            return E.OK
        j = read_journal(t)
        if t.state.exists() and not (j.get("op") == "apply" and j.get("state") == "done"):
            ctx.say("an interrupted run was found: completing the revert")
    if dry:
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
            ctx.say("reverted: " + reverted_summary(m) + "; state dir removed")
        note_late_signal(ctx)
    return E.OK

