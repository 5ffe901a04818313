"""scripts/apply.sh --git: `git am` / `git revert` of the series on a git checkout of SGLang,
ROLLBACK.md's plain-git command, and recovery after a run is killed mid-way.

ROLLBACK.md method 3 points at test_rollback_method3_apply_sh_revert_git and
test_rollback_method3_plain_git_revert.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from applytools import (  # noqa: F401  (fixtures are used by name)
    N_PATCHES, REPLACED, ROWS, _tree_hygiene, copy_tree, our_file, out, patched_map, pristine_map,
    run_apply, series_patches, tree_map)
from conftest import APPLY, ROOT


def git(repo: Path, *args: str, check: bool = True) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=check, capture_output=True,
                          text=True).stdout


@pytest.fixture(scope="session")
def git_template(pristine_template, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("git") / "sglang"
    shutil.copytree(pristine_template / "sglang", repo / "python" / "sglang")
    (repo / "python" / "pyproject.toml").write_text('[project]\nname = "sglang"\nversion = "0.5.8"\n')
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test Operator")
    git(repo, "config", "user.email", "operator@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "SGLang v0.5.8")
    git(repo, "gc", "-q")  # one pack instead of ~2000 loose objects: cheaper copies
    return repo


@pytest.fixture(scope="session")
def git_patched_template(git_template, tmp_path_factory) -> Path:
    repo = copy_tree(git_template, tmp_path_factory.mktemp("git_patched") / "sglang")
    run_apply("apply", "--git", str(repo))
    return repo


@pytest.fixture(scope="session")
def small_template(pristine_template, tmp_path_factory) -> Path:
    """A checkout holding only the files we replace (cheap to copy for the kill loops)."""
    repo = tmp_path_factory.mktemp("git_small") / "sglang"
    for rel in REPLACED:
        (repo / "python" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(pristine_template / rel, repo / "python" / rel)
    (repo / "python" / "pyproject.toml").write_text('[project]\nname = "sglang"\nversion = "0.5.8"\n')
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test Operator")
    git(repo, "config", "user.email", "operator@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "SGLang v0.5.8 (the files nsa-fastpath replaces)")
    return repo


@pytest.fixture(scope="session")
def small_patched(small_template, tmp_path_factory) -> Path:
    repo = copy_tree(small_template, tmp_path_factory.mktemp("git_small_patched") / "sglang")
    run_apply("apply", "--git", str(repo))
    return repo


@pytest.fixture
def git_repo(git_template, tmp_path) -> Path:
    return copy_tree(git_template, tmp_path / "sglang")


@pytest.fixture(scope="session")
def pkg_pristine(pristine_template) -> dict:
    return tree_map(pristine_template / "sglang")


@pytest.fixture(scope="session")
def pkg_patched(git_patched_template) -> dict:
    return pkg_map(git_patched_template)


def pkg_map(repo: Path) -> dict:
    return tree_map(repo / "python" / "sglang")


def assert_settled(repo: Path, want_pkg: dict, ctx: str) -> None:
    """Files exactly as wanted, nothing staged or modified, no git operation or marker left."""
    assert pkg_map(repo) == want_pkg, ctx
    assert git(repo, "status", "--porcelain") == "", ctx
    gd = repo / ".git"
    for name in ("rebase-apply", "sequencer", "REVERT_HEAD", "index.lock", "nsa-fastpath-op"):
        assert not (gd / name).exists(), f"{name} left: {ctx}"


def our_commits_since(repo: Path, base: str) -> list[str]:
    return git(repo, "log", "--format=%(trailers:key=nsa-fastpath,valueonly)",
               f"{base}..").split()


# ------------------------------------------------------------------ round trips
def test_rollback_method3_apply_sh_revert_git(git_repo, pkg_pristine):
    head0 = git(git_repo, "rev-parse", "HEAD").strip()
    p = run_apply("apply", "--git", str(git_repo))
    assert "sglang 0.5.8" in p.stdout
    for _, rel, _, _ in ROWS:
        assert (git_repo / "python" / rel).read_bytes() == our_file(rel).read_bytes()
    assert our_commits_since(git_repo, head0) == [str(i) for i in range(N_PATCHES, 0, -1)]
    assert git(git_repo, "status", "--porcelain") == ""
    st = run_apply("status", "--git", str(git_repo))
    assert "overall: patched" in st.stdout

    head1 = git(git_repo, "rev-parse", "HEAD")
    again = run_apply("apply", "--git", str(git_repo))
    assert "already applied" in again.stdout and git(git_repo, "rev-parse", "HEAD") == head1

    assert run_apply("revert", "--git", str(git_repo), "--dry-run").returncode == 0
    assert git(git_repo, "rev-parse", "HEAD") == head1
    r = run_apply("revert", "--git", str(git_repo))
    assert r.stdout.count("reverted ") == N_PATCHES
    assert_settled(git_repo, pkg_pristine, out(r))
    assert git(git_repo, "diff", head0, "HEAD") == ""
    # newest first: the first revert commit undoes the last patch
    last_patch = git(git_repo, "log", "-1", "--format=%s", head1.strip()).strip()
    subjects = git(git_repo, "log", "--format=%s", f"{head1.strip()}..").splitlines()
    assert subjects[-1] == f'Revert "{last_patch}"'
    assert "already pristine" in run_apply("revert", "--git", str(git_repo)).stdout
    assert "overall: pristine" in run_apply("status", "--git", str(git_repo)).stdout
    # and it can be applied again after the revert, and reverted again
    run_apply("apply", "--git", str(git_repo))
    run_apply("revert", "--git", str(git_repo))
    assert_settled(git_repo, pkg_pristine, "second cycle")


def plain_git_revert_command() -> str:
    """The command ROLLBACK.md gives to revert without this repository."""
    text = (ROOT / "ROLLBACK.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    found = [b for b in blocks if "git revert" in b and "apply.sh" not in b]
    assert len(found) == 1, found
    return found[0]


def test_rollback_method3_plain_git_revert(git_repo, pkg_pristine, pkg_patched, series_patches):
    """Operators without apply.sh: `git am` the series, ROLLBACK.md's plain-git command
    reverts it; twice over (am -> revert -> am -> revert -> am -> revert), where reverted
    commits of the earlier cycles must not be picked up again."""
    cmd = plain_git_revert_command().replace("/path/to/sglang", str(git_repo))
    patches = [str(p) for p in series_patches]
    for cycle in range(3):
        git(git_repo, "am", "-q", *patches)
        assert pkg_map(git_repo) == pkg_patched, f"cycle {cycle}: git am"
        assert "overall: patched" in run_apply("status", "--git", str(git_repo)).stdout
        p = subprocess.run(["bash", "-c", cmd], capture_output=True,
                           text=True)
        ctx = f"cycle {cycle}: {cmd}\n{out(p)}"
        assert p.returncode == 0, ctx
        assert_settled(git_repo, pkg_pristine, ctx)
        assert "overall: pristine" in run_apply("status", "--git", str(git_repo)).stdout
    # on a pristine checkout the command does nothing
    head = git(git_repo, "rev-parse", "HEAD")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert p.returncode == 0 and git(git_repo, "rev-parse", "HEAD") == head, out(p)
    # and apply.sh takes over from a plain-git history
    run_apply("apply", "--git", str(git_repo))
    r = run_apply("revert", "--git", str(git_repo))
    assert r.stdout.count("reverted ") == N_PATCHES
    assert_settled(git_repo, pkg_pristine, out(r))


# ------------------------------------------------------------------ refusals
def test_git_foreign_or_dirty_refuses(git_repo):
    rel = "python/" + REPLACED[0]
    head0 = git(git_repo, "rev-parse", "HEAD")
    # uncommitted change that keeps the content (mode change): refused as dirty
    os.chmod(git_repo / rel, 0o755)
    p = run_apply("apply", "--git", str(git_repo), check=False)
    assert p.returncode == 4 and "uncommitted changes" in p.stderr and rel in p.stderr, out(p)
    os.chmod(git_repo / rel, 0o644)
    # a committed local edit: foreign
    with open(git_repo / rel, "ab") as fh:
        fh.write(b"# local patch\n")
    git(git_repo, "commit", "-q", "-am", "local patch")
    head1 = git(git_repo, "rev-parse", "HEAD")
    before = pkg_map(git_repo)
    p = run_apply("apply", "--git", str(git_repo), check=False)
    assert p.returncode == 4 and f"{REPLACED[0]}: sha256 " in p.stderr, out(p)
    assert git(git_repo, "rev-parse", "HEAD") == head1 != head0
    assert pkg_map(git_repo) == before and git(git_repo, "status", "--porcelain") == ""
    assert run_apply("status", "--git", str(git_repo), check=False).returncode == 4
    # the advice, followed: the release's own file from its tag, committed
    git(git_repo, "tag", "v0.5.8", head0.strip())
    restore = re.search(r"\(git -C (\S+) checkout (v0\.5\.8) -- <file>, then git -C \S+ "
                        r"commit\)", p.stderr)
    assert restore and restore.group(1) == str(git_repo), out(p)
    git(git_repo, "checkout", restore.group(2), "--", rel)
    git(git_repo, "commit", "-q", "-m", "back to SGLang's own")
    p = run_apply("apply", "--git", str(git_repo), check=False)
    assert p.returncode == 0 and "applied:" in p.stdout, out(p)


def test_git_am_failure_aborts(git_repo):
    """A failing `git am` (here: a pre-applypatch hook refusing the 2nd patch) is aborted."""
    hook = git_repo / ".git" / "hooks" / "pre-applypatch"
    hook.write_text("#!/bin/sh\ngit diff --cached --name-only | grep -q nsa_backend && exit 1\nexit 0\n")
    hook.chmod(0o755)
    head0 = git(git_repo, "rev-parse", "HEAD")
    before = pkg_map(git_repo)
    p = run_apply("apply", "--git", str(git_repo), check=False)
    assert p.returncode == 5 and "git am --abort" in p.stderr, out(p)
    assert git(git_repo, "rev-parse", "HEAD") == head0
    assert git(git_repo, "status", "--porcelain") == "" and pkg_map(git_repo) == before
    assert not (git_repo / ".git" / "rebase-apply").exists()


def test_git_operation_of_someone_else_is_left_alone(git_repo, pkg_pristine, series_patches):
    """A `git am` the operator started (no marker of ours) is theirs: refuse, say how to
    finish or abort it, change nothing. git's index.lock: exit 8 and the command to clear it."""
    hook = git_repo / ".git" / "hooks" / "pre-applypatch"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    git(git_repo, "am", "-q", str(series_patches[0]), check=False)
    assert (git_repo / ".git" / "rebase-apply").is_dir()
    hook.unlink()
    head = git(git_repo, "rev-parse", "HEAD")
    for cmd in ("apply", "revert"):
        p = run_apply(cmd, "--git", str(git_repo), check=False)
        assert p.returncode == 6, out(p)
        assert "git am is in progress" in p.stderr and "not started by apply.sh" in p.stderr
        assert "git am --continue" in p.stderr and "git am --abort" in p.stderr
        assert (git_repo / ".git" / "rebase-apply").is_dir() and git(git_repo, "rev-parse", "HEAD") == head
    st = run_apply("status", "--git", str(git_repo), check=False)
    assert st.returncode == 7 and "not started by apply.sh" in st.stdout
    git(git_repo, "am", "--abort")

    lock = git_repo / ".git" / "index.lock"
    lock.write_text("")
    p = run_apply("apply", "--git", str(git_repo), check=False)
    assert p.returncode == 8 and "git's own lock" in p.stderr and f"rm -f {lock}" in p.stderr, out(p)
    assert lock.exists() and git(git_repo, "rev-parse", "HEAD") == head
    lock.unlink()
    assert_settled(git_repo, pkg_pristine, "unchanged")


