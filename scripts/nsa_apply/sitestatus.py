"""`apply.sh status` of a site-packages tree: file states, the overall state and what to do,
then scripts/status.py's report (Triton, the CUDA extension, the flags) under this Python."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from . import errors as E
from .context import ROOT, Context, command
from .lock import held_by_other
from .manifest import STATE_REL, Manifest
from .errors import Fail
from .preflight import announce, announce_target, reinstall_advice
from .releases import choose
from .tree import (Scan, Target, owner_of, read_journal, resolve, scan, sglang_uninstalled,
                   staged_leftovers, state_unreadable)
from .verify import recorded_manifest


def cmd_status(ctx: Context, target: str | None) -> int:
    sets = ctx.release_sets()
    t = resolve(target, ctx.log)
    announce_target(ctx, t)
    blocked = state_unreadable(t)
    m0 = ctx.use(choose(sets, t, "status", ctx.say))
    announce(ctx, t, m0)
    try:
        m = m0 if blocked else recorded_manifest(ctx, t, m0, "status")
    except Fail as f:  # damaged state, or a .nsa_fastpath that is not ours: say so, and why
        for line in f.lines:
            ctx.say(line)
        ctx.say(f"overall: {'damaged' if f.code == E.MANUAL else 'foreign'} -- see above")
        return f.code
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
        kernel_report(ctx, environ, t.state / "backup/sglang/srt/environ.py", t.root)
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
        if not t.state.exists() and not s.count("patched"):
            return ("foreign", E.REFUSED, f"SGLang {t.version} here, never patched: its files "
                    f"are not SGLang {m.target_spec}'s, for which this patch set is made. "
                    + reinstall_advice(t, m, "or leave it as it is").replace(
                        " Nothing changed.", ""))
        return ("foreign", E.REFUSED, f"file(s) above are neither SGLang {m.target_spec}'s nor "
                "nsa-fastpath's. " + reinstall_advice(t, m, f"then {revert}").replace(
                    " Nothing changed.", ""))
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
