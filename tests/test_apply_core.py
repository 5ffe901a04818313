"""Unit tests of scripts/nsa_apply (the core behind apply.sh), in-process and on a small
synthetic site-packages tree, so that every fault kind can hit every step: an error, ENOSPC
(the disk then stays full), SIGINT/SIGTERM/SIGHUP, a closed output pipe, and a crash (the
process dies: no rollback, the next run must finish). Plus the pieces one by one: the
transaction's undo, the command line, the lock, signals, output, the manifest checks.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from applytools import tree_map
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from nsa_apply import cli, errors as E, manifest as M  # noqa: E402
from nsa_apply.errors import Fail, Interrupted  # noqa: E402
from nsa_apply.faults import MODES, FaultHook  # noqa: E402
from nsa_apply.lock import DirLock, held_by_other  # noqa: E402
from nsa_apply.output import Log  # noqa: E402
from nsa_apply.signals import Signals  # noqa: E402
from nsa_apply.tree import pyc_files  # noqa: E402
from nsa_apply.txn import Txn  # noqa: E402

TAG = sys.implementation.cache_tag
PRISTINE = {
    "sglang/__init__.py": b"",
    "sglang/srt/a.py": b"A = 1\n",
    "sglang/srt/other.py": b"O = 1\n",
    "sglang/srt/sub/b.py": b"B = 1\n",
    f"sglang/srt/__pycache__/a.{TAG}.pyc": b"",  # pip's bytecode: compiled by pip_bytecode()
    f"sglang/srt/sub/__pycache__/b.{TAG}.opt-1.pyc": b"",
    "sglang-0.5.8.dist-info/METADATA": b"Name: sglang\nVersion: 0.5.8\n",
    "sglang-0.5.8.dist-info/RECORD": b"sglang/srt/a.py,sha256=x,6\n",
}
OURS = {  # replace rows first, then add rows (one in a new nested directory)
    "sglang/srt/a.py": b"A = 2  # nsa-fastpath\n",
    "sglang/srt/sub/b.py": b"B = 2  # nsa-fastpath\n",
    "sglang/srt/new.py": b"N = 1\n",
    "sglang/srt/newdir/deep/x.cpp": b"// nsa-fastpath kernel\n",
}


def h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def pip_bytecode(root: Path) -> Path:
    """The .pyc files of PRISTINE as pip writes them: real bytecode of their source (revert
    restores only bytecode that verifies against the source it sits beside)."""
    import py_compile
    for rel in PRISTINE:
        if rel.endswith(".pyc"):
            pyc = root / rel
            stem = pyc.name.split(".")[0]
            opt = 1 if ".opt-1." in pyc.name else -1
            py_compile.compile(str(pyc.parent.parent / f"{stem}.py"), cfile=str(pyc),
                               optimize=opt, doraise=True)
    return root


@pytest.fixture
def fast_tmp(tmp_path):
    """tmp_path, on a tmpfs when root may mount one: these loops run apply thousands of
    times, and on a busy disk its fsyncs would dominate (the code path is the same)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "nsa-fastpath-core", str(mnt)],
        capture_output=True).returncode == 0
    try:
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def world(fast_tmp):
    """Our inputs (manifest + overlay) and the pristine / patched maps of the small tree."""
    tmp_path = fast_tmp
    overlay = write_tree(tmp_path / "overlay", OURS)
    lines = ["# target\tsglang==0.5.8"]
    for rel, data in OURS.items():
        pre = h(PRISTINE[rel]) if rel in PRISTINE else "-"
        lines.append(f"{'replace' if rel in PRISTINE else 'add'}\t{rel}\t{pre}\t{h(data)}")
    (tmp_path / "manifest.tsv").write_text("\n".join(lines) + "\n")
    env = {"NSA_FASTPATH_MANIFEST": str(tmp_path / "manifest.tsv"),
           "NSA_FASTPATH_OVERLAY": str(overlay), "NSA_FASTPATH_STATUS_FILES_ONLY": "1",
           "NSA_FASTPATH_LOCK_TIMEOUT": "0"}
    w = {"tmp": tmp_path, "env": env, "n": 0}
    template = pip_bytecode(write_tree(tmp_path / "pristine", PRISTINE))
    w["pristine"] = tree_map(template)
    site = fresh(w, w["pristine"], template)
    assert run(w, "apply", site)[0] == 0
    w["patched"] = tree_map(site)
    w["patched_tree"] = site
    w["pristine_tree"] = template
    return w


