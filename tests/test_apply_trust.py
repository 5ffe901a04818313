"""scripts/apply.sh trusts nothing it reads back, and its exit codes and messages stay true
(issue 16; the apply.sh messages of issue 15).

- A damaged state directory (truncated or edited recorded manifest, corrupt journal) changes
  nothing, says what is damaged and the way out, and that way out works.
- Corrupt backed-up bytecode is never restored.
- A signal after the commit point keeps exit 0; one during start-up gives no traceback;
  closed or failing stdout/stderr never turn into "a bug"; $PYTHON must be a Python 3.10+.
- Advice fits the case: read-only file system and immutable directories named as such, a
  `.nsa_fastpath` file refused truly, a user's look-alike temp file kept, revert on a full
  disk with __pycache__ deleted.
- Issue 15's messages: apply over a reinstall, the revert summary, an uninstalled tree, the
  dry-run order, no default command.
"""
from __future__ import annotations

import importlib.util
import io
import os
import py_compile
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from applytools import (  # noqa: F401  (fixtures are used by name)
    ADDED_ROWS, REPLACED, STATE, _tree_hygiene, assert_tree, link_tree, out, patched_map,
    pristine_map, rewrite, run_apply, sha, site, status, tree_map)
from conftest import APPLY, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from nsa_apply import preflight  # noqa: E402
from nsa_apply.verify import bytecode_matches  # noqa: E402

N_FILES = len(REPLACED) + len(ADDED_ROWS)


def patched_copy(patched_template: Path, tmp_path: Path, name: str = "site") -> Path:
    return link_tree(patched_template, tmp_path / name)


def forget_state(site: Path) -> subprocess.CompletedProcess:
    return run_apply("revert", "--forget-state", "--target", str(site), check=False)


def assert_refused_as_damaged(site: Path, before: dict, what: str) -> str:
    """revert, apply and status all refuse (6), change nothing and give the way out."""
    for cmd in ("revert", "apply"):
        p = run_apply(cmd, "--target", str(site), check=False)
        assert p.returncode == 6, out(p)
        assert "is damaged" in p.stderr and what in p.stderr and "Nothing changed" in p.stderr
        assert "revert --forget-state" in p.stderr and "reverted:" not in p.stdout, out(p)
        assert tree_map(site) == before, f"{cmd} changed a damaged tree\n{out(p)}"
    st = status(site)
    assert st.returncode == 6 and "overall: damaged" in st.stdout and what in st.stdout, out(st)
    return st.stdout


# ------------------------------------------------------------------ the state read back
@pytest.mark.parametrize("cut", ["keep 11 lines", "drop every replace row"])
def test_damaged_recorded_manifest_changes_nothing(cut, patched_template, tmp_path,
                                                   pristine_map):
    """Issue 16 item 1: a truncated recorded manifest made revert restore only the rows it
    still listed, delete the other backups and exit 0. Now: exit 6, nothing changed, and the
    way out it names (revert --forget-state) ends pristine."""
    site = patched_copy(patched_template, tmp_path)
    rec = site / STATE / "manifest.tsv"
    lines = rec.read_text().splitlines(keepends=True)
    kept = lines[:11] if cut == "keep 11 lines" else [ln for ln in lines
                                                      if not ln.startswith("replace")]
    rewrite(rec, "".join(kept).encode())
    before = tree_map(site)
    assert_refused_as_damaged(site, before, "manifest.tsv has sha256")
    p = forget_state(site)
    assert p.returncode == 0 and "reverted:" in p.stdout, out(p)
    assert_tree(site, pristine_map, "pristine after revert --forget-state", out(p))


def forge(site: Path, edit) -> None:
    """A consistent edit of the recorded state: manifest.tsv changed by `edit(lines)`, and the
    journal's manifest_sha256 updated to match (what a careful hand, or a tool, would do)."""
    import hashlib
    rec, journal = site / STATE / "manifest.tsv", site / STATE / "journal"
    data = "".join(edit(rec.read_text().splitlines(keepends=True))).encode()
    rewrite(rec, data)
    rewrite(journal, re.sub(rb"manifest_sha256=[0-9a-f]{64}",
                            b"manifest_sha256=" + hashlib.sha256(data).hexdigest().encode(),
                            journal.read_bytes()))


