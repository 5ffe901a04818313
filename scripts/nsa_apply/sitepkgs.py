"""apply / revert of a site-packages tree: the flow around the transactions of engine.py.

Each run: find the target -> lock it -> read the recorded state (verified) and let the files
choose the release set (survey.py) -> refuse (nothing changed) or say what it will do ->
check permissions, then space -> remove staging entries of an interrupted run -> one
transaction -> finish -> scan again.
"""
from __future__ import annotations

from . import errors as E
from .context import Context, command
from .engine import (DryTxn, do_apply, do_revert, finish_apply, finish_revert, note_late_signal,
                     reverted_summary, run_txn)
from .errors import Fail
from .manifest import STATE_REL
from .preflight import (announce, announce_target, check_space, check_writable, clean_leftovers,
                        foreign_lines, lock_target, pip_reinstall, refuse_source_checkout,
                        reinstall_advice, uninstalled_fail)
from .releases import built_in_line, diagnose, port_command, supported
from .survey import Survey, empty_manifest, survey
from .tree import (Scan, read_journal, record_hashes, require_readable,
                   require_state_readable, resolve, scan, staged_leftovers)
from .verify import refuse_foreign_state


def cmd_apply(ctx: Context, target: str | None, dry: bool, allow_source: bool = False) -> int:
    sets = ctx.release_sets()
    t = resolve(target, ctx.log)
    announce_target(ctx, t)
    if not allow_source:
        refuse_source_checkout(t)
    lock = lock_target(ctx, t)
    try:
        require_state_readable(t)
        return _apply_locked(ctx, survey(t, sets), dry)
    finally:
        lock.release()


def no_set_lines(ctx: Context, sv: Survey, verb: str, then: str) -> list[str]:
    """Why no release set fits the files, and the way out."""
    t = sv.t
    sets = ctx.release_sets()
    if sv.own:
        lines = [f"SGLang {t.version} is installed in {t.root}: a release nsa-fastpath has no set "
                 f"for (supported: {supported(sets)}). Its files are its own (their sha256 as "
                 "in its RECORD)."]
        if sv.left or t.state.exists():
            lines.append(left_line(sv) + " Remove them with: "
                         + command("revert", "--target", t.root))
        built_in = built_in_line(t.version, sets)
        if built_in is not None:
            return lines + [built_in + " Nothing changed."]
        return lines + [f"To support SGLang {t.version}, port the patch set to it: "
                        f"`{port_command(t.version)}` "
                        "(README: \"Supporting another SGLang release\"). Nothing changed."]
    if sv.recorded is not None:
        m = sv.recorded
        return [f"nsa-fastpath's set for {m.target_spec} is applied here (recorded in "
                f"{STATE_REL}), but these files are not that release's:",
                *foreign_lines(t, m, scan(t, m, sv.known.added), verb, then)]
    return diagnose(sets, [(rs, scan(t, rs.manifest)) for rs in sets], t,
                    f"restore SGLang's own files with `{pip_reinstall(t, '<version>')}`",
                    record_hashes(t.root))


def left_line(sv: Survey) -> str:
    """What is left of another set, in a sentence."""
    n = len(sv.added_left)
    what = f"{n} file(s) of nsa-fastpath's" if n else "nsa-fastpath's state directory"
    if n and sv.t.state.exists():
        what += " and its state directory"
    where = f" from the {sv.old} set" if sv.old else ""
    return f"{what} {'are' if n else 'is'} left here{where}."