def fresh(w: dict, want: dict, src: Path) -> Path:
    w["n"] += 1
    dst = w["tmp"] / f"t{w['n']}"
    shutil.copytree(src, dst, symlinks=True)
    assert tree_map(dst) == want
    return dst


class SimulatedCrash(BaseException):
    """The process dies here: nothing after it runs (no rollback, no cleanup)."""


class Broken(io.StringIO):
    def write(self, s):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def run(w: dict, cmd: str, site: Path, at: int = 0, mode: str = "error", extra=()):
    out, err = io.StringIO(), io.StringIO()
    log = Log(out=out, err=err, trace=True)

    def crash():
        raise SimulatedCrash()

    def break_output():
        log.out, log.err = Broken(), Broken()

    hook = FaultHook(at, mode, crash=crash, break_output=break_output)
    rc = cli.main([cmd, "--target", str(site), *extra], env=w["env"], log=log, hook=hook)
    return rc, out.getvalue(), err.getvalue()


def steps_of(w: dict, cmd: str) -> int:
    site = fresh(w, w["pristine" if cmd == "apply" else "patched"],
                 w["pristine_tree" if cmd == "apply" else "patched_tree"])
    rc, out, _ = run(w, cmd, site)
    assert rc == 0
    return sum(1 for ln in out.splitlines() if ln.startswith("[nsa-fastpath] step "))


# ------------------------------------------------------------------ every fault, every step
@pytest.mark.parametrize("cmd", ["apply", "revert"])
def test_every_fault_at_every_step(cmd, world):
    w = world
    start, end = ("pristine", "patched") if cmd == "apply" else ("patched", "pristine")
    src = w[f"{start}_tree"]
    n_steps = steps_of(w, cmd)
    assert n_steps >= (20 if cmd == "apply" else 8)
    outcomes = {}
    for mode in MODES:
        if mode in ("fill", "slow"):
            continue  # need a real filesystem / a real clock: test_apply_faults.py
        for n in range(1, n_steps + 2):
            site = fresh(w, w[start], src)
            try:
                rc, out, err = run(w, cmd, site, n, mode)
            except SimulatedCrash:
                rc, out, err = "crash", "", ""
            ctx = f"({cmd}, {mode} at step {n} of {n_steps}, exit {rc})\n{out}{err}"
            got = tree_map(site)
            if n > n_steps or mode == "sigpipe":
                assert rc == 0 and got == w[end], ctx
            elif mode == "kill":
                assert rc == "crash", ctx
                check_crashed(w, site, ctx)
            else:
                assert rc == E.ROLLED_BACK and "rolled back" in err, ctx
                assert got == w[start], ctx
            outcomes[mode, rc] = outcomes.get((mode, rc), 0) + 1
            shutil.rmtree(site)
    assert outcomes == {(m, "crash" if m == "kill" else 0 if m == "sigpipe" else E.ROLLED_BACK):
                        n_steps for m in MODES if m not in ("fill", "slow")} | {
        (m, 0): 1 for m in MODES if m not in ("fill", "slow", "sigpipe")} | {
        ("sigpipe", 0): n_steps + 1}, outcomes


