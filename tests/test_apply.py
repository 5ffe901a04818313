"""scripts/apply.sh against real pip-installed SGLang 0.5.8 trees (copies of the conftest templates).

Every check compares whole trees: a map of every file's sha256 (and every directory) under
the target, before vs after, against the pristine template and the `patched_template`
fixture (which apply.sh itself produced). ROLLBACK.md points at:
  method 2 (apply.sh revert):  test_rollback_method2_apply_sh_revert
  method 3 (git checkouts):    test_rollback_method3_apply_sh_revert_git,
                               test_rollback_method3_plain_git_revert
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import py_compile
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.util import cache_from_source
from pathlib import Path

import pytest

from conftest import ROOT, run_apply

STATE = Path("sglang/.nsa_fastpath")
# The files apply.sh installs (it honours the same variables).
MANIFEST = Path(os.environ.get("NSA_FASTPATH_MANIFEST") or ROOT / "manifest.tsv")
OVERLAY = Path(os.environ.get("NSA_FASTPATH_OVERLAY") or ROOT / "overlay")
PATCHES = sorted(Path(os.environ.get("NSA_FASTPATH_PATCHES") or ROOT / "patches").glob("*.patch"))


# ------------------------------------------------------------------ helpers
def read_manifest(path: Path = MANIFEST) -> list[tuple[str, str, str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            kind, rel, pre, post = line.split("\t")
            rows.append((kind, rel, pre, post))
    return rows


ROWS = read_manifest()
REPLACED = [r for k, r, _, _ in ROWS if k == "replace"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_map(root: Path, known: dict | None = None) -> dict[str, str]:
    """relpath -> 'sha256 mode' for files, '<dir>' for directories, '-> target' for symlinks.

    known: {(dev, inode, size, mtime_ns): sha256} of a template's files (see inode_index);
    a file that *is* one of those inodes (a hard link) reuses its digest.
    """
    out = {}

    def walk(d: str, prefix: str) -> None:
        with os.scandir(d) as it:
            for e in it:
                rel = prefix + e.name
                st = e.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    out[rel] = "-> " + os.readlink(e.path)
                elif stat.S_ISDIR(st.st_mode):
                    out[rel] = "<dir>"
                    walk(e.path, rel + "/")
                else:
                    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                    digest = known[key] if known and key in known else sha(Path(e.path))
                    out[rel] = f"{digest} {stat.S_IMODE(st.st_mode):o}"

    walk(str(root), "")
    return out


def inode_index(root: Path) -> dict:
    """Digest of every file of a template, keyed by inode (+ size and mtime)."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                out[(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)] = sha(Path(p))
    return out


def remove_tree(path: Path) -> None:
    subprocess.run(["rm", "-rf", "--", str(path)], check=True)