FORGERIES = {
    # the issue's: revert deleted SGLang's server_args.py, status then said pristine
    "an SGLang file listed as added": (
        lambda site: lambda lines: lines + [f"add\tsglang/srt/server_args.py\t-\t"
                                            f"{sha(site / 'sglang/srt/server_args.py')}\n"],
        "lists sglang/srt/server_args.py as a file nsa-fastpath added: it is a file no release "
        "set of this checkout adds"),
    "a replaced file listed as added": (
        lambda site: lambda lines: [ln.replace("replace\t", "add\t", 1).replace(
            ln.split("\t")[2], "-") if ln.startswith(f"replace\t{REPLACED[0]}\t") else ln
            for ln in lines],
        f"lists {REPLACED[0]} as a file nsa-fastpath added: it is a file SGLang ships"),
    "an original of no release": (
        lambda site: lambda lines: [ln.replace(ln.split("\t")[2], "0" * 64)
                                    if ln.startswith(f"replace\t{REPLACED[0]}\t") else ln
                                    for ln in lines],
        f"gives {REPLACED[0]} the original sha256 {'0' * 64}, which is no supported SGLang "
        "release's"),
}


@pytest.mark.parametrize("what", FORGERIES)
def test_a_consistent_forgery_of_the_recorded_manifest_is_refused(what, patched_template,
                                                                    tmp_path, pristine_map):
    """A recorded row may only name a file some release set in manifests/ adds (ours to
    remove), or one it replaces with an original a supported release has: anything else,
    even with the journal's sha256 updated, is refused (6) and nothing changes; the way out
    it names ends pristine with every SGLang file in place."""
    site = patched_copy(patched_template, tmp_path)
    edit, words = FORGERIES[what]
    forge(site, edit(site))
    before = tree_map(site)
    st = assert_refused_as_damaged(site, before, words)
    assert "overall: pristine" not in st
    p = forget_state(site)
    assert p.returncode == 0 and "reverted:" in p.stdout, out(p)
    assert_tree(site, pristine_map, "pristine after revert --forget-state", out(p))


def test_a_deleted_recorded_manifest_is_damage(patched_template, tmp_path, pristine_map):
    """manifest.tsv deleted while our files are in the tree: damage (6), as the help says,
    with the way out; that way out ends pristine."""
    site = patched_copy(patched_template, tmp_path)
    (site / STATE / "manifest.tsv").unlink()
    before = tree_map(site)
    assert_refused_as_damaged(site, before, "manifest.tsv is missing, while files of "
                              "nsa-fastpath's are in the tree")
    p = forget_state(site)
    assert p.returncode == 0 and "reverted:" in p.stdout, out(p)
    assert_tree(site, pristine_map, "pristine after revert --forget-state", out(p))


def test_corrupt_journal_changes_nothing(patched_template, tmp_path, pristine_map):
    site = patched_copy(patched_template, tmp_path)
    rewrite(site / STATE / "journal", b"op=apply\nstate=d\x00ne\n")
    before = tree_map(site)
    assert_refused_as_damaged(site, before, "not a journal apply.sh wrote")
    p = forget_state(site)
    assert p.returncode == 0, out(p)
    assert_tree(site, pristine_map, "pristine after revert --forget-state", out(p))


def test_forget_state_still_checks_every_file(patched_template, pristine_template, tmp_path,
                                              pristine_map):
    """--forget-state ignores only the journal and the recorded manifest: a file that is
    neither SGLang's nor ours still refuses it (4, nothing changed), with the reinstall
    advice; after that reinstall it ends pristine."""
    site = patched_copy(patched_template, tmp_path)
    rewrite(site / STATE / "journal", b"garbage\n")
    rel = REPLACED[0]
    rewrite(site / rel, b"# edited by hand\n")
    before = tree_map(site)
    p = forget_state(site)
    assert p.returncode == 4 and "pip install --force-reinstall --no-deps sglang==0.5.8" \
        in p.stderr and rel in p.stderr, out(p)
    assert tree_map(site) == before
    rewrite(site / rel, (pristine_template / rel).read_bytes())  # what pip's reinstall does
    p = forget_state(site)
    assert p.returncode == 0, out(p)
    assert_tree(site, pristine_map, "pristine", out(p))


