"""scripts/apply.sh on real pip-installed SGLang 0.5.8 trees: round trip, idempotence, refusals,
the command line, and the operator paths around pip (bytecode, RECORD, uninstall, reinstall).

Helpers and the whole-tree comparison are in applytools.py. ROLLBACK.md points at:
  method 2 (apply.sh revert):  test_rollback_method2_apply_sh_revert
  method 3 (git checkouts):    test_apply_git.py
Faults (kill -9, full disk, signals, SIGPIPE, concurrent runs): test_apply_faults.py.
"""
from __future__ import annotations

import os
import py_compile
import re
import subprocess
import sys
from importlib.util import MAGIC_NUMBER, cache_from_source
from pathlib import Path

import pytest

from applytools import (  # noqa: F401  (fixtures are used by name)
    ADDED, ADDED_ROWS, REPLACED, ROWS, STATE, _tree_hygiene, assert_tree, ext_env, our_file,
    ext_patched, link_tree, make_manifest, out, patched_map, pristine_map, rewrite, run_apply,
    sha, site, stat_map, status, tree_map)
from conftest import APPLY, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from nsa_apply import preflight  # noqa: E402

RECORD = "sglang-0.5.8.dist-info/RECORD"


# ------------------------------------------------------------------ command line
def test_help_lists_every_exit_code_and_signal():
    p = run_apply("--help")
    for code in range(0, 9):
        assert f"\n  {code}  " in p.stdout, f"exit code {code} undocumented"
    for word in ("SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE", "SIGKILL", "129/130/143", "Never 141",
                 "sglang/.nsa_fastpath/backup", "flock on the directory <target>/sglang"):
        assert word in p.stdout, word
    assert run_apply("status", "--help").stdout == p.stdout


CLI_CASES = [  # argv ({} = the test's site), expected exit code, words the error must contain
    (["frobnicate"], 2, ["unknown argument 'frobnicate'", "--help"]),
    (["apply", "--target"], 2, ["--target needs a directory"]),
    (["apply", "--target="], 2, ["--target has an empty value", "unset shell variable"]),
    (["apply", "--target", ""], 2, ["--target has an empty value"]),
    (["revert", "--git="], 2, ["--git has an empty value"]),
    (["apply", "--target", "{}", "--target", "{}"], 2, ["--target given more than once"]),
    (["apply", "--target={}", "--target", "/elsewhere"], 2, ["--target given more than once"]),
    (["apply", "-n", "--dry-run", "--target", "{}"], 2, ["--dry-run given more than once"]),
    (["apply", "revert", "--target", "{}"], 2, ["more than one command: apply and revert"]),
    (["--target", "{}", "--git", "{}"], 2, ["--target and --git exclude each other"]),
    (["apply", "--target", "--dry-run"], 2, ["needs a directory, got the option '--dry-run'"]),
    (["apply", "--target", "{}/nonexistent"], 3, ["no such directory"]),
    (["apply", "--target", "{}/sglang"], 3, ["no sglang/ package in", "site-packages"]),
]
ENV_CASES = [  # environment, expected exit code, words
    ({"NSA_FASTPATH_LOCK_TIMEOUT": "abc"}, 2, ["NSA_FASTPATH_LOCK_TIMEOUT must be a number",
                                                "got 'abc'"]),
    ({"NSA_FASTPATH_LOCK_TIMEOUT": "-1"}, 2, ["got '-1'"]),
    ({"NSA_FASTPATH_LOCK_TIMEOUT": "nan"}, 2, ["got 'nan'"]),
    ({"NSA_FASTPATH_FAULT_AT": "x"}, 2, ["NSA_FASTPATH_FAULT_AT must be a step number"]),
    ({"NSA_FASTPATH_FAULT_MODE": "boom"}, 2, ["NSA_FASTPATH_FAULT_MODE must be one of"]),
    ({"PYTHON": "/nonexistent/python3"}, 3, ["no Python at '/nonexistent/python3'", "PYTHON="]),
    ({"NSA_FASTPATH_MANIFEST": "/nonexistent/manifest.tsv"}, 3, ["manifest not found"]),
]


