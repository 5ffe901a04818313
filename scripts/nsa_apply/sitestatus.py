"""`apply.sh status` of a site-packages tree: file states, the overall state and what to do,
then scripts/status.py's report (Triton, the CUDA extension, the flags) under this Python."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from . import errors as E
from .context import ROOT, Context, command
from .errors import Fail
from .lock import held_by_other
from .manifest import STATE_REL, Manifest
from .preflight import announce, announce_target, way_out
from .sitepkgs import left_line, no_set_lines
from .releases import built_in_line, supported
from .survey import Survey, survey
from .tree import (Scan, Target, owner_of, read_journal, resolve, scan, source_checkout,
                   staged_leftovers, state_unreadable)


def cmd_status(ctx: Context, target: str | None) -> int:
    sets = ctx.release_sets()
    t = resolve(target, ctx.log)
    announce_target(ctx, t)
    blocked = state_unreadable(t)
    try:
        sv = survey(t, sets, forget=blocked is not None)
    except Fail as f:  # damaged state, or a .nsa_fastpath that is not ours: say so, and why
        for line in f.lines:
            ctx.say(line)
        ctx.say(f"overall: {'damaged' if f.code == E.MANUAL else 'foreign'} -- see above")
        return f.code
    top = source_checkout(t)
    if top is not None:
        ctx.say(f"note: git tracks these files (the work tree {top}): apply refuses here "
                f"unless --allow-source-tree; as commits: {command('apply', '--git', top)}")
    overall, code, note = _report(ctx, sv, blocked)
    ctx.say(f"overall: {overall} -- {note}")
    s = sv.scan
    environ = str(t / "sglang/srt/environ.py") if s and s.state.get("sglang/srt/environ.py") \
        == "patched" else ""
    if ctx.status_kernels:
        kernel_report(ctx, environ, t.state / "backup/sglang/srt/environ.py", t.root)
    return code


LABEL = {"patched": "patched", "pristine": "pristine", "stale": "left", "foreign": "foreign",
         "missing": "missing"}


def file_lines(ctx: Context, sv: Survey, m: Manifest, s: Scan) -> None:
    """One line per file of m: pristine, patched (a file of SGLang's we replace), added (a file
    we add), left (ours, of another set), foreign, missing; then our other files left."""
    for row in m.rows:
        st = s.state[row.rel]
        label = "added" if st == "patched" and row.kind == "add" else LABEL[st]
        note = {"foreign": f" (sha256 {s.seen[row.rel]})",
                "pristine": " (absent, as in SGLang)" if row.kind == "add" else ""}.get(st, "")
        if sv.old and row.kind == "add" and st in ("patched", "stale"):
            label = "left"
        if s.seen[row.rel] == "unreadable":
            label, note = "unknown", " (unreadable by this user)"
        ctx.say(f"  {label:<9} {row.rel}{note}")
    for rel in sv.left:
        ctx.say(f"  {'left':<9} {rel}")


def _report(ctx: Context, sv: Survey, blocked: Path | None) -> tuple[str, int, str]:
    """The lines of status, each fact said once, and (overall, exit code, what to do)."""
    t = sv.t
    revert, apply = command("revert", "--target", t.root), command("apply", "--target", t.root)
    if blocked or sv.unreadable:
        what = t.rel(blocked) if blocked else ", ".join(sv.unreadable)
        return ("unknown", E.TARGET, f"cannot read {what}: permission denied (the files may be "
                f"fine). Run status as the owner of this install ({owner_of(t / 'sglang')})")
    if sv.uninstalled is not None:
        return ("uninstalled", E.PARTIAL, "SGLang was uninstalled from here, but "
                f"nsa-fastpath's files remain ({', '.join(sv.uninstalled)}); `import sglang` "
                f"still succeeds as an empty namespace package. Remove them with: {revert}")
    if sv.m is None and sv.own:
        ctx.say(f"SGLang {t.version} is installed here, a release nsa-fastpath has no set for "
                f"(supported: {supported(ctx.release_sets())}); its "
                "files are its own (their sha256 as in its RECORD)")
        built_in = built_in_line(t.version, ctx.release_sets())
        if built_in is not None:
            ctx.say(built_in)
        if not sv.left and not t.state.exists():
            return ("unsupported", E.REFUSED, f"SGLang {t.version}'s own code; nothing of "
                    "nsa-fastpath's is here")
        ctx.say((f"SGLang was {sv.change()} while patched; " if sv.old else "")
                + left_line(sv))
        for rel in sv.left:
            ctx.say(f"  {'left':<9} {rel}")
        return (sv.change_word() if sv.old else "partial", E.PARTIAL,
                f"SGLang {t.version}'s own code runs; remove what is left of nsa-fastpath "
                f"with: {revert}")
    if sv.m is None and sv.recorded is None:
        for line in no_set_lines(ctx, sv, "apply", "then rerun")[:-1]:
            ctx.say(line)
        return ("foreign", E.REFUSED, "the files above are not those of one release "
                "nsa-fastpath supports; see above")
    if sv.m is None:  # the recorded set's files, some changed since
        m = sv.recorded
        s = scan(t, m, sv.known.added)
        ctx.say(f"nsa-fastpath set recorded as applied: {m.target_spec} (some files are not "
                "that release's any more)")
    else:
        m, s = sv.m, sv.scan
        if sv.old:
            ctx.say(f"SGLang was {sv.change()} while patched; {len(sv.added_left)} of our files "
                    f"are left from the {sv.old} set")
            ctx.say(f"nsa-fastpath set for SGLang {sv.new}: {m.target_spec} (not applied)")
        else:
            announce(ctx, t, m)
            if sv.rs is None:
                ctx.say(f"using the manifest recorded at apply time: {STATE_REL}/manifest.tsv "
                        "(another nsa-fastpath version's; sha256 verified against the journal)")
    file_lines(ctx, sv, m, s)
    j = read_journal(t)
    if t.state.exists():
        ctx.say(f"state dir: {STATE_REL} (journal: op={j.get('op', '?')} "
                f"state={j.get('state', '?')}"
                + (f", the {sv.old} set's" if sv.old else "") + ")")
    try:
        leftovers = staged_leftovers(t, m)
    except OSError:
        leftovers = []
    if leftovers:
        ctx.say("leftover temp files of an interrupted run are present (apply or revert "
                "removes them)")
    if held_by_other(t / "sglang"):
        ctx.say("note: another apply.sh run on this target is in progress right now")
    if s.foreign:
        return ("foreign", E.REFUSED, "the file(s) marked foreign are neither SGLang's nor "
                "nsa-fastpath's. " + " ".join(way_out(t, m, s, f"then {revert}")))
    if sv.old:
        return (sv.change_word(), E.PARTIAL, f"SGLang {sv.new}'s own code runs. To patch it: "
                f"{apply} (it replaces what is left of the {sv.old} set with the {sv.new} set); "
                f"or, to remove "
                f"what is left and keep SGLang's own code: {revert}")
    return _overall(t, m, s, sv, j, leftovers)


def _overall(t: Target, m: Manifest, s: Scan, sv: Survey, j: dict, leftovers: list
             ) -> tuple[str, int, str]:
    n = len(m.rows)
    revert = command("revert", "--target", t.root)
    done = j.get("op") == "apply" and j.get("state") == "done"
    bad_backup = [r for r in s.rows_in(m, "patched") if r.kind == "replace"
                  and s.backup[r.rel] != "ok"]
    if (t.state.exists() and not done) or leftovers:
        return ("partial", E.PARTIAL, f"an interrupted {j.get('op', 'run')} (crash, kill -9, "
                "power loss): rerun `apply.sh apply` or `apply.sh revert`; either finishes")
    if s.count("pristine") == n and not t.state.exists() and not sv.left:
        return ("pristine", E.OK, "SGLang's own code; nsa-fastpath not installed")
    if s.count("patched") == n and t.state.exists() and not bad_backup and not sv.left:
        return ("patched", E.OK, f"undo with: {revert}")
    if s.count("patched") == n and not sv.left:
        return ("patched", E.MANUAL, f"but the backup of {len(bad_backup)} original(s) is "
                "missing or corrupt: `apply.sh revert` cannot restore them; to go back: pip "
                f"install --force-reinstall --no-deps {m.target_spec}, then {revert}")
    return ("partial", E.PARTIAL, f"{s.count('patched')} of {n} files are nsa-fastpath's "
            "(interrupted run, or SGLang reinstalled over a patched tree): rerun `apply.sh "
            "apply` or `apply.sh revert`")


def kernel_report(ctx: Context, environ: str, pristine_environ: Path, site: Path) -> None:
    """scripts/status.py: Triton, CUDA extension, flags, paths, under the Python owning `site`."""
    try:
        p = subprocess.run([sys.executable, str(ROOT / "scripts" / "status.py"),
                            "--environ", environ, "--pristine-environ", str(pristine_environ),
                            "--site", str(site)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace", stdin=subprocess.DEVNULL)
    except OSError as e:
        ctx.log.warn(f"could not run scripts/status.py with {sys.executable}: {e}")
        return
    for line in p.stdout.splitlines():
        ctx.log.raw(line)
    if p.returncode != 0:
        ctx.log.warn(f"scripts/status.py exited {p.returncode}")