def test_corrupt_backup_of_a_source_refuses(patched_template, tmp_path):
    site = patched_copy(patched_template, tmp_path)
    rewrite(site / STATE / "backup" / REPLACED[1], b"not the original\n")
    before = tree_map(site)
    p = run_apply("revert", "--target", str(site), check=False)
    assert p.returncode == 6 and f"{REPLACED[1]} is corrupt" in p.stderr, out(p)
    assert "Nothing changed" in p.stderr and tree_map(site) == before


def compile_replaced(site: Path) -> list[Path]:
    """pip's bytecode of the replaced modules, as `pip install` (which compiles) leaves it."""
    out_ = []
    for rel in REPLACED:
        pyc = Path(importlib.util.cache_from_source(str(site / rel)))
        py_compile.compile(str(site / rel), cfile=str(pyc), doraise=True)
        out_.append(pyc)
    return out_


def test_corrupt_backed_up_bytecode_is_not_restored(site, pristine_map):
    """Issue 16 item 2: bytes after the 16-byte header of a backed-up .pyc overwritten.
    revert restores the sources and every bytecode file that verifies, not that one, and says
    so; the tree is SGLang's, with Python free to write that bytecode anew."""
    pycs = compile_replaced(site)
    want = tree_map(site)
    run_apply("apply", "--target", str(site))
    bad = site / STATE / "backup" / pycs[0].relative_to(site)
    data = bad.read_bytes()
    rewrite(bad, data[:16] + bytes(len(data) - 16))
    p = run_apply("revert", "--target", str(site))
    assert "not valid bytecode" in p.stderr and "not restored" in p.stderr, out(p)
    got = tree_map(site)
    gone = str(pycs[0].relative_to(site))
    assert gone not in got and {k: v for k, v in want.items() if k != gone} == got, out(p)
    for pyc in pycs[1:]:
        assert pyc.exists()