def test_cli_is_strict(site):
    """Every bad command line or variable: its exit code, an error naming what was found and
    what to do, and the tree untouched."""
    before = stat_map(site)
    for argv, code, words in CLI_CASES:
        args = [a.replace("{}", str(site)) for a in argv]
        p = run_apply(*args, check=False)
        ctx = f"{args}: {out(p)}"
        assert p.returncode == code, ctx
        for w in words:
            assert w in p.stderr, ctx
        assert "Nothing changed" in p.stderr, ctx
    for env, code, words in ENV_CASES:
        p = run_apply("apply", "--target", str(site), env=env, check=False)
        ctx = f"{env}: {out(p)}"
        assert p.returncode == code, ctx
        for w in words:
            assert w in p.stderr, ctx
        assert "Nothing changed" in p.stderr, ctx
    assert stat_map(site) == before
    # --dry-run with status is accepted and ignored; --target=DIR works
    p = run_apply("status", "--dry-run", f"--target={site}", env={"NSA_FASTPATH_STATUS_FILES_ONLY": "1"})
    assert "overall: pristine" in p.stdout


def test_old_python_is_refused_clearly():
    """apply.sh runs under $PYTHON; one older than 3.10 gets a message, not a SyntaxError."""
    main = APPLY.parent / "nsa_apply" / "__main__.py"
    p = subprocess.run([sys.executable, "-c", "import runpy, sys; sys.version_info = (3, 9, 18); "
                        f"runpy.run_path({str(main)!r}, run_name='__main__')", "status"],
                       capture_output=True, text=True)
    assert p.returncode == 3 and "needs Python 3.10 or newer" in p.stderr, out(p)
    assert "PYTHON=" in p.stderr and "Nothing changed" in p.stderr


def test_default_target_is_the_sglang_python_finds():
    """Without --target, apply.sh asks $PYTHON's find_spec (read-only: status only)."""
    import importlib.util
    site = Path(importlib.util.find_spec("sglang").origin).parent.parent.resolve()
    p = run_apply("status", check=False)
    assert f"target: {site} (sglang 0.5.8)" in p.stdout, out(p)
    assert f"python: {sys.executable}" in p.stdout  # status.py ran under the same Python


# ------------------------------------------------------------------ round trip
def test_rollback_method2_apply_sh_revert(site, pristine_map, patched_map):
    """apply -> status -> `apply.sh revert` gives back the byte-identical pristine tree."""
    inode = {rel: os.stat(site / rel).st_ino for rel in REPLACED}
    p = run_apply("apply", "--target", str(site))
    for kind, rel, pre, post in ROWS:
        assert f"patched {rel}" in p.stdout or f"added {rel}" in p.stdout
        assert sha(site / rel) == post == sha(our_file(rel))
        if kind == "replace":
            assert f"backed up {rel}" in p.stdout
            backup = site / STATE / "backup" / rel
            assert sha(backup) == pre
            assert os.stat(backup).st_ino == inode[rel], "the backup is the file pip installed"
    assert_tree(site, patched_map, "the patched template")
    assert patched_map[RECORD] == pristine_map[RECORD], "pip's RECORD is never edited"

    st = run_apply("status", "--target", str(site))
    assert "overall: patched" in st.stdout
    for kind, rel, _, _ in ROWS:  # labelled as apply said: a file we add is "added"
        assert f"{'patched' if kind == 'replace' else 'added':<9} {rel}" in st.stdout
    assert "sglang 0.5.8" in st.stdout and str(site) in st.stdout
    assert f"undo with: bash {APPLY} revert --target {site}" in st.stdout
    assert "triton:" in st.stdout and "CUDA metadata kernel:" in st.stdout
    for flag in ("SGLANG_NSA_USE_TRITON_METADATA", "SGLANG_NSA_USE_CUDA_METADATA",
                 "SGLANG_NSA_USE_BATCHED_COPY", "SGLANG_RADIX_FAST_MATCH"):
        assert f"{flag}=True (default)" in st.stdout
    st = run_apply("status", "--target", str(site),
                   env={"SGLANG_RADIX_FAST_MATCH": "0"})
    assert "SGLANG_RADIX_FAST_MATCH=False (set to '0' in the environment)" in st.stdout
    assert "off: SGLang's own code path" in st.stdout

    r = run_apply("revert", "--target", str(site))
    for rel in REPLACED:
        assert f"restored {rel}" in r.stdout
        assert os.stat(site / rel).st_ino == inode[rel], "renamed back, not copied"
    assert_tree(site, pristine_map, "pristine")  # byte-identical, no leftovers
    assert not (site / STATE).exists()

    st = run_apply("status", "--target", str(site))
    assert "overall: pristine" in st.stdout and "flags: absent" in st.stdout
    again = run_apply("revert", "--target", str(site))
    assert "already pristine" in again.stdout
    assert_tree(site, pristine_map, "pristine")