def stat_map(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (
                st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def diff_maps(got: dict, want: dict) -> str:
    lines = []
    for k in sorted(set(got) | set(want)):
        if got.get(k) != want.get(k):
            lines.append(f"  {k}: got {got.get(k, 'ABSENT')!s:.20} want {want.get(k, 'ABSENT')!s:.20}")
    return "\n".join(lines[:20]) + (f"\n  ... {len(lines) - 20} more" if len(lines) > 20 else "")


def assert_tree(root: Path, want: dict, what: str, context: str = "", known=None) -> None:
    got = tree_map(root, known)
    assert got == want, f"{root} is not {what} {context}\n{diff_maps(got, want)}"


def copy_tree(src: Path, dst: Path) -> Path:
    """A real copy (used for git checkouts, which git may rewrite in place)."""
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


LINKS_MADE = [0]


def link_tree(src: Path, dst: Path) -> Path:
    """A hard-linked copy of a site-packages tree: cheap, and safe because apply.sh never
    writes a file in place (it writes a temp file and renames it) and the tests change files
    only through rewrite(). After each test that linked, _tree_hygiene re-hashes the session
    templates, so an in-place write fails the test instead of going unnoticed."""
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)
    LINKS_MADE[0] += 1
    return dst


def rewrite(path: Path, data: bytes) -> None:
    """Give `path` new content through a new inode (never write into a hard-linked file)."""
    tmp = path.with_name(path.name + ".test-tmp")
    tmp.write_bytes(data)
    if path.exists():
        shutil.copymode(path, tmp)
    os.replace(tmp, path)


def out(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


@pytest.fixture(autouse=True)
def _tree_hygiene(request, tmp_path, pristine_template, pristine_map, patched_template,
                  patched_map):
    """After a test: the session templates are unchanged (the trees were hard links to
    them), and the test's trees are deleted if it passed (~2000 files each)."""
    failed, links = request.session.testsfailed, LINKS_MADE[0]
    yield
    if LINKS_MADE[0] != links:
        assert tree_map(pristine_template) == pristine_map, "pristine template modified"
        assert tree_map(patched_template) == patched_map, "patched template modified"
        if "ext_patched" in request.fixturenames:
            ext_dir, ext_map = request.getfixturevalue("ext_patched")
            assert tree_map(ext_dir) == ext_map, "ext template modified"
    if request.session.testsfailed == failed:
        remove_tree(tmp_path)


@pytest.fixture
def site(pristine_template, tmp_path) -> Path:
    """Like conftest's fresh_site (a private pristine tree), as hard links (see link_tree)."""
    return link_tree(pristine_template, tmp_path / "pristine-site")


@pytest.fixture(scope="session")
def pristine_map(pristine_template) -> dict:
    return tree_map(pristine_template)


@pytest.fixture(scope="session")
def patched_map(patched_template, pristine_map) -> dict:
    m = tree_map(patched_template)
    assert m != pristine_map
    return m


# A manifest of `add` rows only (new modules in an existing directory and in new nested
# directories), as later versions of the patch set will have: NSA_FASTPATH_MANIFEST and
# NSA_FASTPATH_OVERLAY point apply.sh at it.
ADDED = {
    "sglang/srt/layers/attention/nsa_fastpath_kernels.py": b"# nsa-fastpath test module\nX = 1\n",
    "sglang/srt/nsa_fastpath/__init__.py": b"",
    "sglang/srt/nsa_fastpath/csrc/nsa_metadata.cu": b"// nsa-fastpath test kernel\n",
}


@pytest.fixture(scope="session")
def ext_env(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("ext_manifest")
    overlay = base / "overlay"
    shutil.copytree(OVERLAY, overlay)
    # only `add` rows: small, so its fault sweeps stay fast (the real manifest's sweeps
    # cover `replace` rows)
    lines = [ln for ln in MANIFEST.read_text().splitlines() if ln.startswith("#")]
    for rel, data in ADDED.items():
        (overlay / rel).parent.mkdir(parents=True, exist_ok=True)
        (overlay / rel).write_bytes(data)
        lines.append(f"add\t{rel}\t-\t{hashlib.sha256(data).hexdigest()}")
    (base / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return {"NSA_FASTPATH_MANIFEST": str(base / "manifest.tsv"),
            "NSA_FASTPATH_OVERLAY": str(overlay)}


@pytest.fixture(scope="session")
def ext_patched(pristine_template, tmp_path_factory, ext_env) -> tuple[Path, dict]:
    dst = copy_tree(pristine_template, tmp_path_factory.mktemp("ext_patched") / "site")
    run_apply("apply", "--target", str(dst), env=ext_env)
    return dst, tree_map(dst)


# ------------------------------------------------------------------ basics
def test_help_and_usage_errors(tmp_path):
    p = run_apply("--help")
    for code in range(0, 9):
        assert f"\n  {code}  " in p.stdout, f"exit code {code} undocumented"
    assert "sglang/.nsa_fastpath/backup" in p.stdout
    assert run_apply("frobnicate", check=False).returncode == 2
    assert run_apply("apply", "--target", check=False).returncode == 2
    assert run_apply("--target", "a", "--git", "b", check=False).returncode == 2
    p = run_apply("apply", "--target", str(tmp_path), check=False)
    assert p.returncode == 3 and "no sglang/" in out(p)


def test_default_target_is_the_sglang_python_finds():
    """Without --target, apply.sh asks $PYTHON's find_spec (read-only: status only)."""
    import importlib.util
    site = Path(importlib.util.find_spec("sglang").origin).parent.parent.resolve()
    p = run_apply("status", check=False)
    assert f"target: {site} (sglang 0.5.8)" in p.stdout, out(p)


def test_rollback_method2_apply_sh_revert(site, pristine_map, patched_map):
    """apply -> status -> `apply.sh revert` gives back the byte-identical pristine tree."""
    p = run_apply("apply", "--target", str(site))
    for kind, rel, pre, post in ROWS:
        assert f"patched {rel}" in p.stdout or f"added {rel}" in p.stdout
        assert sha(site / rel) == post == sha(OVERLAY / rel)
        if kind == "replace":
            assert f"backed up {rel}" in p.stdout
            assert sha(site / STATE / "backup" / rel) == pre
    assert_tree(site, patched_map, "the patched template")

    st = run_apply("status", "--target", str(site))
    assert "overall: patched" in st.stdout
    for _, rel, _, _ in ROWS:
        assert f"patched   {rel}" in st.stdout
    assert "sglang 0.5.8" in st.stdout and str(site) in st.stdout
    assert "triton:" in st.stdout and "CUDA C++ extension:" in st.stdout
    for flag in ("SGLANG_NSA_USE_TRITON_METADATA", "SGLANG_NSA_USE_CUDA_METADATA",
                 "SGLANG_NSA_USE_BATCHED_COPY", "SGLANG_RADIX_FAST_MATCH"):
        assert f"{flag}=True (default)" in st.stdout
    st = run_apply("status", "--target", str(site),
                   env={"SGLANG_RADIX_FAST_MATCH": "0"})
    assert "SGLANG_RADIX_FAST_MATCH=False (set to '0' in the environment)" in st.stdout
    assert "off: SGLang 0.5.8's own code path" in st.stdout

    r = run_apply("revert", "--target", str(site))
    for rel in REPLACED:
        assert f"restored {rel}" in r.stdout
    assert_tree(site, pristine_map, "pristine")  # byte-identical, no leftovers
    assert not (site / STATE).exists()

    st = run_apply("status", "--target", str(site))
    assert "overall: pristine" in st.stdout and "flags: absent" in st.stdout
    again = run_apply("revert", "--target", str(site))
    assert "already pristine" in again.stdout
    assert_tree(site, pristine_map, "pristine")


def test_stale_bytecode_is_cleared(site):
    """apply and revert remove __pycache__ entries of every module they replace."""
    def compile_all(optimize_levels=(-1, 1)) -> list[Path]:
        pycs = []
        for rel in REPLACED:
            for opt in optimize_levels:
                pyc = Path(cache_from_source(str(site / rel),
                                             optimization="" if opt == -1 else opt))
                py_compile.compile(str(site / rel), cfile=str(pyc), optimize=opt,
                                   doraise=True)
                pycs.append(pyc)
        return pycs

    pycs = compile_all()
    before = tree_map(site)
    p = run_apply("apply", "--target", str(site))
    assert not [c for c in pycs if c.exists()], "stale pyc left after apply"
    assert p.stdout.count("removed stale") == len(pycs)
    compile_all()  # the server ran the patched code
    run_apply("revert", "--target", str(site))
    assert not [c for c in pycs if c.exists()], "stale pyc left after revert"
    want = {k: v for k, v in before.items() if not k.endswith(".pyc")}
    assert_tree(site, want, "pristine (minus the removed pyc)")


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


def test_dry_run_changes_nothing(site, patched_template, tmp_path, patched_map):
    before = stat_map(site)
    pristine = tree_map(site)
    p = run_apply("apply", "--dry-run", "--target", str(site))
    for rel in REPLACED:
        assert f"would patch {rel}" in p.stdout and f"would back up {rel}" in p.stdout
    assert stat_map(site) == before and tree_map(site) == pristine

    site = link_tree(patched_template, tmp_path / "patched")
    before = stat_map(site)
    p = run_apply("revert", "--dry-run", "--target", str(site))
    for rel in REPLACED:
        assert f"would restore {rel}" in p.stdout
    assert stat_map(site) == before
    assert_tree(site, patched_map, "the patched template")

    # also on a crashed (partial) tree
    crashed = link_tree(site, tmp_path / "crashed")
    run_apply("apply", "--target", str(crashed), check=False,
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
    assert "version 0.5.9" in p.stderr and "sglang==0.5.8" in p.stderr and rel in p.stderr
    assert "pip install" in p.stderr
    assert tree_map(site) == before


def test_missing_backup_refuses_revert(patched_template, tmp_path):
    site = link_tree(patched_template, tmp_path / "site")
    (site / STATE / "backup" / REPLACED[0]).unlink()
    before = tree_map(site)
    p = run_apply("revert", "--target", str(site), check=False)
    assert p.returncode == 6 and REPLACED[0] in p.stderr and "force-reinstall" in p.stderr
    assert tree_map(site) == before
    # corrupt instead of missing
    site2 = link_tree(patched_template, tmp_path / "site2")
    rewrite(site2 / STATE / "backup" / REPLACED[0], b"garbage")
    assert run_apply("revert", "--target", str(site2), check=False).returncode == 6


def test_lock_blocks_a_concurrent_run(site, tmp_path):
    key = hashlib.sha256(str(site.resolve()).encode()).hexdigest()[:16]
    lock = tmp_path / f"nsa-fastpath-{key}.lock"
    before = tree_map(site)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        p = run_apply("apply", "--target", str(site), check=False,
                      env={"TMPDIR": str(tmp_path), "NSA_FASTPATH_LOCK_TIMEOUT": "0.3"})
    assert p.returncode == 8 and "lock" in p.stderr, out(p)
    assert tree_map(site) == before
    run_apply("apply", "--target", str(site), env={"TMPDIR": str(tmp_path)})
    assert not lock.exists(), "the lock file is removed on exit"


def test_concurrent_runs_serialize(patched_template, tmp_path, pristine_map, patched_map):
    """Runs racing on one target take turns: each succeeds, the tree ends patched or pristine."""
    site = link_tree(patched_template, tmp_path / "site")
    env = dict(os.environ, PYTHON=sys.executable, TMPDIR=str(tmp_path))
    procs = [subprocess.Popen(["bash", str(ROOT / "scripts" / "apply.sh"), cmd, "--target",
                               str(site)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for cmd in ("revert", "apply", "revert", "apply", "revert", "apply")]
    for p in procs:
        output = p.communicate()[0]
        assert p.returncode == 0, output
    assert tree_map(site) in (pristine_map, patched_map)
    assert not list(tmp_path.glob("nsa-fastpath-*.lock"))


# ------------------------------------------------------------------ fault injection
def count_steps(template: Path, tmp_path: Path, cmd: str, env: dict, end_map: dict) -> int:
    """Mutating steps of a complete, fault-free run (NSA_FASTPATH_TRACE logs each one)."""
    site = link_tree(template, tmp_path / f"{cmd}-trace")
    p = run_apply(cmd, "--target", str(site), env=dict(env, NSA_FASTPATH_TRACE="1"))
    assert_tree(site, end_map, f"the result of {cmd}", out(p))
    remove_tree(site)
    steps = [ln for ln in p.stdout.splitlines() if ln.startswith("[nsa-fastpath] step ")]
    assert steps and steps[-1].startswith(f"[nsa-fastpath] step {len(steps)}: "), p.stdout
    return len(steps)


def sweep(template: Path, tmp_path: Path, cmd: str, mode: str, env: dict,
          start_map: dict, end_map: dict) -> int:
    """Fail `cmd` after step N for N = 1, 2, ... until a run completes without the fault.

    error mode: the run rolls back: exit 5 and the tree equals start_map.
    kill mode:  rerunning `apply` on the crashed tree ends fully patched and, on a second
                copy, rerunning `revert` ends pristine; `status` calls it partial meanwhile
                (or the state it really is in).
    A few workers share the cases; each works on its own tree, which every case leaves
    verified identical (hash and mode of every file, every directory) to the template, so
    the next case starts from exactly what a fresh copy would be. Returns the step count.
    """
    assert tree_map(template) == start_map
    # The trees are hard links to the template: hash only what apply.sh wrote. The template
    # itself is re-hashed in full at the end (no in-place writes).
    known = inode_index(template)
    pristine, patched = (start_map, end_map) if cmd == "apply" else (end_map, start_map)
    # status's file-state part only: PYTHON=true skips the Triton/flags report (tested above)
    status_env = dict(os.environ, **env, PYTHON="true")
    steps = count_steps(template, tmp_path, cmd, env, end_map)

    def case(n: int, site: Path) -> Path:
        """Runs case n on `site` (== start_map); returns a tree == start_map (or end_map
        after the fault-free last case)."""
        fenv = dict(env, NSA_FASTPATH_FAULT_AT=str(n), NSA_FASTPATH_FAULT_MODE=mode)
        p = run_apply(cmd, "--target", str(site), env=fenv, check=False)
        ctx = f"({cmd}, fault after step {n} of {steps}, {mode})\n{out(p)}"
        if n > steps:  # past the last step: nothing happens
            assert p.returncode == 0 and "injected fault" not in out(p), ctx
            assert_tree(site, end_map, "the completed result", ctx, known)
            return site
        if mode == "error":
            assert p.returncode == 5, ctx
            assert "injected fault" in p.stderr and "rolled back" in p.stderr, ctx
            assert_tree(site, start_map, "rolled back", ctx, known)
            return site
        assert p.returncode == -9, ctx
        st = subprocess.run(["bash", str(ROOT / "scripts" / "apply.sh"), "status", "--target",
                             str(site)], capture_output=True, text=True, env=status_env)
        if st.returncode == 0:  # status may only claim a state the tree really is in
            assert_tree(site, pristine if "overall: pristine" in st.stdout else patched,
                        "what status claims", ctx + st.stdout, known)
        else:
            assert st.returncode == 7 and "overall: partial" in st.stdout, ctx + out(st)
        other = link_tree(site, site.parent / f"{site.name}-{n}")
        r = run_apply("apply", "--target", str(site), env=env, check=False)
        assert r.returncode == 0, ctx + out(r)
        assert_tree(site, patched, "fully patched after rerunning apply", ctx + out(r), known)
        r = run_apply("revert", "--target", str(other), env=env, check=False)
        assert r.returncode == 0, ctx + out(r)
        assert_tree(other, pristine, "pristine after rerunning revert", ctx + out(r), known)
        keep, drop = (other, site) if start_map is pristine else (site, other)
        remove_tree(drop)
        return keep

    def worker(w: int, ns: list[int]) -> None:
        site = link_tree(template, tmp_path / f"{cmd}-{mode}-w{w}")
        for n in ns:
            site = case(n, site)
        remove_tree(site)

    workers = min(4, os.cpu_count() or 1)
    ns = list(range(1, steps + 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for f in [pool.submit(worker, w, ns[w::workers]) for w in range(workers)]:
            f.result()  # re-raises a failure
    assert tree_map(template) == start_map, "apply.sh wrote into a file in place"
    return steps


@pytest.mark.parametrize("mode", ["error", "kill"])
def test_apply_fault_sweep(mode, pristine_template, tmp_path, pristine_map, patched_map):
    steps = sweep(pristine_template, tmp_path, "apply", mode, {}, pristine_map, patched_map)
    assert steps >= 2 * len(ROWS)


@pytest.mark.parametrize("mode", ["error", "kill"])
def test_revert_fault_sweep(mode, patched_template, tmp_path, pristine_map, patched_map):
    steps = sweep(patched_template, tmp_path, "revert", mode, {}, patched_map, pristine_map)
    assert steps >= 2 * len(REPLACED)


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


@pytest.mark.parametrize("cmd", ["apply", "revert"])
def test_add_rows_fault_sweep(cmd, pristine_template, tmp_path, ext_env, ext_patched,
                              pristine_map):
    ext_dir, ext_map = ext_patched
    if cmd == "apply":
        sweep(pristine_template, tmp_path, "apply", "kill", ext_env, pristine_map, ext_map)
    else:
        sweep(ext_dir, tmp_path, "revert", "kill", ext_env, ext_map, pristine_map)


def test_other_recorded_manifest(tmp_path, ext_patched, ext_env, pristine_map):
    """An older/newer nsa-fastpath is applied: apply refuses, revert uses the recorded manifest."""
    site = link_tree(ext_patched[0], tmp_path / "site")
    before = tree_map(site)
    p = run_apply("apply", "--target", str(site), check=False)
    assert p.returncode == 4 and "another nsa-fastpath version" in p.stderr
    assert tree_map(site) == before
    # a failing revert cannot re-apply another version's files: exit 6, and rerunning works
    failed = link_tree(site, tmp_path / "failed")
    p = run_apply("revert", "--target", str(failed), check=False,
                  env={"NSA_FASTPATH_FAULT_AT": "3"})
    assert p.returncode == 6 and "partially reverted" in p.stderr, out(p)
    st = run_apply("status", "--target", str(failed), check=False)
    assert st.returncode == 7 and "overall: partial" in st.stdout
    run_apply("revert", "--target", str(failed))
    assert_tree(failed, pristine_map, "pristine")

    p = run_apply("revert", "--target", str(site))
    assert "manifest recorded at apply time" in p.stdout
    assert_tree(site, pristine_map, "pristine")


def test_sglang_reinstalled_over_patched_tree(tmp_path, patched_template, pristine_template,
                                              pristine_map):
    """`pip install --force-reinstall sglang` restores SGLang's files but leaves ours: partial."""
    site = link_tree(patched_template, tmp_path / "site")
    for rel in REPLACED:
        rewrite(site / rel, (pristine_template / rel).read_bytes())
    st = run_apply("status", "--target", str(site), check=False)
    assert st.returncode == 7 and "overall: partial" in st.stdout
    run_apply("revert", "--target", str(site))
    assert_tree(site, pristine_map, "pristine")


# ------------------------------------------------------------------ --git
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


@pytest.fixture
def git_repo(git_template, tmp_path) -> Path:
    return copy_tree(git_template, tmp_path / "sglang")


def pkg_map(repo: Path) -> dict:
    return tree_map(repo / "python" / "sglang")


def test_rollback_method3_apply_sh_revert_git(git_repo, pristine_template):
    pristine = tree_map(pristine_template / "sglang")
    head0 = git(git_repo, "rev-parse", "HEAD").strip()
    p = run_apply("apply", "--git", str(git_repo))
    assert "sglang 0.5.8" in p.stdout
    for _, rel, _, _ in ROWS:
        assert (git_repo / "python" / rel).read_bytes() == (OVERLAY / rel).read_bytes()
    log = git(git_repo, "log", "--format=%(trailers:key=nsa-fastpath,valueonly)", f"{head0}..")
    assert log.split() == [str(i) for i in range(len(PATCHES), 0, -1)]
    assert git(git_repo, "status", "--porcelain") == ""
    st = run_apply("status", "--git", str(git_repo))
    assert "overall: patched" in st.stdout

    head1 = git(git_repo, "rev-parse", "HEAD")
    again = run_apply("apply", "--git", str(git_repo))
    assert "already applied" in again.stdout and git(git_repo, "rev-parse", "HEAD") == head1

    assert run_apply("revert", "--git", str(git_repo), "--dry-run").returncode == 0
    assert git(git_repo, "rev-parse", "HEAD") == head1
    r = run_apply("revert", "--git", str(git_repo))
    assert r.stdout.count("reverted ") == len(PATCHES)
    assert pkg_map(git_repo) == pristine
    assert git(git_repo, "diff", head0, "HEAD") == "" and git(git_repo, "status", "--porcelain") == ""
    # newest first: the first revert commit undoes the last patch
    last_patch = git(git_repo, "log", "-1", "--format=%s", head1.strip()).strip()
    subjects = git(git_repo, "log", "--format=%s", f"{head1.strip()}..").splitlines()
    assert subjects[-1] == f'Revert "{last_patch}"'
    assert "already pristine" in run_apply("revert", "--git", str(git_repo)).stdout
    assert "overall: pristine" in run_apply("status", "--git", str(git_repo)).stdout
    # and it can be applied again after the revert
    run_apply("apply", "--git", str(git_repo))
    run_apply("revert", "--git", str(git_repo))
    assert pkg_map(git_repo) == pristine


def test_rollback_method3_plain_git_revert(git_repo, pristine_template):
    """Operators without apply.sh: `git revert` the commits carrying the trailer, newest first."""
    pristine = tree_map(pristine_template / "sglang")
    run_apply("apply", "--git", str(git_repo))
    commits = git(git_repo, "log", "--format=%H", "--grep=^nsa-fastpath: ").split()
    assert len(commits) == len(PATCHES)
    git(git_repo, "revert", "--no-edit", *commits)
    assert pkg_map(git_repo) == pristine
    assert "overall: pristine" in run_apply("status", "--git", str(git_repo)).stdout


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
    assert p.returncode == 4 and REPLACED[0] in p.stderr and "sglang==0.5.8" in p.stderr
    assert git(git_repo, "rev-parse", "HEAD") == head1 != head0
    assert pkg_map(git_repo) == before and git(git_repo, "status", "--porcelain") == ""
    assert run_apply("status", "--git", str(git_repo), check=False).returncode == 4


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
