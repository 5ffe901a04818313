"""apply.sh --git under SIGINT to its process group (a Ctrl-C), and the git states a killed
run can leave (issue 16 item 2).

The SIGINT harness: >= 100 runs of `apply --git` and `revert --git` on a small checkout, each
sent SIGINT to the whole process group at a deterministic point -- inside git (from git's
hooks, before and after each commit), at apply.sh's own steps (NSA_FASTPATH_FAULT_MODE=sigint),
right after its final line, and at evenly spread delays over a run's duration (start-up, the
reads, git's work, the end).
Each run must leave the checkout exactly pristine or exactly patched -- files, index, HEAD's
series, no git operation or marker left -- after at most one plain rerun of the same command;
no other command is ever typed. Bounded: about a minute on two busy cores.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from applytools import N_PATCHES, REPLACED, copy_tree, out, run_apply  # noqa: F401
from conftest import APPLY
from test_apply_git import (  # noqa: F401  (fixtures are used by name)
    AM_HOOKS, REVERT_HOOKS, assert_settled, git, pidfile_of, pkg_map, small_patched,
    small_template)

TIMED_RUNS = 44  # per command; with the hook, step and line points: 2 * (44 + 6 + 2 + 1) = 106


def sigint_hook(repo: Path, name: str, k: int) -> None:
    """When git runs hook `name` for the k-th time: SIGINT to apply.sh's process group (git
    has a session of its own, as apply.sh runs it, so only apply.sh gets it)."""
    pf = pidfile_of(repo)
    hook = repo / ".git" / "hooks" / name
    hook.write_text(f"#!/bin/sh\nn=$(( $(cat .git/int-count 2>/dev/null || echo 0) + 1 ))\n"
                    f"echo $n > .git/int-count\n"
                    f"if [ $n -eq {k} ]; then\n"
                    f"  while [ ! -s {pf} ]; do sleep 0.01; done\n"
                    f"  kill -INT -$(cat {pf})\nfi\nexit 0\n")
    hook.chmod(0o755)


def run_interrupted(repo: Path, cmd: str, delay: float | None = None,
                    env: dict | None = None, line: str = "") -> subprocess.CompletedProcess:
    """SIGINT to the run's process group after `delay` seconds, or once it printed a line
    starting with `line`, or (neither) from a hook."""
    proc = subprocess.Popen(["bash", str(APPLY), cmd, "--git", str(repo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            env={**os.environ, "PYTHON": sys.executable, **(env or {})})
    pidfile_of(repo).write_text(str(proc.pid))
    seen = ""
    if line:
        for ln in proc.stdout:
            seen += ln
            if ln.startswith(line):
                break
    if delay is not None:
        time.sleep(delay)
    if line or delay is not None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    so, se = proc.communicate(timeout=120)
    so = seen + so
    pidfile_of(repo).unlink()
    return subprocess.CompletedProcess(proc.args, proc.returncode, so, se)


def settled_as(repo: Path, pkg: dict) -> bool:
    try:
        assert_settled(repo, pkg, "")
        return True
    except AssertionError:
        return False


def check_run(repo: Path, cmd: str, p: subprocess.CompletedProcess, start: dict, end: dict,
              ctx: str) -> int:
    """The run's outcome is true to its exit code; returns the reruns it needed (0 or 1)."""
    ctx += f" exit {p.returncode}\n{out(p)}"
    assert "Traceback" not in p.stderr and "bug in apply.sh" not in p.stderr, ctx
    assert p.returncode in (0, 5, -2, 130), ctx
    if p.returncode == 0:
        assert "nothing changed" not in p.stderr, ctx
        want = end
    else:
        want = start  # stopped: rolled back, or interrupted before any change
    for h in AM_HOOKS + REVERT_HOOKS:
        (repo / ".git" / "hooks" / h).unlink(missing_ok=True)
    if settled_as(repo, want):
        return 0
    r = run_apply(cmd, "--git", str(repo), check=False)  # the one rerun allowed
    assert r.returncode == 0, ctx + "\nrerun:\n" + out(r)
    assert_settled(repo, end, ctx + "\nrerun:\n" + out(r))
    return 1