# ------------------------------------------------------------------ kill recovery
# Kill points inside git: each hook kills apply.sh's process group and its own (git and the
# hook: git runs in a session of its own) when it runs for the k-th time, as a power loss or
# an OOM killer taking everything would.
AM_HOOKS = ("pre-applypatch", "post-applypatch")     # before / after each patch's commit
REVERT_HOOKS = ("prepare-commit-msg", "post-commit")  # before / after each revert commit


def pidfile_of(repo: Path) -> Path:
    return repo.parent / f"{repo.name}.apply-pid"


def kill_hook(repo: Path, name: str, k: int) -> None:
    hook = repo / ".git" / "hooks" / name
    pf = pidfile_of(repo)
    hook.write_text(f"#!/bin/sh\nn=$(( $(cat .git/kill-count 2>/dev/null || echo 0) + 1 ))\n"
                    f"echo $n > .git/kill-count\n"
                    f"if [ $n -eq {k} ]; then\n"
                    f"  while [ ! -s {pf} ]; do sleep 0.01; done\n"
                    f"  kill -KILL -$(cat {pf}); kill -KILL 0\nfi\nexit 0\n")
    hook.chmod(0o755)


def run_killed(repo: Path, cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """apply.sh in a process group of its own (its pid, in pidfile_of(repo), is the group)."""
    proc = subprocess.Popen(["bash", str(APPLY), cmd, "--git", str(repo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            env={**os.environ, "PYTHON": sys.executable, **(env or {})})
    pidfile_of(repo).write_text(str(proc.pid))
    so, se = proc.communicate()
    pidfile_of(repo).unlink()
    return subprocess.CompletedProcess(proc.args, proc.returncode, so, se)


def rerun(repo: Path, cmd: str, ctx: str) -> subprocess.CompletedProcess:
    """Rerun after a kill; a stale index.lock is cleared with the command the error gives."""
    p = run_apply(cmd, "--git", str(repo), check=False)
    if p.returncode == 8:
        m = re.search(r"clear it with: (rm -f \S+)", p.stderr)
        assert m and "git's own lock" in p.stderr, ctx + out(p)
        subprocess.run(m.group(1).split(), check=True)
        p = run_apply(cmd, "--git", str(repo), check=False)
    assert p.returncode == 0, ctx + out(p)
    return p


def check_recovers(repo: Path, head0: str, ctx: str, pkg_pristine: dict, pkg_patched: dict) -> None:
    """From the killed state: `apply --git` ends patched with the series once on top of head0,
    and (on a copy) `revert --git` ends pristine."""
    other = copy_tree(repo, repo.parent / (repo.name + "-revert"))
    for r in (repo, other):
        for h in AM_HOOKS + REVERT_HOOKS:
            (r / ".git" / "hooks" / h).unlink(missing_ok=True)
    p = rerun(repo, "apply", ctx)
    assert_settled(repo, pkg_patched, ctx + out(p))
    trailers = our_commits_since(repo, head0)
    assert trailers[:N_PATCHES] == [str(i) for i in range(N_PATCHES, 0, -1)], ctx
    p = rerun(other, "revert", ctx)
    assert_settled(other, pkg_pristine, ctx + out(p))
    shutil.rmtree(other)


@pytest.mark.parametrize("cmd", ["apply", "revert"])
def test_git_kill_recovery(cmd, small_template, small_patched, tmp_path):
    """kill -9 of the whole run at every point of `git am` / `git revert` (before and after
    each commit) and at apply.sh's own steps; sometimes git's index.lock stays behind too.
    The next run recognises the interrupted operation as its own, aborts it, and finishes."""
    start = small_template if cmd == "apply" else small_patched
    pkg_pristine, pkg_patched = pkg_map(small_template), pkg_map(small_patched)
    hooks = AM_HOOKS if cmd == "apply" else REVERT_HOOKS
    cases = [(h, k) for k in range(1, N_PATCHES + 1) for h in hooks]
    cases += [("step", 1), ("step", 2)]  # our marker written / git op done, marker not removed
    for i, (how, k) in enumerate(cases):
        repo = copy_tree(start, tmp_path / f"case{i}")
        if how == "step":
            p = run_killed(repo, cmd, {"NSA_FASTPATH_FAULT_AT": str(k),
                                       "NSA_FASTPATH_FAULT_MODE": "kill"})
        else:
            kill_hook(repo, how, k)
            p = run_killed(repo, cmd)
        ctx = f"({cmd} killed at {how} #{k})\n{out(p)}"
        assert p.returncode == -9, ctx
        if i % 2:
            (repo / ".git" / "index.lock").write_text("")  # as a git killed mid-write leaves
        st = run_apply("status", "--git", str(repo), check=False)
        assert st.returncode in (0, 7), ctx + out(st)
        if st.returncode == 0:  # only a state the checkout really is in
            assert_settled(repo, pkg_pristine if "overall: pristine" in st.stdout else pkg_patched,
                           ctx + st.stdout)
        base = git(small_template, "rev-parse", "HEAD").strip()
        check_recovers(repo, base, ctx, pkg_pristine, pkg_patched)
        shutil.rmtree(repo)


@pytest.mark.parametrize("cmd", ["apply", "revert"])
def test_git_signal_and_failure_roll_back(cmd, small_template, small_patched, tmp_path):
    """SIGTERM (to apply.sh only, while git runs) and a failure at each of apply.sh's steps:
    exit 5, HEAD and files as before, no marker."""
    start = small_template if cmd == "apply" else small_patched
    want = pkg_map(start)
    for i, env in enumerate([{"NSA_FASTPATH_FAULT_AT": "1"}, {"NSA_FASTPATH_FAULT_AT": "2"},
                             {"NSA_FASTPATH_FAULT_AT": "2", "NSA_FASTPATH_FAULT_MODE": "sigterm"},
                             {"NSA_FASTPATH_FAULT_AT": "1", "NSA_FASTPATH_FAULT_MODE": "sighup"},
                             "hook"]):
        repo = copy_tree(start, tmp_path / f"case{i}")
        head0 = git(repo, "rev-parse", "HEAD")
        if env == "hook":  # a real SIGTERM from outside, while git is committing
            pidfile = tmp_path / "pid"
            hook = repo / ".git" / "hooks" / (AM_HOOKS if cmd == "apply" else REVERT_HOOKS)[0]
            hook.write_text(f"#!/bin/sh\nwhile [ ! -s {pidfile} ]; do sleep 0.01; done\n"
                            f"kill -TERM $(cat {pidfile})\nexit 0\n")
            hook.chmod(0o755)
            proc = subprocess.Popen(["bash", str(APPLY), cmd, "--git", str(repo)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHON": sys.executable})
            pidfile.write_text(str(proc.pid))
            so, se = proc.communicate()
            p = subprocess.CompletedProcess(proc.args, proc.returncode, so, se)
            hook.unlink()
            reason = "SIGTERM"
        else:
            p = run_apply(cmd, "--git", str(repo), env=env, check=False)
            reason = {"sigterm": "SIGTERM", "sighup": "SIGHUP"}.get(
                env.get("NSA_FASTPATH_FAULT_MODE"), "injected fault")
        ctx = f"({cmd}, {env})\n{out(p)}"
        assert p.returncode == 5 and reason in p.stderr and "unchanged" in p.stderr, ctx
        assert git(repo, "rev-parse", "HEAD") == head0, ctx
        assert_settled(repo, want, ctx)
        shutil.rmtree(repo)


@pytest.mark.parametrize("cmd", ["apply", "revert"])
def test_a_cleared_marker_is_said_and_a_dry_run_keeps_it(cmd, small_template, small_patched,
                                                        tmp_path):
    """Killed after git finished but before the marker went: status says partial (7); a dry
    run says what it would clear and clears nothing; the rerun says it cleared the marker,
    and then 'nothing else to do', not 'nothing to do'."""
    start = small_template if cmd == "apply" else small_patched
    repo = copy_tree(start, tmp_path / "repo")
    p = run_killed(repo, cmd, {"NSA_FASTPATH_FAULT_AT": "2", "NSA_FASTPATH_FAULT_MODE": "kill"})
    assert p.returncode == -9, out(p)
    marker = repo / ".git" / "nsa-fastpath-op"
    assert marker.exists()
    st = run_apply("status", "--git", str(repo), check=False)
    assert st.returncode == 7 and "overall: partial" in st.stdout, out(st)
    head = git(repo, "rev-parse", "HEAD")
    d = run_apply(cmd, "--dry-run", "--git", str(repo))
    assert "would remove it" in d.stdout and "dry run: done (nothing changed" in d.stdout, out(d)
    assert marker.exists() and git(repo, "rev-parse", "HEAD") == head, out(d)
    r = run_apply(cmd, "--git", str(repo))
    lines = r.stdout.splitlines()
    cleared = next(i for i, ln in enumerate(lines) if "found the marker of an interrupted" in ln)
    assert lines[cleared].endswith("removed it"), out(r)
    done = "already applied" if cmd == "apply" else "already pristine"
    last = next(ln for ln in lines if done in ln)
    assert last.endswith("nothing else to do" if cmd == "apply" else "nothing else to revert")
    assert not marker.exists()
    st = run_apply("status", "--git", str(repo), check=False)
    assert st.returncode == 0, out(st)