def _apply_locked(ctx: Context, sv: Survey, dry: bool) -> int:
    t = sv.t
    require_readable(sv.unreadable, t)
    if sv.uninstalled is not None:
        raise uninstalled_fail(t, sv.recorded.version if sv.recorded else None, sv.uninstalled,
                               E.TARGET)
    if sv.m is None:
        raise Fail(E.REFUSED, *no_set_lines(ctx, sv, "apply", "then rerun apply"))
    m, s = sv.m, sv.scan
    if sv.rs is None:  # the recorded manifest fits the files, and no set of this checkout is it
        raise Fail(E.REFUSED, f"another nsa-fastpath version is applied to {t.root} "
                              f"({STATE_REL}/manifest.tsv is none of manifests/). Run "
                              f"`{command('revert', '--target', t.root)}` first (it uses the "
                              "recorded manifest and backups), then apply. Nothing changed.")
    ctx.use(sv.rs, t)
    announce(ctx, t, m)
    if s.foreign:  # the files fit the set: only an added file of ours can be in the way
        raise Fail(E.REFUSED, *foreign_lines(t, m, s, "apply", "then rerun apply"))
    n = len(m.rows)
    if sv.old:
        ctx.say(f"SGLang was {sv.change()} while patched: " + left_line(sv).rstrip(".")
                + f"; {'would replace' if dry else 'replacing'} what is left of the {sv.old} "
                f"set with the {sv.new} set")
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
    if s.count("patched") == n and done and sv.recorded is m and not leftovers and not sv.left:
        ctx.say(f"already applied: all {n} files are nsa-fastpath's; nothing to do")
        return E.OK
    if t.state.exists() and not sv.old and not (done and s.count("patched") == n):
        if done:
            ctx.say(f"the journal says apply completed, but {n - s.count('patched')} of {n} "
                    "files are not nsa-fastpath's now (SGLang reinstalled over the patch?): "
                    "applying them again")
        else:
            ctx.say("an interrupted apply was found (journal: in-progress): completing it")
    if dry:
        ctx.say("dry run: nothing will be changed")
        do_apply(ctx, t, m, s, DryTxn(), dry=True, left=sv.left, old=sv.old)
        ctx.say("dry run: done (nothing changed)")
        return E.OK
    check_writable(t, touched(sv))
    check_space(t, m, s, ctx)
    with ctx.signals.deferred():  # from here on a signal can only roll back, or wait
        clean_leftovers(ctx, t, m)
        txn = run_txn(ctx, t, "apply", "pristine" if s.count("pristine") == n and not sv.ours
                      and not t.state.exists() else "as it was",
                      lambda txn: do_apply(ctx, t, m, s, txn, left=sv.left, old=sv.old))
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


def touched(sv: Survey) -> list[str]:
    """Every path a run on this tree may change (its directories are checked up front)."""
    rels = set(sv.left)
    for m in (sv.m, sv.recorded):
        if m is not None:
            rels.update(r.rel for r in m.rows)
    return sorted(rels)


def cmd_revert(ctx: Context, target: str | None, dry: bool, forget: bool = False) -> int:
    sets = ctx.release_sets()
    t = resolve(target, ctx.log)
    announce_target(ctx, t)
    lock = lock_target(ctx, t)
    try:
        require_state_readable(t)
        if forget:
            # the recorded journal and manifest are not read: the files choose the set, and
            # every file and backup is still checked by sha256 (scan)
            refuse_foreign_state(t)
            ctx.say(f"--forget-state: ignoring {STATE_REL}/journal and manifest.tsv; working "
                    "from the release set whose files the tree holds (manifests/)")
        return _revert_locked(ctx, survey(t, sets, forget=forget), dry)
    finally:
        lock.release()