def test_git_sigint_to_the_process_group_at_many_points(small_template, small_patched,
                                                         tmp_path):
    pkg = {"apply": (pkg_map(small_template), pkg_map(small_patched)),
           "revert": (pkg_map(small_patched), pkg_map(small_template))}
    runs, reruns, codes = 0, 0, {}
    for cmd in ("apply", "revert"):
        src = small_template if cmd == "apply" else small_patched
        start, end = pkg[cmd]
        # how long an undisturbed run takes: the timed kills are spread over it
        repo = copy_tree(src, tmp_path / f"{cmd}-timing")
        t0 = time.monotonic()
        p = run_apply(cmd, "--git", str(repo))
        duration = time.monotonic() - t0
        assert_settled(repo, end, out(p))
        shutil.rmtree(repo)
        points: list[tuple[str, object]] = []
        for k in range(1, N_PATCHES + 1):
            for h in (AM_HOOKS if cmd == "apply" else REVERT_HOOKS):
                points.append(("hook", (h, k)))
        points += [("step", 1), ("step", 2)]
        # after the last line: the run is complete, the code stays 0
        points += [("line", f"[nsa-fastpath] {'applied' if cmd == 'apply' else 'reverted'}:")]
        points += [("delay", duration * 1.3 * i / TIMED_RUNS) for i in range(TIMED_RUNS)]
        for i, (how, at) in enumerate(points):
            repo = copy_tree(src, tmp_path / f"{cmd}-{i}")
            if how == "hook":
                sigint_hook(repo, *at)
                p = run_interrupted(repo, cmd)
            elif how == "line":
                p = run_interrupted(repo, cmd, line=at)
                assert p.returncode == 0 and "nothing changed" not in p.stderr, out(p)
            elif how == "step":
                p = run_interrupted(repo, cmd, env={"NSA_FASTPATH_FAULT_AT": str(at),
                                                    "NSA_FASTPATH_FAULT_MODE": "sigint"})
            else:
                p = run_interrupted(repo, cmd, delay=at)
            ctx = f"({cmd}, SIGINT at {how} {at})"
            if how in ("hook", "step"):  # inside the operation: always undone, exit 5
                assert p.returncode == 5 and "SIGINT" in p.stderr and "unchanged" in p.stderr, \
                    ctx + out(p)
            reruns += check_run(repo, cmd, p, start, end, ctx)
            codes[p.returncode] = codes.get(p.returncode, 0) + 1
            runs += 1
            shutil.rmtree(repo)
    assert runs >= 100
    assert codes.get(5, 0) >= 2 * (N_PATCHES * 2 + 2), codes  # every hook/step point
    assert codes.get(0, 0) >= 2, codes  # the "line" points at least
    print(f"{runs} runs, exit codes {codes}, {reruns} needed a rerun")


# ------------------------------------------------------------------ states a SIGKILL leaves
def marker(repo: Path, op: str) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    (repo / ".git" / "nsa-fastpath-op").write_text(f"op={op}\nhead={head}\npid=1\n")


def test_half_started_git_am_is_ours(small_template, small_patched, tmp_path):
    """git am killed before it wrote `applying`: rebase-apply/ without it. With our marker it
    is our interrupted apply: undone, then applied."""
    repo = copy_tree(small_template, tmp_path / "r")
    marker(repo, "am")
    (repo / ".git" / "rebase-apply").mkdir()
    (repo / ".git" / "rebase-apply" / "next").write_text("1\n")
    p = run_apply("apply", "--git", str(repo), check=False)
    assert p.returncode == 0 and "git rebase" not in out(p), out(p)
    assert_settled(repo, pkg_map(small_patched), out(p))


def test_half_started_revert_sequencer_is_ours(small_template, small_patched, tmp_path):
    """git revert killed before it wrote its todo list: an empty sequencer/ is our revert,
    not "a cherry-pick"."""
    repo = copy_tree(small_patched, tmp_path / "r")
    marker(repo, "revert")
    (repo / ".git" / "sequencer").mkdir()
    p = run_apply("revert", "--git", str(repo), check=False)
    assert p.returncode == 0 and "cherry-pick" not in out(p), out(p)
    assert_settled(repo, pkg_map(small_template), out(p))


def test_killed_git_left_changed_files_only(small_template, small_patched, tmp_path):
    """git killed mid-write: our files changed (one staged, one not), no operation recorded.
    The marker says the change is ours: undone, then the command does its job."""
    for cmd, src, end in (("apply", small_template, small_patched),
                          ("revert", small_patched, small_template)):
        repo = copy_tree(src, tmp_path / cmd)
        marker(repo, "am" if cmd == "apply" else "revert")
        a, b = (repo / "python" / REPLACED[0], repo / "python" / REPLACED[1])
        a.write_text("half written\n")
        b.write_text("half written too\n")
        git(repo, "add", str(b))
        p = run_apply(cmd, "--git", str(repo), check=False)
        assert p.returncode == 0 and "uncommitted" not in p.stderr, out(p)
        assert_settled(repo, pkg_map(end), out(p))


def test_unrelated_staged_file_is_refused_with_4(small_template, tmp_path):
    repo = copy_tree(small_template, tmp_path / "r")
    (repo / "notes.txt").write_text("mine\n")
    git(repo, "add", "notes.txt")
    head = git(repo, "rev-parse", "HEAD")
    p = run_apply("apply", "--git", str(repo), check=False)
    assert p.returncode == 4 and "staged changes" in p.stderr and "notes.txt" in p.stderr, out(p)
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "diff", "--cached", "--name-only").split() == ["notes.txt"]


def test_empty_git_output_is_never_a_path(small_template, tmp_path, monkeypatch):
    """A git that printed nothing (killed, or failing) for the git directory: refused (exit 3),
    never taken as the checkout's path ("a git revert is in progress" during an apply)."""
    import io
    sys.path.insert(0, str(APPLY.parent))
    from nsa_apply import errors as E, gitmode
    from nsa_apply.context import Context
    from nsa_apply.errors import Fail
    from nsa_apply.output import Log
    repo = copy_tree(small_template, tmp_path / "r")
    real = gitmode.Checkout.git

    def git_(self, *args):
        if args[:2] == ("rev-parse", "--absolute-git-dir"):
            return subprocess.CompletedProcess(args, -2, "", "")
        return real(self, *args)

    monkeypatch.setattr(gitmode.Checkout, "git", git_)
    ctx = Context.from_env({}, log=Log(io.StringIO(), io.StringIO()))
    with pytest.raises(Fail) as f:
        gitmode.Checkout(ctx, str(repo))
    assert f.value.code == E.TARGET and "cannot find the git directory" in str(f.value)