def check_crashed(w: dict, site: Path, ctx: str) -> None:
    """status claims only the truth; apply and (on a copy) revert both finish the job."""
    rc, out, _ = run(w, "status", site)
    if rc == 0:
        assert tree_map(site) == w["pristine" if "overall: pristine" in out else "patched"], ctx
    else:
        assert rc == E.PARTIAL and "overall: partial" in out, ctx + out
    other = w["tmp"] / (site.name + "-other")
    shutil.copytree(site, other, symlinks=True)
    assert run(w, "apply", site)[0] == 0, ctx
    assert tree_map(site) == w["patched"], ctx
    assert run(w, "revert", other)[0] == 0, ctx
    assert tree_map(other) == w["pristine"], ctx
    shutil.rmtree(other)


@pytest.mark.parametrize("cmd", ["apply", "revert"])
def test_rollback_writes_nothing(cmd, world, monkeypatch):
    """Once a step fails with ENOSPC, nothing may write data or create a directory any more
    (a real full disk): the rollback only renames, links and removes."""
    w = world
    start = "pristine" if cmd == "apply" else "patched"
    n_steps = steps_of(w, cmd)
    real_open, real_write, real_mkdir = os.open, os.write, os.mkdir
    full = [False]

    def guard(real, creating=lambda *a, **k: True):
        def f(*a, **k):
            if full[0] and creating(*a, **k):
                raise OSError(errno.ENOSPC, "disk full (test)", str(a[0]))
            return real(*a, **k)
        return f

    monkeypatch.setattr(os, "open", guard(real_open, lambda p, flags, *a, **k: flags & os.O_CREAT))
    monkeypatch.setattr(os, "write", guard(real_write))
    monkeypatch.setattr(os, "mkdir", guard(real_mkdir))

    class FullAfter(FaultHook):
        def before(self, n, kind, what):
            if n == self.at:
                full[0] = True
                raise OSError(errno.ENOSPC, "disk full (test)", what)

    for n in range(1, n_steps + 1):
        site = fresh(w, w[start], w[f"{start}_tree"])
        full[0] = False
        out, err = io.StringIO(), io.StringIO()
        rc = cli.main([cmd, "--target", str(site)], env=w["env"], log=Log(out, err),
                      hook=FullAfter(n, "error"))
        full[0] = False
        ctx = f"({cmd}, disk full at step {n})\n{out.getvalue()}{err.getvalue()}"
        assert rc == E.ROLLED_BACK, ctx
        assert tree_map(site) == w[start], ctx
        shutil.rmtree(site)


def test_apply_rollback_removes_added_files_first(world):
    """The issue's order: first remove what we added, then put the originals back."""
    w = world
    site = fresh(w, w["pristine"], w["pristine_tree"])
    rc, out, err = run(w, "apply", site, at=10 ** 6)  # record the complete run's steps
    assert rc == 0
    steps = [ln.split(": ", 1)[1] for ln in out.splitlines() if "] step " in ln]
    added = [i for i, s in enumerate(steps) if s.startswith("renamed") and
             ("new.py" in s.split(" -> ")[1] or "x.cpp" in s.split(" -> ")[1])]
    replaced = [i for i, s in enumerate(steps) if s.startswith("renamed") and
                s.split(" -> ")[1].endswith(("/srt/a.py", "/sub/b.py"))]
    assert added and replaced and min(added) > max(replaced), steps
    # (a rollback undoes steps newest first: the added files go before any original returns)


# ------------------------------------------------------------------ transaction primitives
def test_txn_undo_restores_everything(tmp_path):
    root = write_tree(tmp_path / "r", {"keep.txt": b"old", "gone.txt": b"bye", "d/f": b"f"})
    stage = root / "stage"
    stage.mkdir()
    before = tree_map(root)
    t = Txn(Log(io.StringIO(), io.StringIO()), FaultHook(), Signals(), stage)
    t.put(root / "keep.txt", b"new", 0o600)
    t.put(root / "made.txt", b"made")
    t.mkdir(root / "nd")
    t.link(root / "made.txt", root / "nd" / "link")
    t.remove(root / "gone.txt")
    t.remove(root / "d")
    t.move_over(root / "made.txt", root / "keep.txt")
    assert (root / "keep.txt").read_bytes() == b"made" and not (root / "gone.txt").exists()
    assert t.steps == 11 and len(t.undo) == 11
    assert t.rollback() == []
    assert tree_map(root) == before
    t = Txn(Log(io.StringIO(), io.StringIO()), FaultHook(), Signals(), stage)
    t.put(root / "keep.txt", b"committed")
    t.commit()
    assert t.undo == [] and t.rollback() == [] and (root / "keep.txt").read_bytes() == b"committed"