def test_pip_bytecode_is_kept_and_restored(site):
    """pip's __pycache__ of the replaced modules goes into the backup on apply (it is stale
    for our files) and comes back on revert, valid again; bytecode of our code is removed."""
    def compile_all() -> dict[Path, Path]:
        pycs = {}
        for rel in REPLACED + [r for r in ADDED_ROWS if r.endswith(".py")]:
            if not (site / rel).exists():
                continue
            for opt in (-1, 1):
                pyc = Path(cache_from_source(str(site / rel),
                                             optimization="" if opt == -1 else opt))
                py_compile.compile(str(site / rel), cfile=str(pyc), optimize=opt,
                                   doraise=True)
                pycs[pyc] = site / rel
        return pycs

    pip_pycs = compile_all()  # as `pip install` (which compiles) leaves them
    assert len(pip_pycs) == 2 * len(REPLACED)
    before = tree_map(site)
    p = run_apply("apply", "--target", str(site))
    assert not [c for c in pip_pycs if c.exists()], "stale pyc left after apply"
    assert p.stdout.count("removed stale") == len(pip_pycs)
    for c in pip_pycs:
        kept = site / STATE / "backup" / c.relative_to(site)
        assert before[str(c.relative_to(site))].split()[0] == sha(kept)
    ours = compile_all()  # the server ran the patched code
    assert len(ours) > len(pip_pycs)
    r = run_apply("revert", "--target", str(site))
    assert r.stdout.count("restored sglang/") == len(REPLACED) + len(pip_pycs)
    # (plus the __pycache__ directories Python made, running our modules, in SGLang's own
    # directories that had none: not ours to remove; empty)
    made = {str(c.parent.relative_to(site)): "<dir>" for c in ours if c not in pip_pycs}
    assert_tree(site, {**made, **before}, "exactly as pip left it, bytecode included")
    assert all(not any((site / d).iterdir()) for d in made if d not in before)
    for pyc, src in pip_pycs.items():  # valid for the restored source: no recompilation
        head, st = pyc.read_bytes()[:16], os.stat(src)
        assert head[:4] == MAGIC_NUMBER and int.from_bytes(head[4:8], "little") == 0
        assert int.from_bytes(head[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
        assert int.from_bytes(head[12:16], "little") == st.st_size & 0xFFFFFFFF


def test_apply_twice_is_noop(patched_template, tmp_path, patched_map):
    site = link_tree(patched_template, tmp_path / "site")
    before = stat_map(site)
    p = run_apply("apply", "--target", str(site))
    assert "already applied" in p.stdout
    assert stat_map(site) == before, "second apply wrote something"
    assert_tree(site, patched_map, "the patched template")


def test_revert_of_pristine_is_noop(site):
    before = stat_map(site)
    p = run_apply("revert", "--target", str(site))
    assert p.returncode == 0 and "already pristine" in p.stdout
    assert stat_map(site) == before


def test_no_file_outside_the_target(site, tmp_path):
    """Nothing is created outside the target (no lock file in TMPDIR to go stale or belong
    to another user): the lock is the target directory itself."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    for cmd in ("apply", "status", "revert"):
        run_apply(cmd, "--target", str(site), env={"TMPDIR": str(tmpdir)})
    assert list(tmpdir.iterdir()) == []


def test_dry_run_changes_nothing(site, patched_template, tmp_path, patched_map):
    before = stat_map(site)
    pristine = tree_map(site)
    p = run_apply("apply", "--dry-run", "--target", str(site))
    for rel in REPLACED:
        assert f"would patch {rel}" in p.stdout and f"would back up {rel}" in p.stdout
    for rel in ADDED_ROWS:
        assert f"would add {rel}" in p.stdout
    assert stat_map(site) == before and tree_map(site) == pristine

    site = link_tree(patched_template, tmp_path / "patched")
    before = stat_map(site)
    p = run_apply("revert", "--dry-run", "--target", str(site))
    for rel in REPLACED:
        assert f"would restore {rel}" in p.stdout
    for rel in ADDED_ROWS:
        assert f"would remove {rel}" in p.stdout
    assert stat_map(site) == before
    assert_tree(site, patched_map, "the patched template")

    # also on a crashed (partial) tree
    crashed = link_tree(site, tmp_path / "crashed")
    run_apply("revert", "--target", str(crashed), check=False,
              env={"NSA_FASTPATH_FAULT_AT": "8", "NSA_FASTPATH_FAULT_MODE": "kill"})
    before, hashes = stat_map(crashed), tree_map(crashed)
    for cmd in ("apply", "revert"):
        assert run_apply(cmd, "-n", "--target", str(crashed)).returncode == 0
    assert stat_map(crashed) == before and tree_map(crashed) == hashes


# ------------------------------------------------------------------ refusals
def test_foreign_replaced_file_refuses(site, patched_template, tmp_path):
    rel = REPLACED[-1]
    f = site / rel
    data = bytearray(f.read_bytes())
    data[100] ^= 0x01  # one byte
    rewrite(f, bytes(data))
    before = stat_map(site)
    p = run_apply("apply", "--target", str(site), check=False)
    assert p.returncode == 4, out(p)
    assert rel in p.stderr and sha(f) in p.stderr and "sglang==0.5.8" in p.stderr
    assert "Nothing changed" in p.stderr
    assert stat_map(site) == before

    # revert refuses to overwrite a file edited after apply
    site = link_tree(patched_template, tmp_path / "patched")
    rewrite(site / rel, (site / rel).read_bytes() + b"# local edit\n")
    before, hashes = stat_map(site), tree_map(site)
    p = run_apply("revert", "--target", str(site), check=False)
    assert p.returncode == 4 and rel in p.stderr
    assert "pip install --force-reinstall --no-deps sglang==0.5.8" in p.stderr
    assert stat_map(site) == before and tree_map(site) == hashes
    st = run_apply("status", "--target", str(site), check=False)
    assert st.returncode == 4 and "overall: foreign" in st.stdout and f"foreign   {rel}" in st.stdout


def test_an_edited_file_of_ours_is_named_as_ours(patched_template, tmp_path, pristine_map,
                                                 patched_map):
    """A file we added, edited after apply: pip does not own it, so reinstalling SGLang would
    not help. revert and apply refuse (nothing changed), name it as ours and give the one way
    out, deleting it; status says the same. Following that advice ends the problem: revert
    then ends pristine, apply patched."""
    rel = ADDED_ROWS[0]
    for cmd, want in (("revert", pristine_map), ("apply", patched_map)):
        site = link_tree(patched_template, tmp_path / cmd)
        rewrite(site / rel, (site / rel).read_bytes() + b"# x\n")
        before = tree_map(site)
        p = run_apply(cmd, "--target", str(site), check=False)
        assert p.returncode == 4 and "Nothing changed" in p.stderr, out(p)
        assert f"{rel}: nsa-fastpath's file (SGLang does not ship it) was changed since apply" \
            in p.stderr and "pip install" not in p.stderr, out(p)
        rm = re.search(r"(rm -- \S+)$", p.stderr, re.M)
        assert rm and rm.group(1) == f"rm -- {site / rel}", out(p)
        assert tree_map(site) == before
        st = status(site)
        assert st.returncode == 4 and "overall: foreign" in st.stdout, out(st)
        assert f"foreign   {rel}" in st.stdout and rm.group(1) in st.stdout, out(st)
        subprocess.run(rm.group(1).split(), check=True)
        p = run_apply(cmd, "--target", str(site), check=False)
        assert p.returncode == 0, out(p)
        assert_tree(site, want, f"{cmd} after the advice was followed", out(p))


def test_foreign_file_at_add_path_refuses(site, ext_env):
    rel = next(iter(ADDED))
    rewrite(site / rel, b"someone else's module\n")
    before = tree_map(site)
    p = run_apply("apply", "--target", str(site), env=ext_env, check=False)
    assert p.returncode == 4 and rel in p.stderr, out(p)
    assert tree_map(site) == before


def test_wrong_version_refuses(site):
    meta = site / "sglang-0.5.8.dist-info" / "METADATA"
    rewrite(meta, meta.read_bytes().replace(b"Version: 0.5.8", b"Version: 0.5.9", 1))
    rel = REPLACED[0]
    rewrite(site / rel, (site / rel).read_bytes() + b"\n# 0.5.9 changes\n")
    before = tree_map(site)
    p = run_apply("apply", "--target", str(site), check=False)
    assert p.returncode == 4, out(p)
    # It names what it found, the releases it supports, the file that fits none of them, and
    # both ways out: port the release, or reinstall it (a local edit).
    assert "SGLang 0.5.9" in p.stderr and "supported: " in p.stderr and "0.5.8" in p.stderr
    assert f"{rel}: sha256 {sha(site / rel)}: no supported release's file" in p.stderr
    assert "scripts/regen.py --release" in p.stderr and "pip install" in p.stderr
    assert tree_map(site) == before


def test_missing_backup_refuses_revert(patched_template, tmp_path):
    site = link_tree(patched_template, tmp_path / "site")
    (site / STATE / "backup" / REPLACED[0]).unlink()
    before = tree_map(site)
    p = run_apply("revert", "--target", str(site), check=False)
    assert p.returncode == 6 and REPLACED[0] in p.stderr and "force-reinstall" in p.stderr
    assert f"{REPLACED[0]} is missing" in p.stderr
    assert tree_map(site) == before
    # corrupt instead of missing
    site2 = link_tree(patched_template, tmp_path / "site2")
    rewrite(site2 / STATE / "backup" / REPLACED[0], b"garbage")
    p = run_apply("revert", "--target", str(site2), check=False)
    assert p.returncode == 6 and f"{REPLACED[0]} is corrupt" in p.stderr


def without_dac(*cmd: str) -> list[str]:
    """cmd run so that file permissions bind: as root, without CAP_DAC_OVERRIDE/READ_SEARCH."""
    if os.geteuid() != 0:
        return list(cmd)
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *cmd]


def test_permission_errors_say_what_to_do(patched_template, tmp_path, pristine_map):
    """An unreadable state dir is reported as unreadable (not as missing backups); a directory
    without write permission as what it is: its mode, when the run is its owner (the advice,
    `chmod u+w`, is followed and ends it), or its owner, when it is another user. A backup
    directory too, found before the first change. Each refusal changes nothing."""
    site = link_tree(patched_template, tmp_path / "site")
    env = dict(os.environ, PYTHON=sys.executable, NSA_FASTPATH_STATUS_FILES_ONLY="1")

    def run(*args):
        return subprocess.run(without_dac("bash", str(APPLY), *args, "--target", str(site)),
                              capture_output=True, text=True, env=env)

    before = tree_map(site)
    os.chmod(site / STATE, 0)
    try:
        for cmd in ("status", "revert", "apply"):
            p = run(cmd)
            ctx = f"{cmd}: {out(p)}"
            assert p.returncode == 3, ctx
            assert "cannot read" in out(p) and "permission denied" in out(p), ctx
            assert "run" in out(p).lower() and "owner" in out(p), ctx
            assert "missing or corrupt" not in out(p) and "find:" not in out(p), ctx
    finally:
        os.chmod(site / STATE, 0o755)
    assert tree_map(site) == before
    mine = site / ADDED_ROWS[0]
    rewrite(mine, mine.read_bytes())  # its own inode: the template's keeps its mode
    os.chmod(mine, 0)
    try:
        for cmd in ("status", "revert", "apply"):
            p = run(cmd)
            assert p.returncode == 3 and f"cannot read {ADDED_ROWS[0]}" in out(p), out(p)
            assert "permission denied" in out(p) and "foreign" not in out(p), out(p)
    finally:
        os.chmod(mine, 0o644)
    assert tree_map(site) == before
    for d in (site / "sglang" / "srt", site / STATE / "backup" / "sglang" / "srt"):
        os.chmod(d, 0o555)
        p = run("revert")
        assert p.returncode == 3 and f"no write permission on {d}: its mode is dr-xr-xr-x " \
            "(0555)" in p.stderr, out(p)
        assert "you own it" in p.stderr and "run as" not in p.stderr, out(p)
        assert tree_map(site) == before, out(p)
        advice = re.search(r"Give it: (chmod u\+w \S+), then rerun", p.stderr)
        assert advice, out(p)
        subprocess.run(advice.group(1).split(), check=True)
    if os.geteuid() == 0:  # another owner: that user is named, and running as it is the way
        srt = site / "sglang" / "srt"
        os.chown(srt, 65534, -1)
        try:
            p = run("revert")
            owner = preflight.owner_of(srt)
            assert p.returncode == 3 and f"it is owned by {owner}, and its mode drwxr-xr-x " \
                f"(0755) lets only its owner write: run as {owner}" in p.stderr, out(p)
        finally:
            os.chown(srt, 0, -1)
        assert tree_map(site) == before
    p = run("revert")
    assert p.returncode == 0, out(p)
    assert_tree(site, pristine_map, "pristine after the advice was followed")


# ------------------------------------------------------------------ `add` rows, new dirs
def test_add_rows_roundtrip(site, ext_env, ext_patched, pristine_map):
    _, ext_map = ext_patched
    p = run_apply("apply", "--target", str(site), env=ext_env)
    for rel, data in ADDED.items():
        assert f"added {rel}" in p.stdout
        assert (site / rel).read_bytes() == data
    assert "created directory sglang/srt/nsa_fastpath/csrc" in p.stdout
    assert (site / STATE / "created_dirs").read_text() == (
        "sglang/srt/nsa_fastpath\nsglang/srt/nsa_fastpath/csrc\n")
    assert_tree(site, ext_map, "the patched tree")
    st = run_apply("status", "--target", str(site), env=ext_env)
    assert "overall: patched" in st.stdout
    # Python ran the added modules: bytecode appears in dirs we created and in SGLang's
    for rel in ADDED:
        if rel.endswith(".py"):
            py_compile.compile(str(site / rel), doraise=True)
    assert run_apply("apply", "--target", str(site), env=ext_env).stdout.count(
        "already applied") == 1
    run_apply("revert", "--target", str(site), env=ext_env)
    assert_tree(site, pristine_map | {
        "sglang/srt/layers/attention/__pycache__": "<dir>"}, "pristine")


def test_other_recorded_manifest(site, tmp_path, pristine_map):
    """Another nsa-fastpath version is applied (its own bytes for files our sets replace and
    add): apply refuses, revert uses the recorded manifest (and never reads our overlay/, so
    even its rollback works)."""
    other = make_manifest(tmp_path / "other-version", {ADDED_ROWS[0]: b"# an older module\n"},
                          {REPLACED[0]: b"# an older fork\n"})
    run_apply("apply", "--target", str(site), env=other)
    before = tree_map(site)
    p = run_apply("apply", "--target", str(site), check=False)
    assert p.returncode == 4 and "another nsa-fastpath version" in p.stderr, out(p)
    assert tree_map(site) == before
    failed = link_tree(site, tmp_path / "failed")
    p = run_apply("revert", "--target", str(failed), check=False,
                  env={"NSA_FASTPATH_FAULT_AT": "3"})
    assert p.returncode == 5 and "rolled back" in p.stderr, out(p)
    assert tree_map(failed) == before
    p = run_apply("revert", "--target", str(site))
    assert "manifest recorded at apply time" in p.stdout
    assert_tree(site, pristine_map, "pristine")


def test_sglang_reinstalled_over_patched_tree(tmp_path, patched_template, pristine_template,
                                              pristine_map):
    """`pip install --force-reinstall sglang` restores SGLang's files but leaves ours: partial."""
    site = link_tree(patched_template, tmp_path / "site")
    for rel in REPLACED:
        rewrite(site / rel, (pristine_template / rel).read_bytes())
    st = status(site)
    assert st.returncode == 7 and "overall: partial" in st.stdout
    run_apply("revert", "--target", str(site))
    assert_tree(site, pristine_map, "pristine")


def test_revert_of_a_tree_patched_by_the_earlier_apply_sh(patched_template, tmp_path,
                                                         pristine_map):
    """Trees patched by the bash apply.sh of earlier releases: backups were copies, pip's
    bytecode was deleted, and an interrupted run left .<name>.nsa-tmp.<pid> files beside
    SGLang's; the current revert takes them back to pristine."""
    site = link_tree(patched_template, tmp_path / "site")
    for rel in REPLACED:
        rewrite(site / STATE / "backup" / rel, (site / STATE / "backup" / rel).read_bytes())
    for pyc in (site / STATE / "backup").rglob("*.pyc"):
        pyc.unlink()
    stale = site / Path(REPLACED[0]).parent / f".{Path(REPLACED[0]).name}.nsa-tmp.4242"
    stale.write_bytes(b"half a file")
    st = status(site)
    assert st.returncode == 7 and "leftover temp files" in st.stdout, out(st)
    r = run_apply("revert", "--target", str(site))
    assert f"removed leftover temp file {stale.relative_to(site)}" in r.stdout
    assert_tree(site, pristine_map, "pristine")


# ------------------------------------------------------------------ pip uninstall
def pip_env(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A bare venv (no pip of its own) whose site-packages gets SGLang, and an env running
    this test Python's pip inside it: `pip uninstall` acts only on its own environment."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    sp = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip())
    import pip
    piponly = tmp_path / "piponly"
    piponly.mkdir()
    (piponly / "pip").symlink_to(Path(pip.__file__).parent)
    return venv, sp, dict(os.environ, PYTHONPATH=str(piponly))


def test_pip_uninstall_leftovers_are_recognised_and_cleaned(tmp_path, pristine_template):
    """`pip uninstall sglang` on a patched install leaves our added modules and the state dir:
    status names the state and the exact clean-up command, apply refuses, the command
    removes exactly what a pip uninstall of a pristine install would have removed."""
    venv, sp, env = pip_env(tmp_path)
    for name in ("sglang", "sglang-0.5.8.dist-info"):
        subprocess.run(["cp", "-al", str(pristine_template / name), str(sp)], check=True)
    run_apply("apply", env={"PYTHON": str(venv / "bin" / "python")})  # the default target
    assert (sp / STATE).is_dir()
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", "sglang"],
                   check=True, env=env)
    left = sorted(str(p.relative_to(sp)) for p in sp.rglob("*") if p.is_file())
    assert left and all(p.startswith("sglang/") for p in left)

    st = status(sp)
    assert st.returncode == 7 and "overall: uninstalled" in st.stdout, out(st)
    cleanup = f"bash {APPLY} revert --target {sp}"
    assert cleanup in st.stdout and "namespace package" in st.stdout
    p = run_apply("apply", "--target", str(sp), check=False)
    assert p.returncode == 3 and "not installed" in p.stderr and cleanup in p.stderr, out(p)
    assert sorted(str(p.relative_to(sp)) for p in sp.rglob("*") if p.is_file()) == left

    r = subprocess.run(cleanup.split(), capture_output=True, text=True,
                       env=dict(os.environ, PYTHON=sys.executable))
    assert r.returncode == 0, out(r)
    assert list(sp.iterdir()) == [], "nothing left: as after uninstalling a pristine SGLang"
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import sglang"],
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'sglang'" in probe.stderr