def test_bytecode_check(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("X = 1\ndef f():\n    return X\n")
    pyc = tmp_path / "m.pyc"
    py_compile.compile(str(src), cfile=str(pyc), doraise=True)
    assert bytecode_matches(pyc, src)
    data = pyc.read_bytes()
    pyc.write_bytes(data[:16] + b"\0" * (len(data) - 16))
    assert not bytecode_matches(pyc, src), "corrupt code object"
    other = tmp_path / "o.py"
    other.write_text("X = 2\ndef f():\n    return X\n")
    os.utime(other, ns=(os.stat(src).st_atime_ns, os.stat(src).st_mtime_ns))
    py_compile.compile(str(other), cfile=str(pyc), doraise=True)
    assert not bytecode_matches(pyc, src), "another source's bytecode with a matching stamp"
    py_compile.compile(str(src), cfile=str(pyc), doraise=True)
    os.utime(src, ns=(0, 10**9))
    assert not bytecode_matches(pyc, src), "stale stamp"
    pyc.write_bytes(b"\0\0\0\0" + data[4:])
    assert not bytecode_matches(pyc, src), "another Python's magic number"


# ------------------------------------------------------------------ exit codes
def wait_for_line(proc: subprocess.Popen, prefix: str) -> list[str]:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            return seen
    return seen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_after_the_commit_keeps_exit_0(sig, site, pristine_map, patched_map):
    """Issue 16 item 4: a signal to the process group right after the final "applied:" /
    "reverted:" line: the tree is complete, so the exit code is 0 and nothing claims
    "nothing changed"."""
    for cmd, want, line in (("apply", patched_map, "[nsa-fastpath] applied:"),
                            ("revert", pristine_map, "[nsa-fastpath] reverted:")):
        proc = subprocess.Popen(["bash", str(APPLY), cmd, "--target", str(site)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True,
                                env={**os.environ, "PYTHON": sys.executable})
        seen = wait_for_line(proc, line)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        rest, err = proc.communicate(timeout=60)
        ctx = f"({cmd}, {sig.name})\n{''.join(seen)}{rest}{err}"
        assert seen and seen[-1].startswith(line), ctx
        assert proc.returncode == 0, ctx
        assert "nothing changed" not in err and "Traceback" not in err, ctx
        assert_tree(site, want, f"the result of {cmd}", ctx)


def test_signal_during_start_up_gives_no_traceback(site, pristine_map):
    """SIGINT at 24 points spread over a whole run (bash checking $PYTHON, Python starting,
    imports, the first reads): exit 5 (nothing changed), death by SIGINT while bash checks
    $PYTHON, or 0 if the run was done (a signal in Python's first milliseconds is ignored);
    never a traceback or exit 1."""
    t0 = time.monotonic()
    run_apply("revert", "--target", str(site))
    step = (time.monotonic() - t0) / 20
    codes = set()
    for i in range(24):
        proc = subprocess.Popen(["bash", str(APPLY), "revert", "--target", str(site)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True,
                                env={**os.environ, "PYTHON": sys.executable})
        time.sleep(i * step)
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        so, se = proc.communicate(timeout=60)
        ctx = f"(SIGINT after {i * step:.3f} s: exit {proc.returncode})\n{so}{se}"
        assert proc.returncode in (0, 5, -2, 130), ctx
        assert "Traceback" not in se and "bug in apply.sh" not in se, ctx
        if proc.returncode == 5:
            assert "interrupted by SIGINT before any change: nothing changed" in se, ctx
        codes.add(proc.returncode)
        assert_tree(site, pristine_map, "unchanged", ctx)
    assert 5 in codes, codes


FINALIZER_SIGNAL = """
import os, signal
from nsa_apply.errors import Interrupted
from nsa_apply.signals import Signals

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # delivered before __del__ returns

signals = Signals()
signals.install()
obj = Finalized()
del obj
assert signals.pending == "SIGINT", signals.pending
try:
    signals.check()
except Interrupted:
    print("raised by check()")
"""


def test_a_signal_inside_a_finalizer_is_noted_not_printed():
    """A signal that lands while Python runs a `__del__` (the git harness caught one in a
    finished Popen's) is noted and raised by the next check(): raised there, Python would print
    it as "Exception ignored ... Traceback" and drop it. In a process of its own, as apply.sh."""
    proc = subprocess.run([sys.executable, "-c", FINALIZER_SIGNAL], capture_output=True, text=True,
                          cwd=ROOT / "scripts", timeout=60)
    assert proc.returncode == 0 and proc.stdout == "raised by check()\n", proc
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_closed_or_failing_output_is_not_a_bug(site, patched_map, pristine_map):
    """Issue 16 item 5: `>&-` gave exit 1 "a bug in apply.sh". Output is only lost."""
    sh = f"PYTHON={sys.executable} bash {APPLY}"
    p = subprocess.run(["bash", "-c", f"{sh} apply --target {site} >&-"], capture_output=True,
                       text=True)
    assert p.returncode == 0 and "bug" not in p.stderr, out(p)
    assert_tree(site, patched_map, "patched", out(p))
    p = subprocess.run(["bash", "-c", f"{sh} revert --target {site} >&- 2>&-"],
                       capture_output=True, text=True)
    assert p.returncode == 0, out(p)
    assert_tree(site, pristine_map, "pristine", out(p))
    p = subprocess.run(["bash", "-c", f"{sh} revert --target {site}/nonexistent 2>/dev/full "
                                      ">/dev/full"], capture_output=True, text=True)
    assert p.returncode == 3, out(p)  # the refusal's own code, although nothing could be said


def test_python_must_be_a_python_3_10(tmp_path, site, pristine_map):
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\necho 'nsa-fastpath-python 3 9'\n")
    old.chmod(0o755)
    for py, words in (("/bin/true", "is not a Python interpreter"),
                      (str(old), "is Python 3.9; apply.sh needs 3.10 or newer"),
                      (str(tmp_path / "nope"), "no Python at")):
        p = run_apply("apply", "--target", str(site), env={"PYTHON": py}, check=False)
        assert p.returncode == 3 and words in p.stderr and "Nothing changed" in p.stderr, out(p)
    assert_tree(site, pristine_map, "unchanged")


def test_no_command_prints_usage_and_changes_nothing(site, pristine_map):
    """Issue 15 item 6: `apply.sh` alone used to apply."""
    p = subprocess.run(["bash", str(APPLY)], capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable})
    # a short usage and the line that points to --help, not the whole help
    lines = p.stderr.splitlines()
    assert p.returncode == 2 and p.stdout == "" and len(lines) == 3, out(p)
    assert "no command given" in lines[0] and lines[1].startswith("usage: apply.sh "), out(p)
    assert lines[2] == "`apply.sh --help` lists the commands, options and exit codes.", out(p)
    p = run_apply("--target", str(site), check=False)
    assert p.returncode == 2 and "Nothing changed" in p.stderr, out(p)
    assert_tree(site, pristine_map, "unchanged")
    h = run_apply("help")
    assert h.returncode == 0 and "Usage: apply.sh" in h.stdout and "--forget-state" in h.stdout


# ------------------------------------------------------------------ advice that fits
def test_state_path_that_is_a_file_is_refused_truly(site):
    (site / STATE).write_text("someone's file\n")
    before = tree_map(site)
    for cmd in ("apply", "revert"):
        p = run_apply(cmd, "--target", str(site), check=False)
        assert p.returncode == 4 and "is a file, not the directory" in p.stderr, out(p)
        assert "rolled back" not in out(p) and "Move it away" in p.stderr
    st = status(site)
    assert st.returncode == 4 and "is a file" in st.stdout and "either finishes" not in st.stdout
    assert tree_map(site) == before


def test_a_users_look_alike_temp_file_survives(site):
    """Only files apply.sh itself creates are removed, by their exact names."""
    user = site / "sglang/srt/.my.nsa-tmp.notes"
    user.write_text("mine\n")
    run_apply("apply", "--target", str(site))
    run_apply("revert", "--target", str(site))
    assert user.read_text() == "mine\n"


def test_read_only_and_immutable_are_named(monkeypatch, tmp_path):
    d = tmp_path / "d"
    d.mkdir()

    class RO:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(preflight.os, "statvfs", lambda p: RO)
    assert "Read-only file system" in preflight.why_not_writable(d)
    monkeypatch.undo()
    monkeypatch.setattr(preflight, "inode_flags", lambda p: preflight.FS_IMMUTABLE_FL)
    why = preflight.why_not_writable(d)
    assert "immutable" in why and f"chattr -i {d}" in why and "owner" not in why


def test_immutable_directory_for_real(site, pristine_map):
    """With chattr available (root on ext4/xfs/tmpfs): the real refusal names it."""
    d = site / "sglang" / "srt"
    if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here (the unit test above covers the wording)")
    try:
        p = run_apply("apply", "--target", str(site), check=False)
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    assert p.returncode == 3 and "immutable" in p.stderr and "owner" not in p.stderr, out(p)
    assert_tree(site, pristine_map, "unchanged", out(p))


def test_revert_on_a_full_disk_after_pycache_was_deleted(tmp_path, pristine_template,
                                                         pristine_map):
    """ROLLBACK.md: revert needs no free space -- also when __pycache__ directories were
    deleted since apply (their bytecode is then not restored: creating them needs space)."""
    from test_apply_faults import leave_free, small_filesystem
    import shutil
    with small_filesystem(tmp_path / "mnt", 40) as mnt:
        if mnt is None:
            pytest.skip("needs root to mount a small tmpfs")
        site = mnt / "site"
        subprocess.run(["cp", "-a", str(pristine_template), str(site)], check=True)
        pycs = compile_replaced(site)
        run_apply("apply", "--target", str(site))
        for pyc in pycs:
            shutil.rmtree(pyc.parent, ignore_errors=True)
        leave_free(mnt / "filler", 0)
        r = run_apply("revert", "--target", str(site), check=False)
        assert r.returncode == 0 and "not restoring" in r.stdout, out(r)
        got = tree_map(site)
        got.pop("__pycache__", None)
        want = {k: v for k, v in pristine_map.items()}
        for pyc in pycs:  # the directories the test removed stay removed
            for k in list(want):
                if k == str(pyc.parent.relative_to(site)) or k.startswith(
                        str(pyc.parent.relative_to(site)) + "/"):
                    want.pop(k)
        assert got == want


# ------------------------------------------------------------------ issue 15's messages
def test_apply_over_a_reinstalled_tree_says_what_it_found(patched_template, pristine_template,
                                                          tmp_path, patched_map):
    site = patched_copy(patched_template, tmp_path)
    for rel in REPLACED:  # what `pip install --force-reinstall sglang==0.5.8` does
        rewrite(site / rel, (pristine_template / rel).read_bytes())
    p = run_apply("apply", "--target", str(site))
    assert "interrupted" not in p.stdout, out(p)
    assert "the journal says apply completed" in p.stdout
    assert f"{len(REPLACED)} of {N_FILES} files are not nsa-fastpath's now" in p.stdout
    assert_tree(site, patched_map, "patched", out(p))


def test_revert_summary_counts_restored_and_removed(patched_template, tmp_path, pristine_map):
    site = patched_copy(patched_template, tmp_path)
    p = run_apply("revert", "--target", str(site))
    assert (f"reverted: {len(REPLACED)} file(s) are SGLang 0.5.8's originals again and the "
            f"{len(ADDED_ROWS)} file(s) nsa-fastpath added are removed") in p.stdout, out(p)
    assert f"all {N_FILES} files" not in p.stdout


def uninstall(site: Path) -> None:
    """What `pip uninstall sglang` leaves of a patched tree: our added files and state dir."""
    ours = {str(site / r) for r in ADDED_ROWS}
    for d in site.glob("sglang-*.dist-info"):
        subprocess.run(["rm", "-rf", str(d)], check=True)
    for dirpath, dirnames, filenames in os.walk(site / "sglang"):
        if Path(dirpath) == site / STATE:
            dirnames[:] = []
            continue
        for name in filenames:
            if os.path.join(dirpath, name) not in ours:
                os.unlink(os.path.join(dirpath, name))


def test_uninstalled_tree_messages(patched_template, tmp_path):
    """An uninstalled tree is not "SGLang found ... version unknown"; and a dry run says it is
    one before anything that sounds like a change."""
    site = patched_copy(patched_template, tmp_path)
    uninstall(site)
    # a Python without SGLang of its own, whose `import sglang` finds the leftovers
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {"PYTHON": str(venv / "bin" / "python"), "PYTHONPATH": str(site),
           "NSA_FASTPATH_STATUS_FILES_ONLY": "1"}
    st = run_apply("status", env=env, check=False)
    assert st.returncode == 7 and "overall: uninstalled" in st.stdout, out(st)
    assert "SGLang found by" not in st.stdout and "no SGLang distribution is installed" in \
        st.stdout and "version found is unknown" not in out(st), out(st)
    before = tree_map(site)
    p = run_apply("revert", "--dry-run", "--target", str(site))
    lines = p.stdout.splitlines()
    first_dry = next(i for i, ln in enumerate(lines) if "dry run: nothing will be changed" in ln)
    leftover = next(i for i, ln in enumerate(lines) if "leftovers" in ln)
    assert first_dry < leftover and "would remove nsa-fastpath's leftovers" in lines[leftover]
    assert "removing" not in p.stdout and tree_map(site) == before, out(p)


def test_revert_killed_while_removing_the_state_dir_finishes(patched_template, tmp_path,
                                                             pristine_map):
    """revert removes manifest.tsv, then the journal, then the rest: a kill in between leaves
    a journal without a manifest (not damage: the rerun finishes), never a manifest without
    its journal."""
    site = patched_copy(patched_template, tmp_path)
    journal = (site / STATE / "journal").read_bytes()
    run_apply("revert", "--target", str(site))
    (site / STATE).mkdir()
    (site / STATE / "journal").write_bytes(journal)
    p = run_apply("revert", "--target", str(site), check=False)
    assert p.returncode == 0, out(p)
    assert_tree(site, pristine_map, "pristine", out(p))
    # a manifest.tsv whose journal is gone cannot be verified: refused as damaged
    site2 = patched_copy(patched_template, tmp_path, "site2")
    (site2 / STATE / "journal").unlink()
    p = run_apply("revert", "--target", str(site2), check=False)
    assert p.returncode == 6 and "cannot be verified" in p.stderr, out(p)