def test_txn_write_failure_leaves_no_temp_file(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    t = Txn(Log(io.StringIO(), io.StringIO()), FaultHook(1, "enospc"), Signals(), root)
    with pytest.raises(OSError) as e:
        t.put(root / "f", b"x" * 10000)
    assert e.value.errno == errno.ENOSPC and list(root.iterdir()) == []


# ------------------------------------------------------------------ command line
@pytest.mark.parametrize("argv,want", [
    ([], (None, None, None, False)),      # no command: main() prints usage, exit 2
    (["help"], ("help", None, None, False)),
    (["status"], ("status", None, None, False)),
    (["revert", "--target", "/x", "-n"], ("revert", "/x", None, True)),
    (["--git=/co", "apply"], ("apply", None, "/co", False)),
    (["apply", "--target", "./-odd"], ("apply", "./-odd", None, False)),
    (["status", "--allow-source-tree"], ("status", None, None, False)),  # setup.sh passes it
])
def test_parse_accepts(argv, want):
    a = cli.parse(argv)
    assert (a.cmd, a.target, a.git, a.dry) == want
    assert a.allow_source == ("--allow-source-tree" in argv)


@pytest.mark.parametrize("argv,words", [
    (["apply", "apply"], "more than one command"),
    (["--target"], "needs a directory"),
    (["--target="], "empty value"),
    (["--git", ""], "empty value"),
    (["--target", "/a", "--target=/a"], "given more than once"),
    (["--git", "/a", "--git", "/b"], "given more than once"),
    (["-n", "-n"], "given more than once"),
    (["--target", "/a", "--git", "/b"], "exclude each other"),
    (["--target", "-n"], "got the option '-n'"),
    (["--force"], "unknown argument '--force'"),
    (["apply", "--forget-state"], "--forget-state goes with `revert`"),
    (["revert", "--forget-state", "--git", "/co"], "--forget-state goes with `revert`"),
    (["apply", "--allow-source-tree", "--git", "/co"], "--allow-source-tree goes with a "
                                                       "site-packages target"),
    (["apply", "--allow-source-tree", "--allow-source-tree"], "given more than once"),
])
def test_parse_rejects(argv, words):
    with pytest.raises(Fail) as e:
        cli.parse(argv)
    assert e.value.code == E.USAGE and words in str(e.value) and "Nothing changed" in str(e.value)


def test_help_is_complete():
    out = io.StringIO()
    assert cli.main(["--help"], env={}, log=Log(out, io.StringIO())) == 0
    text = out.getvalue()
    for code in range(9):
        assert f"\n  {code}  " in text
    for mode in MODES:
        assert mode in text


def test_help_says_only_true_things():
    """--help names the real inputs, describes the upgrade path, and carries no durations
    (they depend on the machine: README and docs state them, measured) and no history."""
    import re
    out = io.StringIO()
    assert cli.main(["--help"], env={}, log=Log(out, io.StringIO())) == 0
    text = out.getvalue()
    releases = sorted(p.stem for p in (ROOT / "manifests").glob("*.tsv"))
    listed = re.search(r"This checkout has sets for: (.+)\.\n", text)
    assert listed and sorted(listed.group(1).split(", ")) == releases, text[:600]
    assert "manifest.tsv next to" not in text and "no longer" not in text
    assert not re.search(r"\b\d+(\.\d+)? ?(s|sec|seconds?|min|minutes?)\b", text), \
        re.search(r".*\b\d+(\.\d+)? ?(s|sec|seconds?|min|minutes?)\b.*", text).group(0)
    upgrade = " ".join(text.split("\nUpgrading SGLang")[1].split("\n\n")[0].split())
    for words in ("pip install -U sglang", "upgraded from A to B while patched", "apply ",
                  "revert ", "RECORD", "--git"):
        assert words in upgrade, words


# ------------------------------------------------------------------ lock, signals, output
def test_lock_is_shared_by_every_path(tmp_path):
    d = tmp_path / "tree" / "sglang"
    d.mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "tree")
    log = Log(io.StringIO(), io.StringIO())
    first = DirLock(d, "tree")
    first.acquire(0, log)
    assert held_by_other(tmp_path / "alias" / "sglang")
    with pytest.raises(Fail) as e:
        DirLock(tmp_path / "alias" / "sglang", "alias").acquire(0.05, log)
    assert e.value.code == E.BUSY and "holds the lock" in str(e.value)
    first.release()
    assert not held_by_other(d)
    second = DirLock(tmp_path / "alias" / "sglang", "alias")
    second.acquire(0, log)
    second.release()
    assert list(tmp_path.rglob("*lock*")) == []  # nothing created for the lock


