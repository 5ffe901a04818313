"""scripts/apply.sh under faults: a crash, an error, a full disk, signals or a closed pipe at
every step; concurrent runs reaching one tree through other TMPDIRs, a symlink and a bind
mount; inconsistent inputs. Each run ends with the tree exactly pristine or exactly patched,
byte for byte and with no stray file, or is refused with the tree unchanged.

(tests/test_apply_core.py runs every fault kind at every step in-process on a small tree.)
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from applytools import (  # noqa: F401  (fixtures are used by name)
    ADDED, MANIFEST, REPLACED, ROLLBACK_MODES, ROWS, STATE, _tree_hygiene, copy_overlay, our_file,
    assert_tree, ext_env, ext_patched, inode_index, link_tree, make_manifest, out, patched_map,
    pristine_map, remove_tree, run_apply, site, status, sweep, tree_map)
from conftest import APPLY


# ------------------------------------------------------------------ every step
@pytest.mark.parametrize("modes", [("kill",), ROLLBACK_MODES], ids=["kill", "rollback"])
def test_apply_fault_sweep(modes, pristine_template, tmp_path, pristine_map, patched_map):
    """kill: rerunning apply or revert finishes. rollback: an error, ENOSPC, SIGTERM, SIGINT,
    SIGHUP at a step (in turn) roll back to pristine, exit 5; a closed pipe changes nothing."""
    steps = sweep(pristine_template, tmp_path, "apply", modes, {}, pristine_map, patched_map)
    assert steps >= 2 * len(ROWS)


@pytest.mark.parametrize("modes", [("kill",), ROLLBACK_MODES[::-1]], ids=["kill", "rollback"])
def test_revert_fault_sweep(modes, patched_template, tmp_path, pristine_map, patched_map):
    steps = sweep(patched_template, tmp_path, "revert", modes, {}, patched_map, pristine_map)
    assert steps >= 2 * len(REPLACED)


@pytest.mark.parametrize("cmd", ["apply", "revert"])
def test_add_rows_fault_sweep(cmd, pristine_template, tmp_path, ext_env, ext_patched,
                              pristine_map):
    """New modules in new nested directories: created and removed crash-safely."""
    ext_dir, ext_map = ext_patched
    if cmd == "apply":
        sweep(pristine_template, tmp_path, "apply", ("kill", "error"), ext_env, pristine_map,
              ext_map)
    else:
        sweep(ext_dir, tmp_path, "revert", ("kill", "sigterm"), ext_env, ext_map, pristine_map)


# ------------------------------------------------------------------ full disk
@contextmanager
def small_filesystem(path: Path, size_mib: int):
    """A tmpfs of size_mib at path when this runs as root and may mount; else None."""
    path.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=755", "nsa-fastpath-test",
         str(path)], capture_output=True).returncode == 0
    try:
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def leave_free(filler: Path, want: int) -> None:
    """Resize `filler` so that `want` bytes (page-rounded) stay free on its filesystem."""
    filler.unlink(missing_ok=True)
    n = free_bytes(filler.parent) - want
    if n > 0:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, n)
        finally:
            os.close(fd)
    assert abs(free_bytes(filler.parent) - want) <= 8192 or want > free_bytes(filler.parent)


def test_full_disk(tmp_path, pristine_template, patched_template, pristine_map, patched_map):
    """apply at many levels of free space: refused with nothing changed below what it needs,
    fully patched from there on; revert of every patched tree with 0 bytes free; the disk
    filling up after each step of apply (rolled back) and of revert (completes: it needs no
    space). On a 40 MiB tmpfs when running as root; otherwise ENOSPC is injected at each step."""
    with small_filesystem(tmp_path / "mnt", 40) as mnt:
        if mnt is None:
            sweep(pristine_template, tmp_path, "apply", ("enospc",), {}, pristine_map,
                  patched_map)
            sweep(patched_template, tmp_path, "revert", ("enospc",), {}, patched_map,
                  pristine_map)
            return
        site = mnt / "site"
        subprocess.run(["cp", "-a", str(pristine_template), str(site)], check=True)
        known = inode_index(site)
        filler = mnt / "filler"
        need = None
        outcomes = []
        for free_kib in list(range(0, 449, 32)) + [1024]:
            leave_free(filler, free_kib * 1024)
            p = run_apply("apply", "--target", str(site), check=False)
            ctx = f"(apply with {free_kib} KiB free)\n{out(p)}"
            if p.returncode == 3:
                assert "not enough free space" in p.stderr and "Nothing changed" in p.stderr, ctx
                assert_tree(site, pristine_map, "unchanged", ctx, known)
                need = int(p.stderr.split("needs about ")[1].split()[0])
                outcomes.append("refused")
                continue
            assert p.returncode == 0, ctx
            assert need is None or free_kib >= need - 16, ctx  # refusal only when really short
            assert_tree(site, patched_map, "patched", ctx, known)
            outcomes.append("patched")
            leave_free(filler, 0)
            r = run_apply("revert", "--target", str(site), check=False)
            ctx = f"(revert with {free_bytes(mnt)} bytes free)\n{out(r)}"
            assert r.returncode == 0, ctx
            assert_tree(site, pristine_map, "pristine", ctx, known)
        assert outcomes[0] == "refused" and outcomes[-1] == "patched"
        assert outcomes == sorted(outcomes, key=lambda o: o == "patched"), outcomes

        # the disk fills up right after step N (another process writing): real ENOSPC
        filler.unlink()
        fill = {"NSA_FASTPATH_FAULT_MODE": "fill", "NSA_FASTPATH_FAULT_FILL": str(filler)}
        p = run_apply("apply", "--target", str(site), env={"NSA_FASTPATH_TRACE": "1"})
        steps = {c: sum(ln.startswith("[nsa-fastpath] step ") for ln in x.stdout.splitlines())
                 for c, x in [("apply", p)]}
        r = run_apply("revert", "--target", str(site), env={"NSA_FASTPATH_TRACE": "1"})
        steps["revert"] = sum(ln.startswith("[nsa-fastpath] step ") for ln in r.stdout.splitlines())
        rolled_back = 0
        for n in range(1, steps["apply"] + 1):
            p = run_apply("apply", "--target", str(site), check=False,
                          env={**fill, "NSA_FASTPATH_FAULT_AT": str(n)})
            ctx = f"(apply, disk full after step {n})\n{out(p)}"
            filler.unlink()
            if p.returncode == 5:  # a write came after the disk filled up
                assert "No space left on device" in p.stderr and "rolled back" in p.stderr, ctx
                assert_tree(site, pristine_map, "rolled back", ctx, known)
                rolled_back += 1
                continue
            assert p.returncode == 0, ctx  # no write was left to do
            assert_tree(site, patched_map, "patched", ctx, known)
            run_apply("revert", "--target", str(site))
        assert rolled_back >= steps["apply"] - 4, "most steps are followed by a write"
        run_apply("apply", "--target", str(site))
        for n in range(1, steps["revert"] + 1):
            r = run_apply("revert", "--target", str(site), check=False,
                          env={**fill, "NSA_FASTPATH_FAULT_AT": str(n)})
            ctx = f"(revert, disk full after step {n})\n{out(r)}"
            assert r.returncode == 0, ctx
            assert_tree(site, pristine_map, "pristine", ctx, known)
            filler.unlink()
            run_apply("apply", "--target", str(site))
        assert_tree(site, patched_map, "patched", "", known)


# ------------------------------------------------------------------ signals and pipes
@pytest.mark.parametrize("cmd", ["apply", "revert"])
def test_output_into_a_closed_pipe(cmd, pristine_template, patched_template, tmp_path,
                                   pristine_map, patched_map):
    """`apply.sh ... | head -n 2` (the issue's case), `| true` and `2>&1 | head -n 1`: the run
    finishes, exits 0 (never 141), and the tree is complete."""
    start, end = (pristine_template, patched_map) if cmd == "apply" else (patched_template,
                                                                          pristine_map)
    known = inode_index(start)
    for i, pipe in enumerate(["| head -n 2", "| true", "2>&1 | head -n 1"]):
        site = link_tree(start, tmp_path / f"site{i}")
        line = (f"bash {APPLY} {cmd} --target {site} {pipe}; echo \"rc=${{PIPESTATUS[0]}}\" >&2")
        p = subprocess.run(["bash", "-c", line], capture_output=True, text=True,
                           env={**os.environ, "PYTHON": sys.executable, "NSA_FASTPATH_TRACE": "1"})
        assert "rc=0" in p.stderr, f"{pipe}: {out(p)}"
        assert_tree(site, end, f"complete after {pipe}", out(p), known)
        remove_tree(site)


def start_run(cmd: str, site: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(APPLY), cmd, "--target", str(site)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHON": sys.executable, **(env or {})})


@pytest.mark.parametrize("cmd", ["apply", "revert"])
def test_real_signals(cmd, pristine_template, patched_template, tmp_path, pristine_map,
                      patched_map):
    """SIGTERM, SIGINT and SIGHUP from outside, at several moments of a run: it either rolls
    back (exit 5, the tree as before) or had passed its commit point (exit 0, complete)."""
    start, start_map, end_map = ((pristine_template, pristine_map, patched_map) if cmd == "apply"
                                 else (patched_template, patched_map, pristine_map))
    seen, known = set(), inode_index(start)
    slow = {"NSA_FASTPATH_FAULT_AT": "1", "NSA_FASTPATH_FAULT_MODE": "slow"}  # 20 ms a step
    for i, delay in enumerate([0, 0.05, 0.15, 0.3, 0.5, 1.5]):
        sig = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)[i % 3]
        site = link_tree(start, tmp_path / f"site{i}")
        proc = start_run(cmd, site, slow)
        proc.stdout.readline()  # "target: ..." -- apply.sh is running and handles signals
        time.sleep(delay)
        proc.send_signal(sig)
        so, se = proc.communicate()
        ctx = f"({cmd}, {sig.name} after {delay} s, exit {proc.returncode})\n{so}{se}"
        assert proc.returncode in (0, 5), ctx
        if proc.returncode == 5:
            assert f"interrupted by {sig.name}" in se, ctx
            assert_tree(site, start_map, "as before", ctx, known)
        else:
            assert_tree(site, end_map, "complete", ctx, known)
        seen.add(proc.returncode)
        remove_tree(site)
    assert 5 in seen, "no signal landed inside a run"


# ------------------------------------------------------------------ one lock per tree
@contextmanager
def aliases(site: Path, tmp_path: Path):
    """Other paths to the same tree: a symlink, and a bind mount when root may mount."""
    link = tmp_path / "alias-link"
    link.symlink_to(site)
    bind = tmp_path / "alias-bind"
    bind.mkdir()
    bound = os.geteuid() == 0 and subprocess.run(
        ["mount", "--bind", str(site), str(bind)], capture_output=True).returncode == 0
    try:
        yield [site, link] + ([bind] if bound else [])
    finally:
        if bound:
            subprocess.run(["umount", str(bind)], check=True)


def test_lock_is_the_tree_itself(site, tmp_path):
    """A run holding the tree is seen by runs through any alias and any TMPDIR: they wait,
    and give up with exit 8 and nothing changed; `status` notes the run in progress."""
    before = tree_map(site)
    with aliases(site, tmp_path) as paths:
        fd = os.open(site / "sglang", os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            for i, path in enumerate(paths):
                tmpdir = tmp_path / f"tmp{i}"
                tmpdir.mkdir()
                p = run_apply("apply", "--target", str(path), check=False,
                              env={"TMPDIR": str(tmpdir), "NSA_FASTPATH_LOCK_TIMEOUT": "0.3"})
                assert p.returncode == 8, out(p)
                assert "holds the lock" in p.stderr and "Nothing changed" in p.stderr, out(p)
                assert "waiting for another apply.sh run" in p.stdout
            st = status(paths[-1])
            assert "another apply.sh run on this target is in progress" in st.stdout
            # a signal while waiting: stops, nothing changed
            proc = start_run("apply", paths[-1])
            first = proc.stdout.readline()  # the lock is taken before the target line
            assert "waiting" in first or "waiting" in proc.stdout.readline(), first
            proc.send_signal(signal.SIGTERM)
            so, se = proc.communicate()
            assert proc.returncode == 5 and "before any change: nothing changed" in se, so + se
        finally:
            os.close(fd)
        assert tree_map(site) == before
        run_apply("apply", "--target", str(paths[-1]))


def test_concurrent_runs_through_aliases(patched_template, tmp_path, pristine_map,
                                         patched_map):
    """Rounds of 8 concurrent apply/revert runs, each with its own TMPDIR and reaching the
    tree through its real path, a symlink or a bind mount: they take turns, every one
    succeeds, and the tree ends exactly pristine or patched (the issue saw backups lost)."""
    site = link_tree(patched_template, tmp_path / "site")
    known = inode_index(patched_template)
    with aliases(site, tmp_path) as paths:
        for rnd in range(5):
            procs = []
            for i in range(8):
                tmpdir = tmp_path / f"tmp{rnd}-{i}"
                tmpdir.mkdir()
                cmd = ("revert", "apply")[(i + rnd) % 2]
                procs.append(start_run(cmd, paths[i % len(paths)], {"TMPDIR": str(tmpdir)}))
            for p in procs:
                so, se = p.communicate()
                assert p.returncode == 0, so + se
            got = tree_map(site, known)
            assert got in (pristine_map, patched_map), f"round {rnd}: neither pristine nor patched"
            st = status(paths[rnd % len(paths)])
            want = "pristine" if got == pristine_map else "patched"
            assert st.returncode == 0 and f"overall: {want}" in st.stdout, out(st)


# ------------------------------------------------------------------ our own inputs
def test_overlay_and_manifest_must_agree(site, tmp_path):
    """apply refuses, changing nothing, unless every overlay/ file is a manifest row with its
    sha256 and every row is in overlay/ (the issue: a module missing from manifest.tsv was not
    installed, and the patched tree could not import). Any file type, e.g. a C++ source."""
    def variant(name: str, edit) -> dict:
        base = tmp_path / name
        copy_overlay(base / "overlay")
        shutil.copy(MANIFEST, base / "manifest.tsv")
        edit(base / "overlay", base / "manifest.tsv")
        return {"NSA_FASTPATH_MANIFEST": str(base / "manifest.tsv"),
                "NSA_FASTPATH_OVERLAY": str(base / "overlay")}

    add_rel = next(r for k, r, _, _ in ROWS if k == "add")
    rep_rel = REPLACED[0]

    def drop_row(ov, mf, rel=add_rel):
        mf.write_text("".join(ln for ln in mf.read_text().splitlines(True)
                              if f"\t{rel}\t" not in ln))

    cases = {
        "unlisted-cpp": (lambda ov, mf: (ov / "sglang/srt/mem_cache/nsa_test_extra.cpp")
                         .write_text("// new\n"), "nsa_test_extra.cpp is not listed"),
        "unlisted-module": (drop_row, f"overlay/{add_rel} is not listed"),
        "missing-file": (lambda ov, mf: (ov / add_rel).unlink(), f"lists {add_rel}, which"),
        "edited-file": (lambda ov, mf: (ov / rep_rel).write_bytes((ov / rep_rel).read_bytes()
                                                                  + b"# edit\n"),
                        f"overlay/{rep_rel} has sha256"),
        "bad-hash": (lambda ov, mf: mf.write_text(mf.read_text().replace(
            hashlib.sha256(our_file(rep_rel).read_bytes()).hexdigest(), "abc")),
            "bad patched sha256"),
        "duplicate-row": (lambda ov, mf: mf.write_text(mf.read_text() + mf.read_text()
                                                       .splitlines(True)[-1]), "listed twice"),
        "escaping-path": (lambda ov, mf: mf.write_text(mf.read_text() + "add\tsglang/../x.py\t-\t"
                                                       + "0" * 64 + "\n"), "bad path"),
        "state-dir-path": (lambda ov, mf: mf.write_text(mf.read_text() + "add\t" + str(STATE)
                                                        + "/x\t-\t" + "0" * 64 + "\n"), "bad path"),
    }
    before = tree_map(site)
    for name, (edit, words) in cases.items():
        env = variant(name, edit)
        for args in (["apply", "--target", str(site)], ["apply", "--dry-run", "--target", str(site)]):
            p = run_apply(*args, env=env, check=False)
            ctx = f"{name} {args}: {out(p)}"
            assert p.returncode == 3 and words in p.stderr, ctx
            assert "Nothing changed" in p.stderr and "regen.py" in p.stderr, ctx
    assert tree_map(site) == before