def _revert_locked(ctx: Context, sv: Survey, dry: bool) -> int:
    t = sv.t
    revert = command("revert", "--target", t.root)
    require_readable(sv.unreadable, t)
    if dry:
        ctx.say("dry run: nothing will be changed")
    if sv.uninstalled is not None:
        m, s = sv.m or empty_manifest(t), sv.scan or Scan()
        ctx.say("SGLang itself was uninstalled here; "
                + ("would remove" if dry else "removing") + " nsa-fastpath's leftovers: "
                + ", ".join(sv.uninstalled))
    elif sv.m is None:
        if not sv.own:
            raise Fail(E.REFUSED, *no_set_lines(ctx, sv, "revert",
                                                f"then rerun `{revert}`"))
        m, s = empty_manifest(t), Scan()
        if not sv.left and not t.state.exists() and not staged_leftovers(t, m):
            ctx.say(f"already pristine: SGLang {t.version}'s own files (a release nsa-fastpath "
                    "has no set for), and nothing of nsa-fastpath's; nothing to revert")
            return E.OK
        ctx.say(f"SGLang {t.version} is installed here, a release nsa-fastpath has no set for; "
                "its files are its own (their sha256 as in its RECORD)"
                + (f": SGLang was {sv.change()} while patched" if sv.old else "") + ". "
                + left_line(sv) + (" Would remove" if dry else " Removing") + " them.")
    else:
        m, s = sv.m, sv.scan
        announce(ctx, t, m)
        if sv.recorded is m and sv.rs is None:
            ctx.say(f"using the manifest recorded at apply time: {STATE_REL}/manifest.tsv "
                    "(sha256 verified against the journal)")
        if s.foreign:  # the files fit the set: only an added file of ours can be in the way
            raise Fail(E.REFUSED, *foreign_lines(t, m, s, "revert", f"then rerun `{revert}`"))
        if sv.old:
            ctx.say(f"SGLang was {sv.change()} while patched: SGLang {sv.new}'s files are its "
                    "own; " + left_line(sv)[0].lower() + left_line(sv)[1:].rstrip(".")
                    + (": would remove them" if dry else ": removing them"))
        bad = [(r.rel, s.backup[r.rel]) for r in s.rows_in(m, "patched")
               if r.kind == "replace" and s.backup[r.rel] != "ok"]
        if bad:
            raise Fail(E.MANUAL, "cannot revert: the backup of " + ", ".join(
                f"{rel} is {how}" for rel, how in bad) + f" ({STATE_REL}/backup; checked "
                f"against the sha256 of SGLang {m.version}'s file).",
                reinstall_advice(t, m, f"then rerun `{revert}` to remove nsa-fastpath's "
                                 "leftovers"))
        n = len(m.rows)
        if s.count("pristine") == n and not t.state.exists() and not sv.left \
                and not staged_leftovers(t, m):
            ctx.say(f"already pristine: all {n} files are SGLang's own; nothing to revert")
            return E.OK
        j = read_journal(t)
        if t.state.exists() and not sv.old and not (j.get("op") == "apply"
                                                    and j.get("state") == "done"):
            ctx.say("an interrupted run was found: completing the revert")
    if dry:
        do_revert(ctx, t, m, s, DryTxn(), dry=True, left=sv.left, old=sv.old)
        ctx.say("dry run: done (nothing changed)")
        return E.OK
    check_writable(t, touched(sv))
    with ctx.signals.deferred():  # from here on a signal can only roll back, or wait
        clean_leftovers(ctx, t, m)
        goal = "patched" if sv.m and s.count("patched") == len(m.rows) else "as it was"
        run_txn(ctx, t, "revert", goal,
                lambda txn: do_revert(ctx, t, m, s, txn, left=sv.left, old=sv.old))
        finish_revert(t, sv.uninstalled is not None)
        if sv.uninstalled is not None:
            again = f"sglang=={sv.recorded.version}" if sv.recorded else "sglang"
            ctx.say(f"removed nsa-fastpath's leftovers; {t.root} holds no SGLang "
                    f"(pip install {again} to reinstall it)")
        else:
            after = scan(t, m)
            if after.count("pristine") != len(m.rows):
                raise Fail(E.MANUAL, f"after revert, {len(m.rows) - after.count('pristine')} "
                                     "file(s) are not SGLang's (changed by something else "
                                     f"meanwhile?): run `{command('status', '--target', t.root)}`")
            ctx.say("reverted: " + reverted_summary(m, s, sv.left) + "; state dir removed"
                    + (f"; SGLang {sv.new}'s own files are in place" if sv.old or sv.own
                       else ""))
        note_late_signal(ctx)
    return E.OK