def test_lock_follows_a_replaced_directory(tmp_path, monkeypatch):
    """If the directory is replaced while a run waits, the run locks the new one."""
    d = tmp_path / "sglang"
    d.mkdir()
    lock = DirLock(d, "tree")
    real_flock, calls = fcntl.flock, [0]

    def flock(fd, op):
        calls[0] += 1
        if calls[0] == 1:  # first attempt: someone swaps the directory meanwhile
            os.rename(d, tmp_path / "old")
            d.mkdir()
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    lock.acquire(1, Log(io.StringIO(), io.StringIO()))
    assert os.path.samestat(os.fstat(lock.fd), os.stat(d))
    lock.release()


def test_signals_are_deferred_inside_a_transaction():
    s = Signals()
    s.install()
    try:
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
        s.pending = None
        with s.deferred():
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(1000):
                pass
            assert s.pending == "SIGHUP"
            with pytest.raises(Interrupted):
                s.check()
        assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    finally:
        s.restore()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_output_into_a_closed_pipe_is_dropped(tmp_path):
    r, wfd = os.pipe()
    os.close(r)
    stream = os.fdopen(os.dup(wfd), "w")
    os.close(wfd)
    log = Log(out=stream, err=io.StringIO())
    log.say("first")  # EPIPE: dropped, not raised
    log.say("second")
    assert log.lost


# ------------------------------------------------------------------ our inputs
def test_manifest_and_overlay_checks(world, tmp_path):
    m = M.load(Path(world["env"]["NSA_FASTPATH_MANIFEST"]))
    overlay = Path(world["env"]["NSA_FASTPATH_OVERLAY"])
    assert [r.rel for r in m.rows] == list(OURS) and m.version == "0.5.8"
    M.check_overlay(m, overlay)
    (overlay / "sglang/srt/extra.cpp").write_text("//\n")
    (overlay / "sglang/srt/__pycache__").mkdir()
    (overlay / "sglang/srt/__pycache__/a.pyc").write_bytes(b"")  # caches are not ours
    with pytest.raises(Fail) as e:
        M.check_overlay(m, overlay)
    assert "overlay/sglang/srt/extra.cpp is not listed" in str(e.value)
    assert "__pycache__" not in str(e.value)
    (overlay / "sglang/srt/extra.cpp").unlink()
    (overlay / "sglang/srt/new.py").write_text("changed\n")
    with pytest.raises(Fail, match="overlay/sglang/srt/new.py has sha256"):
        M.check_overlay(m, overlay)
    (overlay / "sglang/srt/new.py").unlink()
    with pytest.raises(Fail, match="lists sglang/srt/new.py, which .*overlay lack"):
        M.check_overlay(m, overlay)
    for bad, words in [("replace\tsglang/x.py\t-\t" + "0" * 64, "bad pristine sha256"),
                       ("add\tother/x.py\t-\t" + "0" * 64, "bad path"),
                       ("add\tsglang/x.py\t-", "3 columns"),
                       ("move\tsglang/x.py\t-\t" + "0" * 64, "unknown kind")]:
        p = tmp_path / "bad.tsv"
        p.write_text("# target\tsglang==0.5.8\n" + bad + "\n")
        with pytest.raises(Fail, match=words) as e:
            M.load(p)
        assert e.value.code == E.TARGET


def test_pyc_names(tmp_path):
    src = write_tree(tmp_path, {"mod.py": b"", "modx.py": b""}) / "mod.py"
    assert pyc_files(src) == []
    names = [f"mod.{TAG}.pyc", f"mod.{TAG}.opt-1.pyc", f"mod.{TAG}.opt-2.pyc", "mod.pyc"]
    others = [f"modx.{TAG}.pyc", "mod.a.b.c.pyc", f"mod.{TAG}.pyc.tmp"]
    write_tree(tmp_path, {f"__pycache__/{n}": b"" for n in names[:3] + others})
    write_tree(tmp_path, {"mod.pyc": b""})
    assert sorted(p.name for p in pyc_files(src)) == sorted(names)
    assert pyc_files(tmp_path / "kernel.cu") == []


def test_fsync_before_every_rename_and_commit(world, monkeypatch):
    """Power loss: every file is fsync'd before it is renamed into place, the backups are
    durable before the first SGLang file is replaced, and every directory apply changed is
    fsync'd before the journal says done."""
    w = world
    site = fresh(w, w["pristine"], w["pristine_tree"])
    events = []
    real = {n: getattr(os, n) for n in ("fsync", "rename", "replace", "link")}

    def rec(name):
        def f(*a, **k):
            if name == "fsync":
                events.append(("fsync", os.readlink(f"/proc/self/fd/{a[0]}")))
            else:
                events.append((name, str(a[0]), str(a[1])))
            return real[name](*a, **k)
        return f

    for n in real:
        monkeypatch.setattr(os, n, rec(n))
    rc, out, err = run(w, "apply", site)
    for n, f in real.items():
        monkeypatch.setattr(os, n, f)
    assert rc == 0, out + err
    state = str(site / "sglang/.nsa_fastpath")
    synced = lambda i, p: ("fsync", p) in events[:i]  # noqa: E731
    moves = [(i, e) for i, e in enumerate(events) if e[0] in ("rename", "replace")]
    for i, (_, src, dst) in moves:
        if "/tmp-" in src and not src.endswith(".old"):
            assert synced(i, src), f"{dst} renamed into place before its data was fsync'd"
    first_sglang = min(i for i, (_, src, dst) in moves if not dst.startswith(state))
    for i, e in enumerate(events[:first_sglang]):
        if e[0] == "link" and e[2].startswith(state + "/backup/"):
            assert ("fsync", os.path.dirname(e[2])) in events[i:first_sglang], e
    last = moves[-1]
    assert last[1][2] == state + "/journal"
    for i, (_, src, dst) in moves:
        if not dst.startswith(state):
            assert ("fsync", os.path.dirname(dst)) in events[i:last[0]], dst


def test_new_directories_and_files_ignore_the_umask(world):
    """Under umask 077 the directories apply creates get their parent's permissions and our
    files 0644 (or the replaced file's mode), so the user who serves can read them."""
    w = world
    site = fresh(w, w["pristine"], w["pristine_tree"])
    os.chmod(site / "sglang/srt/sub/b.py", 0o664)
    old = os.umask(0o077)
    try:
        assert run(w, "apply", site)[0] == 0
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(site / p).st_mode)  # noqa: E731
    for d in ("sglang/srt/newdir", "sglang/srt/newdir/deep", "sglang/.nsa_fastpath",
              "sglang/.nsa_fastpath/backup/sglang/srt/sub"):
        assert mode(d) == mode("sglang/srt"), d
    assert mode("sglang/srt/new.py") == 0o644 and mode("sglang/srt/sub/b.py") == 0o664
